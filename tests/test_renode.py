"""The Renode backend end to end: the real daemon driving a real Renode (skipped, with the reason,
where Renode is not installed: no package registry has it)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import psutil
import pytest

from conftest import (GREETING, HELLO, HELLO_SYSTICK, CLI, debug_stop, session_progress, wait_console,
                      wait_progress, wait_state)
from virsim.client import Client

pytestmark = pytest.mark.usefixtures("renode")


def renode_pids(client: Client, sid: str) -> list[int]:
    info = client.session("show", sid)
    assert info.pid
    jail = psutil.Process(info.pid)
    return [jail.pid] + [c.pid for c in jail.children(recursive=True)]


def test_hello_prints_what_qemu_and_the_builtin_engine_print(client: Client) -> None:
    consoles = {}
    for backend in ("renode", "builtin"):
        info = client.session_create("mps2-an385", HELLO, backend=backend)
        assert info.backend == "renode" if backend == "renode" else True
        wait_console(client, info.id, b"tick 3\n")
        client.session("pause", info.id)
        consoles[backend] = client.console_text(info.id)
    assert consoles["renode"].startswith(GREETING + b"tick 1\ntick 2\ntick 3\n")
    n = min(len(consoles["renode"]), len(consoles["builtin"]))
    assert consoles["renode"][:n] == consoles["builtin"][:n]


def test_console_input_pause_resume_reset_power(client: Client, cli: CLI) -> None:
    info = client.session_create("mps2-an385", HELLO, backend="renode")
    wait_console(client, info.id, b"tick 1\n")
    cli("console", info.id, "--send", r"ping 42\n")
    wait_console(client, info.id, b"echo: ping 42\n")
    assert cli.json("session", "pause", info.id)["state"] == "paused"
    paused = client.session("show", info.id)
    frozen = client.console_text(info.id)
    assert client.session("show", info.id).virtual_ns == paused.virtual_ns  # the clock holds while paused
    assert cli.json("session", "resume", info.id)["state"] == "running"
    wait_progress(lambda: len(client.console_text(info.id)) > len(frozen), progress=session_progress(client, info.id),
                  what="output after resume")
    client.session("reset", info.id)
    wait_progress(lambda: client.console_text(info.id).count(GREETING) == 2, progress=session_progress(client, info.id),
                  what="a second greeting after reset")
    assert cli.json("session", "power-off", info.id)["state"] == "stopped"
    assert cli.json("session", "power-on", info.id)["state"] == "running"
    wait_progress(lambda: client.console_text(info.id).count(GREETING) == 3, progress=session_progress(client, info.id),
                  what="a third greeting after the power cycle")


def test_renode_is_unreachable_from_the_network(client: Client) -> None:
    info = client.session_create("mps2-an385", HELLO, backend="renode")
    wait_console(client, info.id, b"tick 1\n")
    pids = renode_pids(client, info.id)
    own = Path("/proc/self/ns/net").resolve() if Path("/proc/self/ns/net").exists() else None
    theirs = {Path(f"/proc/{pid}/ns/net").resolve() for pid in pids[1:]}
    assert own is not None and own not in theirs, "Renode shares this host's network namespace"
    # Stock Renode listens on its monitor, terminal and GDB ports on 0.0.0.0: none may be here.
    listening = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True, check=True).stdout
    for line in listening.splitlines()[1:]:
        assert not any(f"pid={pid}," in line for pid in pids), f"a Renode session listens on the host: {line}"
        local = line.split()[3] if len(line.split()) > 3 else ""
        for port in (1234, 3333, 3456):
            assert not local.endswith(f":{port}"), f"port {port} is open on the host: {line}"


def test_debugging_through_renodes_gdb_server(client: Client, cli: CLI) -> None:
    info = client.session_create("mps2-an385", HELLO, backend="renode")
    wait_console(client, info.id, b"tick 1\n")
    cli.json("debug", "break", info.id, "on_tick")
    stop = debug_stop(client, info.id).stop
    assert stop is not None and stop.reason == "breakpoint" and stop.function == "on_tick"
    regs = {r["name"]: r["value"] for r in cli.json("debug", "regs", info.id)["registers"]}
    assert regs["pc"] == stop.pc and regs["sp"] >> 24 == 0x20
    n = int(cli.json("debug", "eval", info.id, "n")["value"])
    stop2 = debug_stop(client, info.id).stop
    assert stop2 is not None and stop2.function == "on_tick"
    assert int(cli.json("debug", "eval", info.id, "n")["value"]) == n + 1
    mem = cli.json("debug", "mem", info.id, "tick_count")
    assert mem["address"] == 0x20000054 and int.from_bytes(bytes.fromhex(mem["data"]), "little") == n + 1
    cli("debug", "mem-write", info.id, "tick_count", "1000", "--width", "4")
    client.debug("delete", info.id, all=True)
    client.debug("continue", info.id)
    wait_console(client, info.id, b"tick 1001\n")


def test_snapshot_restore_rewinds_the_machine(client: Client, cli: CLI) -> None:
    info = client.session_create("mps2-an385", HELLO, backend="renode")
    wait_console(client, info.id, b"tick 2\n")
    client.session("pause", info.id)
    ticks = re.findall(rb"tick (\d+)\n", client.console_text(info.id))
    last = int(ticks[-1])
    snap = cli.json("snapshot", "create", info.id, "--name", "here")
    assert snap["backend"] == "renode" and snap["size"] > 0
    client.session("resume", info.id)
    wait_console(client, info.id, b"tick %d\n" % (last + 2))
    client.session("pause", info.id)
    cli.json("snapshot", "restore", info.id, "here")
    assert client.session("show", info.id).instructions == snap["instructions"]
    client.session("resume", info.id)
    after = client.console_text(info.id).split(b"[virsim: restored snapshot here")[1]
    wait_progress(lambda: b"tick %d\n" % (last + 1) in client.console_text(info.id).split(b"restored snapshot here")[1],
                  progress=session_progress(client, info.id), what="the tick after the snapshot, again")
    assert after.count(b"tick") <= 1


def test_virsim_run_with_junit_and_virtual_time_timeouts(cli: CLI, tmp_path: Path) -> None:
    junit = tmp_path / "report.xml"
    proc = cli("run", str(HELLO), "--backend", "renode", "--expect-text", "tick 2", "--junit", str(junit),
               "--timeout", "20s")
    assert "PASS" in proc.stdout and "tick 2" in proc.stdout
    report = junit.read_text()
    assert 'failures="0"' in report and 'errors="0"' in report and "tick 2" in report
    # A virtual-time deadline stops Renode's CPU there exactly, however slow the host is.
    late = cli("run", str(HELLO), "--backend", "renode", "--expect-text", "tick 99", "--timeout", "20ms", check=42)
    assert "0.020s virtual" in late.stdout and "Hello from virsim on mps2-an385" in late.stdout


def test_function_trace_calls_what_the_builtin_engine_calls(cli: CLI, client: Client, tmp_path: Path) -> None:
    """Renode's trace (virsim's extension on the block-finished hook) sees the same calls and returns,
    in the same order, as the built-in engine's from the first instruction."""
    calls = {}
    for backend in ("builtin", "renode"):
        sid = cli.json("session", "create", "-b", "mps2-an385", "-f", str(HELLO), "--backend", backend,
                       "--paused")["id"]
        cli.json("trace", "start", sid, "--level", "function", "--limit", "150")
        client.session("resume", sid)
        wait_progress(lambda: cli.json("trace", "show", sid)["truncated"], progress=session_progress(client, sid),
                      what="150 trace events")
        out = tmp_path / f"{backend}.txt"
        cli.json("trace", "export", sid, "--format", "text", "--out", str(out))
        calls[backend] = [ln.split()[1:3] for ln in out.read_text().splitlines() if not ln.startswith("#")]
        cli("session", "delete", sid)
    assert len(calls["renode"]) >= 150 and ["enter", "uart_getc"] in calls["renode"]
    assert calls["renode"] == calls["builtin"]


def test_coverage_counts_on_across_snapshot_and_restore(cli: CLI, client: Client) -> None:
    """Coverage's hook is taken off around Renode's Save and put on the CPU a Load makes."""
    sid = cli.json("session", "create", "-b", "mps2-an385", "-f", str(HELLO_SYSTICK), "--backend", "renode",
                   "--coverage")["id"]

    def on_tick_calls() -> int:
        return int(next(r["calls"] for r in cli.json("coverage", "report", sid)["rows"] if r["function"] == "on_tick"))

    wait_console(client, sid, b"tick 2\n")
    cli.json("snapshot", "create", sid, "--name", "two")
    saved = on_tick_calls()
    wait_progress(lambda: on_tick_calls() >= saved + 2, progress=session_progress(client, sid),
                  what="on_tick counted after the snapshot")
    cli.json("snapshot", "restore", sid, "two")
    restored = on_tick_calls()
    wait_progress(lambda: on_tick_calls() >= restored + 2, progress=session_progress(client, sid),
                  what="on_tick counted after the restore")


STM32F4 = HELLO.parents[1] / "stm32f4" / "hello.elf"


def test_a_stock_renode_board_runs_its_own_example(cli: CLI, client: Client) -> None:
    """STM32F4-Discovery on Renode's own stock platform — loaded without the SVD downloads its init
    asks for (Renode runs offline) — and the same firmware on QEMU's netduinoplus2: the same lines."""
    consoles = {}
    for backend in ("renode", "qemu"):
        sid = cli.json("session", "create", "-b", "stm32f4-discovery", "-f", str(STM32F4), "--backend", backend)["id"]
        wait_console(client, sid, b"tick 2\n")
        cli("console", sid, "--send", r"ping 7\r")
        wait_console(client, sid, b"echo: ping 7\n")
        consoles[backend] = [ln for ln in client.console_text(sid).splitlines() if not ln.startswith(b"tick ")]
        if backend == "renode":
            folder = Path(cli.json("session", "show", sid)["console_log"]).parent
            derived = (folder / "renode-platform.repl").read_text()
            assert 'using "' in derived and "stm32f4_discovery-kit.repl" in derived and "ApplySVD" not in derived
            assert "Failed to download" not in (folder / "renode.log").read_text()
    assert consoles["renode"] == consoles["qemu"] == [b"Hello from virsim on stm32f4-discovery", b"echo: ping 7"]
    shown = cli.json("board", "show", "stm32f4-discovery")["renode"]["cpu0"]
    assert shown["models"]["usart2"] == "usart2 (UART.STM32_UART)"
    assert any("ApplySVD @https://" in line for line in shown["dropped_downloads"])


def test_virsim_run_on_the_stock_board_counts_renodes_virtual_time(cli: CLI) -> None:
    # One tick a second of the board's 72 MHz clock (the SysTick Renode's STM32F4 runs at).
    ok = cli("run", str(STM32F4), "-b", "stm32f4-discovery", "--expect-text", "tick 2", "--timeout", "2.5s")
    assert "PASS" in ok.stdout
    late = cli("run", str(STM32F4), "-b", "stm32f4-discovery", "--expect-text", "tick 3", "--timeout", "2.5s",
               check=42)
    assert "2.500s virtual" in late.stdout and "tick 2" in late.stdout
