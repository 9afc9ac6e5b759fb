"""Debugging through the real daemon, real QEMU and real gdb-multiarch."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from conftest import (HELLO, chosen_backend, ROOT, STALL, CLI, cli_debug_stop, debug_stop, need_tool, session_progress, wait_console,
                      wait_for, wait_progress, wait_state)
from virsim.client import Client
from virsim.errors import VirsimError
from virsim.protocol import Event


@pytest.fixture(params=["qemu", "builtin", "renode"])
def backend(request: pytest.FixtureRequest) -> str:
    """The debug service on every backend with a gdb endpoint."""
    return chosen_backend(request)

FAULT = ROOT / "examples" / "hello" / "fault.elf"


@pytest.fixture(autouse=True)
def tools() -> None:
    need_tool("qemu-system-arm")
    need_tool("gdb-multiarch")


def paused_hello(client: Client, elf: Path = HELLO, backend: str = "qemu") -> str:
    return client.session_create("mps2-an385", elf, paused=True, backend=backend).id


def code_of(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    assert isinstance(excinfo.value, VirsimError), excinfo.value
    return excinfo.value.code


def test_break_continue_n_times_advances_the_counter_exactly(cli: CLI, client: Client, backend: str) -> None:
    sid = paused_hello(client, backend=backend)
    bp = cli.json("debug", "break", sid, "on_tick")
    assert bp["resolved"] == "on_tick at hello.c:24" and bp["address"] == 0x40
    first = cli_debug_stop(cli, client, sid, "continue")
    assert first["stop"]["reason"] == "breakpoint" and first["stop"]["function"] == "on_tick"
    start = int(cli.json("debug", "eval", sid, "tick_count")["value"])
    for _ in range(5):
        assert cli_debug_stop(cli, client, sid, "continue")["stop"]["breakpoint"] == bp["id"]
    assert int(cli.json("debug", "eval", sid, "tick_count")["value"]) == start + 5
    assert int(cli.json("debug", "eval", sid, "n")["value"]) == start + 5  # the argument, a local
    assert cli.json("debug", "list", sid)["breakpoints"][0]["hits"] == 6
    # (rendered as people see it, so one wait: the firmware's next tick, with a bound far beyond it)
    human = cli("debug", "continue", sid, "--wait", "--timeout", f"{STALL:g}s", timeout=STALL + 60).stdout
    assert human.startswith(f"stopped: breakpoint {bp['id']} at on_tick (hello.c:24)")
    assert client.session("show", sid).state == "paused"


def test_a_breakpoint_stop_keeps_the_virtual_clock_exact(client: Client, backend: str) -> None:
    """Stopped at a breakpoint, the virtual clock is the time the instructions took (hello never
    sleeps, so nothing may skip ahead), and it goes on from there: the same as a run without
    stops. Regression: QEMU's main loop warped the clock by the next timer's deadline (160 s)
    between the vCPU's stop and the VM's."""
    sid = client.session_create("mps2-an385", HELLO, paused=True, backend=backend, deterministic=True).id
    client.debug("break", sid, location="on_tick")
    for _ in range(3):
        debug_stop(client, sid, "continue")
        info = client.session("show", sid)
        assert info.instructions and info.clock
        assert info.virtual_ns == round(info.instructions * info.clock["instruction_ns"]), info


def test_condition_ignore_count_and_temporary(client: Client, backend: str) -> None:
    sid = paused_hello(client, backend=backend)
    client.debug("break", sid, location="on_tick", condition="n > 3")
    stop = debug_stop(client, sid).stop
    assert stop is not None and stop.reason == "breakpoint"
    assert client.debug("eval", sid, expression="n").value == "4"
    client.debug("delete", sid, all=True)
    assert client.debug("list", sid).breakpoints == []
    client.debug("break", sid, location="on_tick", ignore_count=2, temporary=True)
    stop = debug_stop(client, sid).stop
    assert stop.reason == "breakpoint" and client.debug("eval", sid, expression="n").value == "7"
    assert client.debug("list", sid).breakpoints == []  # temporary: gone after its hit
    reply = client.debug("continue", sid, wait=True, timeout=0.5)
    assert reply.timed_out and reply.state == "running"


def test_continue_wait_timeout_exits_42(cli: CLI, client: Client, backend: str) -> None:
    sid = paused_hello(client, backend=backend)
    proc = cli("debug", "continue", sid, "--wait", "--timeout", "300ms", check=42)
    assert "still running" in proc.stderr


def test_watchpoint_fires_on_write(cli: CLI, client: Client, backend: str) -> None:
    sid = paused_hello(client, backend=backend)
    w = cli.json("debug", "watch", sid, "tick_count", "--access", "write")
    assert w["kind"] == "watchpoint" and w["address"] == 0x20000054 and w["size"] == 4
    stop = cli_debug_stop(cli, client, sid, "continue")["stop"]
    assert stop["reason"] == "watchpoint" and stop["function"] == "main"
    assert (stop["watch"]["old"], stop["watch"]["new"]) == ("0", "1")
    stop = cli_debug_stop(cli, client, sid, "continue")["stop"]
    assert (stop["watch"]["old"], stop["watch"]["new"]) == ("1", "2")
    by_address = client.debug("watch", sid, target="0x20000054", size=4, access="read")
    assert by_address.location == "*(unsigned int *)0x20000054"


def test_step_into_over_and_finish(client: Client, backend: str) -> None:
    sid = paused_hello(client, backend=backend)
    client.debug("break", sid, location="on_tick")
    debug_stop(client, sid)
    into = client.debug("step", sid, kind="step", count=2).stop
    assert into.function == "uart_puts" or into.function == "uart_putc"  # stepped into the callee
    out = client.debug("step", sid, kind="finish").stop
    assert out.reason == "finish"
    debug_stop(client, sid)
    # next over `uart_puts("tick ")` and `uart_putu(n)`: still in on_tick, two lines further.
    # (The last line is a tail call to uart_putc at -Os, where gdb's next lands in the callee.)
    over = client.debug("step", sid, kind="next", count=2).stop
    assert over.function == "on_tick" and over.line is not None and over.line > 25
    insn = client.debug("step", sid, kind="stepi").stop
    assert insn.pc != over.pc


def test_register_write_changes_behaviour(client: Client, backend: str) -> None:
    sid = paused_hello(client, backend=backend)
    client.debug("break", sid, location="on_tick")
    debug_stop(client, sid)
    assert client.debug("reg_set", sid, name="r0", value=4242).value == 4242  # n, the tick number to print
    client.debug("delete", sid, all=True)
    client.debug("continue", sid)
    wait_console(client, sid, b"tick 4242\n")


def test_memory_write_changes_console_output(cli: CLI, client: Client, backend: str) -> None:
    sid = paused_hello(client, backend=backend)
    client.debug("break", sid, location="on_tick")
    debug_stop(client, sid)
    mem = cli.json("debug", "mem", sid, "tick_count")
    assert mem["address"] == 0x20000054 and mem["size"] == 4 and mem["data"] == "01000000"
    cli("debug", "mem-write", sid, "tick_count", "1000", "--width", "4")
    assert cli.json("debug", "mem", sid, "0x20000054", "4")["data"] == (1000).to_bytes(4, "little").hex()
    client.debug("delete", sid, all=True)
    client.debug("continue", sid)
    wait_console(client, sid, b"tick 1001\n")


def test_registers_are_the_cortex_m_set(cli: CLI, client: Client, backend: str) -> None:
    sid = paused_hello(client, backend=backend)
    regs = cli.json("debug", "regs", sid)
    names = [r["name"] for r in regs["registers"]]
    assert names == ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "sp", "lr",
                     "pc", "xpsr"]
    values = {r["name"]: r["value"] for r in regs["registers"]}
    assert values["sp"] == 0x20400000 and values["xpsr"] & (1 << 24)  # reset state: initial SP, Thumb bit
    system = cli.json("debug", "regs", sid, "--scope", "system")
    sysvals = {r["name"]: r["value"] for r in system["registers"]}
    assert sysvals["VTOR"] == 0 and "CFSR" in sysvals and "SYST_CSR" in sysvals
    everything = {r["name"] for r in cli.json("debug", "regs", sid, "--scope", "all")["registers"]}
    assert {"r0", "pc", "xpsr", "CFSR"} <= everything
    assert "f0" not in everything  # not the legacy FPA layout
    table = cli("debug", "regs", sid).stdout
    assert "xpsr" in table and "0x20400000" in table


def test_memory_formats_and_disassembly(cli: CLI, client: Client, tmp_path: Path, backend: str) -> None:
    sid = paused_hello(client, backend=backend)
    words = cli("debug", "mem", sid, "0x0", "16", "--format", "u32").stdout
    assert words.startswith("00000000  0x20400000 ")  # the vector table: initial SP first
    dump = cli("debug", "mem", sid, "0x0", "16").stdout
    assert dump.startswith("00000000  00 00 40 20")
    out = tmp_path / "vectors.bin"
    cli("debug", "mem", sid, "0x0", "64", "--out", str(out))
    assert out.read_bytes() == bytes.fromhex(cli.json("debug", "mem", sid, "0x0", "64")["data"])
    assert out.read_bytes()[:4] == (0x20400000).to_bytes(4, "little")
    dis = cli.json("debug", "disasm", sid, "--at", "on_tick", "--count", "3")
    assert [i["address"] for i in dis["instructions"]][0] == 0x40
    assert dis["instructions"][0]["function"] == "on_tick" and "push" in dis["instructions"][0]["text"]


def test_bad_debug_input_is_typed(cli: CLI, client: Client, backend: str) -> None:
    sid = paused_hello(client, backend=backend)
    err = cli.json("debug", "break", sid, "no_such_function", check=3)
    assert err["code"] == "NOT_FOUND" and "no_such_function" in err["error"]
    err = cli.json("debug", "mem", sid, "0x90000000", "4", check=2)
    assert "outside every memory region" in err["error"]
    err = cli.json("debug", "watch", sid, "0x20000055", "--size", "4", check=2)
    assert "not aligned" in err["error"]
    err = cli.json("debug", "break", sid, "*0x90000000", check=2)
    assert "outside every memory region" in err["error"]
    err = cli.json("debug", "eval", sid, "no_such_var + 1", check=3)
    assert err["code"] == "NOT_FOUND"
    err = cli.json("debug", "reg-set", sid, "r99", "1", check=3)
    assert err["details"]["kind"] == "register"
    client.session("resume", sid)
    err = cli.json("debug", "regs", sid, check=4)
    assert err["code"] == "INVALID_STATE" and "--peek" in err["error"]
    peeked = cli.json("debug", "regs", sid, "--peek")
    assert len(peeked["registers"]) == 17
    assert client.session("show", sid).state == "running"  # peek resumed it
    client.session("power_off", sid)
    err = cli.json("debug", "regs", sid, check=4)
    assert err["details"]["current"] == "stopped"


@pytest.mark.parametrize("backend", ["qemu", "builtin"], indirect=True)  # the backends with Capability.FAULTS
def test_fault_stops_with_decoded_reason(cli: CLI, client: Client, backend: str) -> None:
    sid = paused_hello(client, FAULT, backend=backend)
    stop = cli_debug_stop(cli, client, sid, "continue")["stop"]
    assert stop["reason"] == "fault"
    fault = stop["fault"]
    assert fault["handler"] == "HardFault"
    assert [b["bit"] for b in fault["bits"]] == ["DIVBYZERO", "FORCED"]
    assert fault["fault_location"] == "divide (fault.c:16)"
    human = cli("debug", "where", sid).stdout
    assert "FAULT HardFault: DIVBYZERO" in human and "Default_Handler" in human
    assert b"about to divide by zero\n" in client.console_text(sid)


def test_breakpoints_survive_reset_power_cycle_and_daemon_restart(client: Client, home: Path, backend: str) -> None:
    sid = paused_hello(client, backend=backend)
    bp = client.debug("break", sid, location="on_tick")
    debug_stop(client, sid)
    debug_stop(client, sid)
    assert client.debug("eval", sid, expression="n").value == "2"
    client.session("reset", sid)  # CPU from reset; gdb keeps its breakpoints in QEMU
    stop = debug_stop(client, sid).stop
    assert stop.breakpoint == bp.id and client.debug("eval", sid, expression="n").value == "1"
    client.session("power_off", sid)
    assert client.session("power_on", sid).state == "running"
    # Re-applied before the first instruction: the very first tick stops.
    wait_state(client, sid, "paused")  # the re-applied breakpoint hit
    assert client.debug("eval", sid, expression="n").value == "1"
    text = client.console_text(sid)  # three boots (first, reset, power cycle); halted before the first tick
    assert text.count(b"Hello from virsim") == 3 and text.endswith(b"mps2-an385\n")
    import os
    import signal

    pid = client.status().pid
    client.close()
    os.kill(pid, signal.SIGKILL)
    c = Client(client.paths).connect()
    assert [b.id for b in c.debug("list", sid).breakpoints] == [bp.id]
    stop = debug_stop(c, sid).stop
    assert stop.breakpoint == bp.id
    c.close()


def test_stop_events_reach_the_live_stream(client: Client, backend: str) -> None:
    sid = paused_hello(client, backend=backend)
    client.debug("break", sid, location="on_tick")
    with client.subscribe(sid) as sub:
        time.sleep(0.2)  # let the subscription reach the daemon
        client.debug("continue", sid)
        stops = []

        def stopped() -> list[Event]:
            got = sub.recv(0.5)
            if got and got[0].type == "stop":
                stops.append(got[0])
            return stops
        wait_progress(stopped, progress=session_progress(client, sid), what="a stop event")
    assert stops and stops[0].stop is not None and stops[0].stop.function == "on_tick"


def test_where_peek_on_a_running_target_says_running(cli: CLI, client: Client, backend: str) -> None:
    sid = paused_hello(client, backend=backend)
    client.debug("break", sid, location="on_tick")
    assert debug_stop(client, sid).stop.reason == "breakpoint"
    client.debug("delete", sid, all=True)
    client.debug("continue", sid)  # runs on: the breakpoint stop is history now
    peek = cli.json("debug", "where", sid, "--peek")
    assert peek["reason"] == "running" and peek["breakpoint"] is None
    assert peek["pc"] is not None and peek["backtrace"][0]["pc"] == peek["pc"]
    assert cli("debug", "where", sid, "--peek").stdout.startswith("running; peeked at ")
    assert client.session("show", sid).state == "running"
    client.session("pause", sid)
    stopped = cli("debug", "where", sid).stdout
    assert stopped.startswith("stopped: interrupted at ")


def test_breakpoints_are_numbered_per_session(cli: CLI, client: Client, backend: str) -> None:
    a = paused_hello(client, backend=backend)
    b = paused_hello(client, backend=backend)
    assert cli.json("debug", "break", a, "on_tick")["id"] == 1
    assert cli("debug", "break", b, "on_tick").stdout.startswith("breakpoint 1 at on_tick")
    assert client.debug("watch", b, target="tick_count").id == 2
    # main writes tick_count, then calls on_tick: the watchpoint (2) stops first, then breakpoint 1.
    assert cli_debug_stop(cli, client, b, "continue")["stop"]["breakpoint"] == 2
    stop = cli_debug_stop(cli, client, b, "continue")["stop"]
    assert (stop["reason"], stop["breakpoint"]) == ("breakpoint", 1)
    assert [(x["id"], x["hits"]) for x in cli.json("debug", "list", b)["breakpoints"]] == [(1, 1), (2, 1)]
    assert cli.json("debug", "delete", b, "1")["deleted"] == [1]
    assert cli.json("debug", "delete", b, "1", check=3)["code"] == "NOT_FOUND"
    assert [x["id"] for x in cli.json("debug", "list", a)["breakpoints"]] == [1]  # a's 1 is its own
    assert debug_stop(client, a).stop.breakpoint == 1
    assert client.debug("break", b, location="main").id == 3  # never given out twice in a session


def test_breakpoint_numbers_migration_keeps_the_ids_rows_had(tmp_path: Path) -> None:
    """Rows from before per-session numbers keep their id as their number; new ones count on."""
    import sqlite_utils

    from virsim.daemon.store import MIGRATIONS, Store

    path = tmp_path / "virsim.db"
    db = sqlite_utils.Database(path)
    db["migrations"].create({"name": str, "applied_at": float}, pk="name")
    for name, fn in [m for m in MIGRATIONS if m[0] < "008"]:  # the store as it was before 008
        fn(db)
        db["migrations"].insert({"name": name, "applied_at": 0.0})
    for sid in ("aaaa", "bbbb", "cccc"):
        db["sessions"].insert({"id": sid, "name": sid, "board": "mps2-an385", "backend": "qemu", "state": "stopped"})
    for bp_id, sid in ((5, "aaaa"), (7, "bbbb"), (9, "aaaa")):
        db["breakpoints"].insert({"id": bp_id, "session": sid, "kind": "breakpoint", "location": "main", "hits": 0})
    db.conn.close()
    store = Store(path)
    assert [b["number"] for b in store.breakpoints("aaaa")] == [5, 9]
    assert store.get_breakpoint("bbbb", 7)["location"] == "main"
    row = {"kind": "breakpoint", "location": "on_tick", "condition": None, "temporary": 0, "ignore_count": 0,
           "access": None, "size": None, "address": None}
    assert store.add_breakpoint({**row, "session": "aaaa"})["number"] == 10
    assert store.add_breakpoint({**row, "session": "bbbb"})["number"] == 8
    assert store.add_breakpoint({**row, "session": "cccc"})["number"] == 1


def test_external_gdb_attach_and_detach(cli: CLI, client: Client, backend: str) -> None:
    info = client.session_create("mps2-an385", HELLO, backend=backend)
    sid = info.id
    client.debug("break", sid, location="on_tick")
    debug_stop(client, sid)
    ep = cli.json("debug", "gdb", sid)
    assert ep["address"].endswith("/gdb.sock") and ep["command"].startswith("gdb-multiarch -q ")
    assert f"target remote {ep['address']}" in ep["command"]
    gdb = subprocess.Popen(
        ["gdb-multiarch", "-q", "-batch", "-nx", str(HELLO), "-ex", f"target remote {ep['address']}",
         "-ex", "print tick_count", "-ex", "python import sys; sys.stdin.readline()", "-ex", "detach"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: client.session("show", sid).debugger == "external", what="the external attach")
        err = cli.json("debug", "regs", sid, check=4)
        assert err["code"] == "DEBUGGER_BUSY" and "external debugger" in err["error"]
        output, _ = gdb.communicate("detach now\n", timeout=60)  # gdb held on until this line
    finally:
        gdb.kill()
    assert "$1 = " in output and "detached" in output
    # virsim's debugger comes back at once with the stored breakpoints, and the running target
    # stops at the next tick by itself.
    wait_for(lambda: client.session("show", sid).debugger == "virsim", what="virsim's debugger back")
    wait_state(client, sid, "paused")  # the stored breakpoint hit
    assert client.session("show", sid).stop.function == "on_tick"
    stop = debug_stop(client, sid).stop
    assert stop.function == "on_tick"


def test_external_gdb_over_tcp_and_a_profile_board(cli: CLI, client: Client) -> None:
    virt = ROOT / "examples" / "virt-a15" / "hello.elf"
    sid = client.session_create("virt-a15", virt, paused=True).id
    client.debug("break", sid, location="on_tick")
    stop = debug_stop(client, sid).stop
    assert stop.function == "on_tick" and stop.file == "hello.c"
    regs = {r.name: r.value for r in client.debug("regs", sid).registers}
    assert "cpsr" in regs and regs["pc"] == stop.pc  # A-profile: cpsr, not xpsr
    ep = cli.json("debug", "gdb", sid, "--tcp")
    host, port = ep["tcp"].split(":")
    assert host == "127.0.0.1" and int(port) > 0 and ep["address"] == ep["tcp"]
    out = subprocess.run(["gdb-multiarch", "-q", "-batch", "-nx", str(virt), "-ex", f"target remote {ep['tcp']}",
                          "-ex", "print tick_count", "-ex", "detach"], capture_output=True, text=True, timeout=30)
    assert "$1 = " in out.stdout and "detached" in out.stdout
    wait_for(lambda: client.session("show", sid).debugger == "virsim", what="virsim's debugger back")


def test_bad_options_and_gdb_refusals_are_clean_errors(cli: CLI, client: Client, backend: str) -> None:
    sid = paused_hello(client, backend=backend)
    err = cli.json("debug", "regs", sid, "--scope", "bogus", check=2)
    assert err["code"] == "INVALID_INPUT" and "scope" in err["error"] and "bogus" in err["error"]
    err = cli.json("debug", "watch", sid, "tick_count", "--access", "sideways", check=2)
    assert "access" in err["error"]
    err = cli.json("debug", "eval", sid, "1 +", check=2)
    assert err["code"] == "DEBUG_COMMAND_FAILED" and err["details"]["gdb_message"]
    assert cli.json("debug", "mem", sid, "0x0", "0x10")["size"] == 16  # sizes take hex too


def test_breakpoint_ids_are_never_reused_and_reset_clears_the_stop(client: Client, backend: str) -> None:
    sid = paused_hello(client, backend=backend)
    first = client.debug("break", sid, location="on_tick").id
    client.debug("delete", sid, all=True)
    assert client.debug("break", sid, location="on_tick").id > first
    debug_stop(client, sid)
    assert client.session("show", sid).stop.reason == "breakpoint"
    client.session("reset", sid)
    assert client.session("show", sid).stop is None
    where = client.debug("where", sid)
    assert where.function == "Reset_Handler" and where.reason == "interrupted"


@pytest.mark.parametrize("backend", ["qemu", "builtin"], indirect=True)
def test_disabled_breakpoint_keeps_its_hits_and_survives_a_reattach(cli: CLI, client: Client, backend: str) -> None:
    sid = paused_hello(client, backend=backend)
    tick = cli.json("debug", "break", sid, "on_tick")
    putu = cli.json("debug", "break", sid, "uart_putu")  # on_tick calls it, after its first line
    assert tick["file"] == "hello.c" and tick["line"] > 0 and tick["enabled"]
    assert cli_debug_stop(cli, client, sid, "continue")["stop"]["function"] == "on_tick"
    off = cli.json("debug", "disable", sid, str(tick["id"]))
    assert off["enabled"] is False and off["hits"] == 1
    assert "disabled" in cli("debug", "list", sid).stdout
    for _ in range(2):  # disabled: every stop is uart_putu now, tick after tick
        assert cli_debug_stop(cli, client, sid, "continue")["stop"]["function"] == "uart_putu"
    # a power cycle re-attaches gdb: the breakpoint goes back in, still disabled
    client.session("power_off", sid)
    client.session("power_on", sid)
    assert [b.enabled for b in client.debug("list", sid).breakpoints] == [False, True]
    assert cli_debug_stop(cli, client, sid, "continue")["stop"]["function"] == "uart_putu"
    assert cli.json("debug", "enable", sid, str(tick["id"]))["enabled"] is True
    cli("debug", "delete", sid, str(putu["id"]))
    stop = cli_debug_stop(cli, client, sid, "continue")["stop"]
    assert stop["reason"] == "breakpoint" and stop["function"] == "on_tick"
    assert cli.json("debug", "list", sid)["breakpoints"][0]["hits"] == 2
    assert cli("debug", "enable", sid, "99", check=3)


@pytest.mark.parametrize("backend", ["builtin"], indirect=True)
def test_source_prints_the_file_with_stop_and_breakpoints(cli: CLI, client: Client, backend: str) -> None:
    sid = paused_hello(client, backend=backend)
    bp = cli.json("debug", "break", sid, "on_tick")
    cli_debug_stop(cli, client, sid, "continue")
    lines = cli("debug", "source", sid).stdout.splitlines()
    marked = [line for line in lines if line.startswith(">")]
    assert len(marked) == 1 and f"{bp['line']:5d}" in marked[0] and marked[0][1] == "B"
    assert 'uart_puts("tick ")' in marked[0]
    doc = cli.json("debug", "source", sid, "uart.c")
    assert doc["file"].endswith("uart.c") and doc["lines"] and doc["code_lines"]
    assert set(doc["files"]) >= {"hello.c", "uart.c"}
    err = cli.json("debug", "source", sid, "../../etc/passwd", check=3)
    assert err["code"] == "NOT_FOUND" and "hello.c" in err["error"]  # only the program's own files are served
