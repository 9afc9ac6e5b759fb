"""The external gdb endpoint through the real daemon, real emulators and real gdb-multiarch: the
printed gdb command, the fixed TCP port and the per-name socket for IDEs, the proxy's guard
against commands that would end the emulator, and the built-in stub's monitor commands."""

from __future__ import annotations

import json
import re
import shlex
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import HELLO, ROOT, CLI, need_tool, session_progress, wait_for, wait_progress
from virsim.client import Client
from virsim.daemon.debugger import GDB
from virsim.paths import get_paths


@pytest.fixture(autouse=True)
def tools() -> None:
    need_tool("qemu-system-arm")
    need_tool("gdb-multiarch")


def run_gdb(argv: list[str], cwd: Path) -> str:
    """A batch gdb to completion (it detaches at the end); its stdout and stderr together."""
    proc = subprocess.run([*argv, "-nx", "-batch"], cwd=cwd, capture_output=True, text=True, timeout=60)
    return proc.stdout + proc.stderr


def test_printed_gdb_command_finds_the_sources(cli: CLI, client: Client, tmp_path: Path) -> None:
    sid = client.session_create("mps2-an385", HELLO, paused=True).id
    ep = cli.json("debug", "gdb", sid)
    # The ELF gdb loads is the session's copy, far from examples/hello; hello.elf's DWARF says
    # comp_dir "." (-ffile-prefix-map), which the command maps to the directory it was uploaded from.
    assert f"-ex 'set substitute-path . {HELLO.parent}'" in ep["command"]
    output = run_gdb([*shlex.split(ep["command"]), "-ex", "list on_tick", "-ex", "detach"], cwd=tmp_path)
    source = (HELLO.parent / "hello.c").read_text().splitlines()
    at = next(i for i, text in enumerate(source, 1) if text.startswith("void on_tick("))
    lines = output.splitlines()
    assert all(f"{n}\t{source[n - 1]}" in lines for n in range(at - 2, at + 4)), output  # hello.c's own lines


class RSP:
    """A raw GDB remote-protocol client in ack mode: what the stub (or the proxy) answers, exactly."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.buf = b""

    def send(self, body: str) -> None:
        data = body.encode()
        self.sock.sendall(b"$%s#%02x" % (data, sum(data) & 0xFF))

    def packet(self) -> str:
        """The next packet from the other side (acked); acks and anything between packets skipped."""
        while True:
            m = re.search(rb"\$([^#]*)#[0-9a-fA-F]{2}", self.buf)
            if m:
                self.buf = self.buf[m.end():]
                self.sock.sendall(b"+")
                return m.group(1).decode()
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the stub closed the connection")
            self.buf += chunk

    def ask(self, body: str) -> str:
        self.send(body)
        return self.packet()

    def monitor(self, command: str) -> tuple[str, str]:
        """(console text of the O packets, final reply) of `monitor COMMAND`."""
        self.send("qRcmd," + command.encode().hex())
        text = ""
        while (reply := self.packet()).startswith("O") and reply != "OK":
            text += bytes.fromhex(reply[1:]).decode()
        return text, reply

    def close(self) -> None:
        self.sock.close()


def test_proxy_keeps_gdb_from_ending_qemu(cli: CLI, client: Client, tmp_path: Path) -> None:
    """QEMU's stub would quit QEMU on `monitor quit`, `monitor q`, vKill and k."""
    # Created halted: QEMU then sends no stop packet of its own when a client connects.
    info = client.session_create("mps2-an385", HELLO, name="quitter", paused=True)
    ep = cli.json("debug", "gdb", info.id)
    rsp = RSP(ep["address"])
    try:
        assert rsp.ask("?").startswith("T")
        for command in ("quit", "q", "  quit now"):
            text, reply = rsp.monitor(command)
            assert reply == "OK" and "virsim session power-off quitter" in text and "not passed on" in text
        text, reply = rsp.monitor("info status")  # other monitor commands still reach QEMU
        assert reply == "OK" and "VM status: paused" in text
        assert rsp.ask("vKill;1") == "E01"
        rsp.send("k")  # no reply expected: the next packet's answer proves QEMU still runs
        assert rsp.ask("?").startswith("T")
    finally:
        rsp.close()
    # A real gdb: `monitor quit` prints the message, `kill` is refused, detach lets the CPU run.
    output = run_gdb([GDB, "-q", str(HELLO), "-ex", f"target remote {ep['address']}", "-ex", "monitor quit",
                      "-ex", "kill", "-ex", "detach"], cwd=tmp_path)
    assert "virsim session power-off quitter" in output and "Can't kill process" in output, output
    assert "detached" in output
    wait_for(lambda: client.session("show", info.id).debugger is None, what="the external debugger to leave")
    after = client.session("show", info.id)
    assert after.state == "running" and after.pid == info.pid
    before = len(client.console_text(info.id))
    wait_progress(lambda: len(client.console_text(info.id)) > before, progress=session_progress(client, info.id),
                  what="QEMU to print more ticks")


def word(hex_le: str) -> int:
    return int.from_bytes(bytes.fromhex(hex_le), "little")


def test_builtin_stub_answers_the_monitor_commands_ides_send(cli: CLI, client: Client, tmp_path: Path) -> None:
    sid = client.session_create("mps2-an385", HELLO, paused=True, backend="builtin").id
    address = cli.json("debug", "gdb", sid)["address"]
    rsp = RSP(address)
    try:
        reset_pc = word(rsp.ask("m4,4")) & ~1  # the reset vector
        elsewhere = "Pf=" + (0x41).to_bytes(4, "little").hex()  # pc (register 15) = on_tick
        assert rsp.ask(elsewhere) == "OK"
        text, reply = rsp.monitor("halt")
        assert (reply, text) == ("OK", "target halted, pc 0x00000040\n")
        for command in ("reset halt", "reset", "reset init"):
            assert rsp.ask(elsewhere) == "OK"
            text, reply = rsp.monitor(command)
            assert reply == "OK" and text.startswith(f"system reset: halted at the reset vector, pc {reset_pc:#010x}")
            assert word(rsp.ask("pf")) & ~1 == reset_pc
        text, reply = rsp.monitor("reset run")
        assert reply == "OK" and "runs when the debugger continues" in text
        clock = client.clock(sid).virtual_ns
        for command in ("go", "resume"):
            text, reply = rsp.monitor(command)
            assert reply == "OK" and text.startswith("not resumed")
        assert rsp.ask("pf") == rsp.ask("pf") and client.clock(sid).virtual_ns == clock  # still halted
        text, reply = rsp.monitor("info")
        assert reply == "OK" and '"instructions"' in text
        text, reply = rsp.monitor("frobnicate")
        assert reply == "OK" and text.startswith("monitor commands: halt, reset")
        rsp.send("s")  # and the CPU steps from the reset vector
        assert rsp.packet().startswith("T05")
        assert word(rsp.ask("pf")) & ~1 != reset_pc
    finally:
        rsp.close()
    # gdb and this stub agree on no-ack mode: the proxy's own answer (to quit) must fit that too.
    output = run_gdb([GDB, "-q", str(HELLO), "-ex", f"target remote {address}", "-ex", "monitor quit",
                      "-ex", "monitor reset halt", "-ex", "maintenance flush register-cache",
                      "-ex", "info symbol $pc", "-ex", "detach"], cwd=tmp_path)
    assert "To stop it: virsim session power-off" in output and "system reset: halted" in output, output
    assert "Reset_Handler in section .text" in output and "detached" in output, output


def cortex_debug_configs() -> dict[str, dict[str, Any]]:
    """The launch.json configurations docs/debugging.md gives, by backend."""
    text = (ROOT / "docs" / "debugging.md").read_text()
    configs = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S) if "cortex-debug" in block]
    return {"builtin" if "built-in" in c["name"] else "qemu": c for c in configs}


def test_documented_cortex_debug_launch_works(cli: CLI, client: Client, backend: str, tmp_path: Path) -> None:
    """What cortex-debug sends with the documented configuration, done by gdb in batch mode."""
    config = cortex_debug_configs()[backend]
    sid = client.session_create("mps2-an385", HELLO, name="fw", backend=backend).id  # running
    by_name = cli.json("debug", "gdb", sid)["by_name"]
    assert Path(by_name).name == Path(config["gdbTarget"]).name == "fw.gdb.sock"
    ex = [f"target extended-remote {by_name}"]
    ex += [*config["overrideLaunchCommands"], "echo @launched\\n", "info symbol $pc"]
    ex += ["tbreak main", "continue", "next"]  # runToEntryPoint, then a step
    ex += ["echo @reset\\n", *config["overrideResetCommands"], "info symbol $pc", "detach"]
    output = run_gdb([GDB, "-q", str(HELLO), *(arg for line in ex for arg in ("-ex", line))], cwd=tmp_path)
    launched, _, reset = output.partition("@reset")
    assert "@launched\nReset_Handler in section .text" in launched, output  # reset, and gdb sees it
    assert re.search(r"Temporary breakpoint 1, main \(\) at hello\.c:\d+", launched), output
    assert reset.startswith("\nReset_Handler in section .text") and "detached" in reset, output
    wait_for(lambda: client.session("show", sid).debugger is None, what="cortex-debug's gdb to leave")
    assert client.session("show", sid).state == "running"


def test_fixed_tcp_port_and_a_clear_error_when_it_is_taken(cli: CLI, client: Client, tmp_path: Path) -> None:
    first = client.session_create("mps2-an385", HELLO, paused=True, backend="builtin").id
    second = client.session_create("mps2-an385", HELLO, paused=True, backend="builtin").id
    with socket.socket() as taken:  # a port some other program listens on
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = cli.json("debug", "gdb", first, "--tcp", "--port", str(port), check=2)
        assert err["code"] == "INVALID_INPUT" and err["details"]["field"] == "port"
        assert f"127.0.0.1:{port}: another program or session listens there" in err["error"]
    # Now free: the fixed port, also asked for again, and refused to a second session.
    ep = cli.json("debug", "gdb", first, "--tcp", "--port", str(port))
    assert ep["tcp"] == ep["address"] == f"127.0.0.1:{port}" and f"target remote 127.0.0.1:{port}" in ep["command"]
    assert cli.json("debug", "gdb", first, "--port", str(port))["tcp"] == f"127.0.0.1:{port}"
    assert "another program or session" in cli.json("debug", "gdb", second, "--tcp", "--port", str(port),
                                                     check=2)["error"]
    err = cli.json("debug", "gdb", first, "--tcp", "--port", str(port + 1 if port < 65535 else port - 1), check=4)
    assert err["code"] == "INVALID_STATE" and f"already listens for gdb on 127.0.0.1:{port}" in err["error"]
    output = run_gdb([GDB, "-q", str(HELLO), "-ex", f"target remote 127.0.0.1:{port}", "-ex", "print tick_count",
                      "-ex", "detach"], cwd=tmp_path)
    assert "$1 = 0" in output and "detached" in output, output


def test_per_name_socket_is_stable_private_and_goes_with_the_emulator(cli: CLI, client: Client,
                                                                       tmp_path: Path) -> None:
    info = client.session_create("mps2-an385", HELLO, name="fw", paused=True, backend="builtin")
    ep = cli.json("debug", "gdb", "fw")
    path = Path(ep["by_name"])
    assert path == get_paths().runtime / "by-name" / "fw.gdb.sock"
    assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert f"by name: {path}" in cli("debug", "gdb", "fw").stdout
    output = run_gdb([GDB, "-q", str(HELLO), "-ex", f"target remote {path}", "-ex", "print tick_count",
                      "-ex", "detach"], cwd=tmp_path)
    assert "$1 = 0" in output and "detached" in output, output
    client.session("power_off", info.id)
    assert not path.exists()
    client.session("power_on", info.id)
    assert cli.json("debug", "gdb", "fw")["by_name"] == str(path)
    client.session("delete", info.id)
    assert not path.exists()
    again = client.session_create("mps2-an385", HELLO, name="fw", paused=True, backend="builtin")
    assert again.id != info.id and cli.json("debug", "gdb", "fw")["by_name"] == str(path)  # the same path
    odd = client.session_create("mps2-an385", HELLO, name="a:b", paused=True, backend="builtin").id
    assert cli.json("debug", "gdb", odd)["by_name"] is None  # gdb would read a:b as host:port
