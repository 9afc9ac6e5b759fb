"""Supervision: emulator crashes, daemon kill -9 and restart recovery, strays, daemon lock, concurrency."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import GREETING, HELLO, LOCKUP, CLI, chosen_backend, process_progress, wait_console, wait_for, wait_progress, wait_state
from virsim.client import Client, daemon_pid
from virsim.paths import get_paths

pytestmark = pytest.mark.usefixtures("qemu")


@pytest.fixture(params=["qemu", "builtin", "renode"])
def backend(request: pytest.FixtureRequest) -> str:
    """Supervision holds for every backend's emulator process."""
    return chosen_backend(request)


def state_of(client: Client, sid: str) -> str:
    return client.session("show", sid).state


def kill_daemon(client: Client) -> int:
    pid = client.status().pid
    client.close()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: daemon_pid(get_paths()) is None, what="the killed daemon's lock to be released")
    return pid


@pytest.mark.parametrize("backend", ["qemu", "builtin"], indirect=True)  # a lockup ends these two; Renode runs on
def test_emulator_crash_fails_the_session_with_its_stderr(cli: CLI, client: Client, backend: str) -> None:
    sid = cli("session", "create", "-b", "mps2-an385", "-f", str(LOCKUP), "--backend", backend).stdout.strip()
    wait_state(client, sid, "failed")  # the lockup
    shown = cli.json("session", "show", sid)
    # QEMU 7.2 aborts on a lockup; the built-in engine reports it and exits with status 1.
    assert ("SIGABRT" if backend == "qemu" else "status 1") in shown["error"]
    assert "Lockup" in shown["stderr_tail"]
    assert shown["pid"] is None
    human = cli("session", "show", sid).stdout
    assert "failed" in human and "Lockup" in human
    # A failed session keeps its place: start a good program in it.
    prog = client.program_upload(sid, HELLO)
    assert client.program_start(sid, prog.id).state == "running"
    wait_console(client, sid, GREETING)


def test_emulator_killed_from_outside(client: Client, backend: str) -> None:
    info = client.session_create("mps2-an385", HELLO, backend=backend)
    assert info.pid is not None
    os.kill(info.pid, signal.SIGKILL)
    wait_for(lambda: state_of(client, info.id) == "failed")
    assert "SIGKILL" in (client.session("show", info.id).error or "")
    assert client.session("power_on", info.id).state == "running"


def test_daemon_kill9_reattaches_to_running_emulators(cli: CLI, client: Client, backend: str) -> None:
    running = client.session_create("mps2-an385", HELLO, name="runner", backend=backend)
    paused = client.session_create("mps2-an385", HELLO, name="sleeper", backend=backend)
    wait_console(client, running.id, b"tick 1\n")
    client.session("pause", paused.id)
    old_daemon = kill_daemon(client)
    # The firmware keeps printing while no daemon runs; the emulator itself keeps logging it.
    log = get_paths().session_dir(running.id) / "console.log"
    assert running.pid is not None
    wait_progress(lambda: log.read_bytes().count(b"tick ") >= 3, progress=process_progress([running.pid], (log,)),
                  what="ticks logged with no daemon")
    listed = {s["name"]: s for s in cli.json("session", "list")}  # starts a new daemon
    assert cli.json("daemon", "status")["pid"] != old_daemon
    assert listed["runner"]["state"] == "running" and listed["runner"]["pid"] == running.pid
    assert listed["sleeper"]["state"] == "paused" and listed["sleeper"]["pid"] == paused.pid
    c = Client(get_paths()).connect()
    text = c.console_text(running.id)
    text = text[:text.rfind(b"\n") + 1]  # the firmware runs on: its last line may be half written
    ticks = [line for line in text.splitlines() if line.startswith(b"tick ")]
    assert text.startswith(GREETING) and len(ticks) >= 3  # nothing lost while the daemon was down
    assert ticks == [b"tick %d" % n for n in range(1, len(ticks) + 1)]
    # Control works again over the re-attached QMP and console sockets.
    c.console_send(running.id, b"again\n")
    wait_console(c, running.id, b"echo: again\n")
    assert c.session("resume", paused.id).state == "running"
    c.session_delete(running.id)
    assert not psutil.pid_exists(running.pid) or psutil.Process(running.pid).status() == psutil.STATUS_ZOMBIE
    c.close()


def test_emulator_gone_while_daemon_down_is_lost(cli: CLI, client: Client) -> None:
    info = client.session_create("mps2-an385", HELLO)
    kill_daemon(client)
    assert info.pid is not None
    os.kill(info.pid, signal.SIGKILL)
    shown = cli.json("session", "show", info.id)
    assert shown["state"] == "lost" and "not running" in shown["error"]
    assert cli.json("session", "power-on", info.id)["state"] == "running"


def test_stray_emulator_is_stopped_on_restart(home: Path, client: Client, backend: str) -> None:
    client.session_create("mps2-an385", HELLO, backend=backend)
    kill_daemon(client)
    # A daemon that died between spawning an emulator and learning its pid left only the record it
    # wrote before spawning; the emulator carries the record's token in its environment. The next
    # daemon must stop it (and nothing else: test_isolation.test_stray_sweep_stops_only_what_a_daemon_recorded).
    children = get_paths().runtime / "children"
    (children / "0123456789abcdef.json").write_text(json.dumps({"token": "0123456789abcdef", "cmd": ["qemu"]}))
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             env={**os.environ, "VIRSIM_CHILD": "0123456789abcdef"})
    try:
        Client(get_paths()).connect().session_list()
        assert stray.wait(5) is not None
        assert not (children / "0123456789abcdef.json").exists()
    finally:
        stray.kill()


def test_daemon_stop_powers_off_emulators(cli: CLI, client: Client, backend: str) -> None:
    a = client.session_create("mps2-an385", HELLO, backend=backend)
    b = client.session_create("mps2-an385", HELLO, paused=True, backend=backend)
    client.close()
    assert cli.json("daemon", "stop")["stopped"] is True
    for pid in (a.pid, b.pid):
        assert pid is not None
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert cli.json("daemon", "status")["running"] is False
    states = {s["id"]: s["state"] for s in cli.json("session", "list")}
    assert states == {a.id: "stopped", b.id: "stopped"}
    assert cli.json("session", "power-on", a.id)["state"] == "running"


def test_second_daemon_refuses_to_start(home: Path, client: Client) -> None:
    first = client.status().pid
    env = {**os.environ, "VIRSIM_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "virsim.daemon"], env=env, timeout=20, capture_output=True)
    assert proc.returncode == 0
    assert "not starting: another virsim daemon holds" in get_paths().daemon_log.read_text()
    assert client.status().pid == first


def test_concurrent_clis_share_one_daemon(cli: CLI, home: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-m", "virsim", "session", "create", "-b", "mps2-an385",
                               "-f", str(HELLO), "--name", f"par{i}"], env=cli.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    ids = {o[0].strip() for o in outs}
    assert len(ids) == 4
    daemons = [p for p in psutil.process_iter(["cmdline", "environ"])
               if "virsim.daemon" in " ".join(p.info["cmdline"] or [])
               and (p.info.get("environ") or {}).get("VIRSIM_HOME") == str(home)
               and p.status() != psutil.STATUS_ZOMBIE]
    assert len(daemons) == 1
    listed = cli.json("session", "list")
    assert sorted(s["name"] for s in listed) == ["par0", "par1", "par2", "par3"]
    assert all(s["state"] == "running" for s in listed)
