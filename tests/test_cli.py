"""CLI-wide behaviour: --json everywhere, doctor, daemon commands, backend choice, missing emulators."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer

from conftest import HELLO, ROOT, CLI, wait_console
from virsim.cli.app import app
from virsim.client import Client
from virsim.protocol import PROTOCOL_VERSION


def all_commands() -> list[tuple[str, click.Command]]:
    def walk(cmd: click.Command, prefix: str) -> list[tuple[str, click.Command]]:
        if hasattr(cmd, "commands"):  # a group (typer may ship its own click classes)
            return [c for name, sub in sorted(cmd.commands.items()) for c in walk(sub, f"{prefix} {name}")]
        return [(prefix, cmd)]

    return walk(typer.main.get_command(app), "virsim")


@pytest.mark.parametrize("name,command", all_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_command_accepts_json(name: str, command: click.Command) -> None:
    assert any("--json" in p.opts for p in command.params), f"{name} has no --json option"


def test_version_and_help(cli: CLI) -> None:
    assert cli("--version").stdout.startswith("virsim 0.")
    assert "Example:" in cli("session", "create", "--help").stdout


def test_doctor_reports_tools_store_and_daemon(cli: CLI, client: Client) -> None:
    report = cli.json("doctor")
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is True
    assert checks["qemu-system-arm"]["ok"] and checks["qemu-system-arm"]["version"].startswith(("7.", "8.", "9."))
    from virsim.daemon.store import MIGRATIONS

    assert checks["store"]["ok"] and checks["store"]["version"] == MIGRATIONS[-1][0]
    assert checks["runtime dir"]["version"] == "0o700"
    assert "round trip" in checks["daemon"]["note"]


def test_doctor_names_the_install_command_for_missing_qemu(cli: CLI, tmp_path: Path) -> None:
    env = {**cli.env, "PATH": str(tmp_path)}  # nothing on PATH: no QEMU, no gdb, no toolchain
    proc = subprocess.run([sys.executable, "-m", "virsim", "doctor", "--json"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 6
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["qemu-system-arm"]["ok"] is False
    assert checks["qemu-system-arm"]["install"] == "sudo apt-get install -y qemu-system-arm"
    assert checks["gdb-multiarch"]["install"] == "sudo apt-get install -y gdb-multiarch"
    human = subprocess.run([sys.executable, "-m", "virsim", "doctor"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert "to fix qemu-system-arm: sudo apt-get install -y qemu-system-arm" in human.stdout


def test_missing_emulator_is_a_clear_error(cli: CLI, tmp_path: Path) -> None:
    env = {**cli.env, "PATH": str(tmp_path)}  # the daemon this starts inherits the empty PATH
    proc = subprocess.run([sys.executable, "-m", "virsim", "session", "create", "-b", "mps2-an385", "-f",
                           str(HELLO), "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 6
    err = json.loads(proc.stdout)
    assert err["code"] == "EMULATOR_NOT_INSTALLED"
    assert err["details"] == {"binary": "qemu-system-arm", "install": "sudo apt-get install -y qemu-system-arm"}


@pytest.mark.usefixtures("qemu")
def test_backend_override(cli: CLI, client: Client) -> None:
    info = cli.json("session", "create", "-b", "mps2-an385", "-f", str(HELLO), "--backend", "qemu")
    assert info["backend"] == "qemu"
    wait_console(client, info["id"], b"tick 1\n")
    built = cli.json("session", "create", "-b", "mps2-an385", "-f", str(HELLO), "--backend", "builtin")
    assert built["backend"] == "builtin" and built["deterministic"]  # the engine is always deterministic
    wait_console(client, built["id"], b"tick 1\n")
    virt = ROOT / "examples" / "virt-a15" / "hello.elf"
    err = cli.json("session", "create", "-b", "virt-a15", "-f", str(virt), "--backend", "builtin", check=5)
    assert err["code"] == "NOT_SUPPORTED" and "cortex-a15" in err["error"]
    err = cli.json("session", "create", "-b", "mps2-an385", "-f", str(HELLO), "--backend", "skyeye", check=5)
    assert "SkyEye" in err["error"]
    err = cli.json("session", "create", "-b", "mps2-an385", "-f", str(HELLO), "--backend", "nosuch", check=5)
    assert "unknown backend" in err["error"]
    assert len(cli.json("session", "list")) == 2


def test_daemon_commands(cli: CLI) -> None:
    assert cli.json("daemon", "status") == {"running": False, "control_socket": cli.json("daemon", "status")[
        "control_socket"]}
    started = cli.json("daemon", "start")
    assert started["running"] is True and started["protocol"] == PROTOCOL_VERSION
    assert cli.json("daemon", "start")["pid"] == started["pid"]  # idempotent
    logs = cli.json("daemon", "logs", "-n", "5")
    assert any("listening on" in line for line in logs["lines"])
    schema = cli.json("daemon", "schema")
    assert "session.create" in schema["requests"] and schema["protocol"] == PROTOCOL_VERSION
    assert cli.json("daemon", "stop") == {"running": False, "stopped": True, "pid": started["pid"]}
    assert cli.json("daemon", "stop") == {"running": False, "stopped": False}


@pytest.mark.usefixtures("qemu")
def test_demo_runs_and_cleans_up(cli: CLI) -> None:
    result = cli.json("demo")
    assert result["console"].startswith("Hello from virsim on mps2-an385\ntick 1\ntick 2\ntick 3")
    assert cli.json("session", "list", "--all") == []


def test_runtime_dir_is_private(cli: CLI, client: Client) -> None:
    runtime = client.paths.runtime
    assert os.stat(runtime).st_mode & 0o777 == 0o700
    assert os.stat(client.paths.control_socket).st_mode & 0o777 == 0o600


def test_long_commands_say_what_they_do_on_a_terminal(cli, tmp_path) -> None:  # noqa: ANN001
    """On a terminal, session create shows what it waits for (QEMU's start, the plugin builds) and
    virsim run its start-up; in a pipe (CI logs, scripts) neither says anything extra."""
    import os
    import pty
    import select
    import subprocess
    import sys

    from conftest import HELLO, ROOT

    def on_a_terminal(*args: str) -> str:
        master, slave = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "virsim", *args], env=cli.env, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
        os.close(slave)
        seen = b""
        while True:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        proc.wait(timeout=120)
        os.close(master)
        return seen.decode(errors="replace")

    assert "starting the emulator for mps2-an385" in on_a_terminal(
        "session", "create", "--board", "mps2-an385", "--firmware", str(HELLO), "--backend", "builtin")
    assert "starting the run's daemon" in on_a_terminal("run", str(HELLO), "-e", "Hello", "--backend", "builtin")
    piped = cli("session", "create", "--board", "mps2-an385", "--firmware", str(HELLO), "--backend", "builtin")
    assert "starting the emulator" not in piped.stderr


def test_a_missing_firmware_is_reported_before_any_daemon_starts(cli, home) -> None:  # noqa: ANN001
    from virsim.client import daemon_pid
    from virsim.paths import get_paths

    proc = cli("session", "create", "--board", "mps2-an385", "--firmware", "nope.elf", check=2)
    assert proc.stderr.count("nope.elf does not exist") == 1
    run = cli("run", "nope.elf", "-e", "x", check=2)
    assert (run.stdout + run.stderr).count("does not exist") == 1
    assert daemon_pid(get_paths()) is None
