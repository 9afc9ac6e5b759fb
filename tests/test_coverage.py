"""Coverage and traces: line coverage from the DWARF line table on every backend (QEMU through the
vcov TCG plugin, the built-in engine through block hooks, Renode through virsim's extension on the
block-finished hook of Renode's execution tracer), lines charged to the function they came
from under inlining, stopping and resuming the built-in engine's counting, lcov that genhtml
renders, drcov read back, symbolised traces and a Chrome trace whose nesting is checked."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import (HELLO, HELLO_SYSTICK, CLI, chosen_backend, need_tool, session_progress, wait_console,
                      wait_progress)
from virsim.analysis.coverage import Coverage, parse_drcov
from virsim.analysis.symbols import Program
from virsim.client import Client

RTOS = HELLO.parents[1] / "rtos" / "rtos.elf"
INLINE = Path(__file__).parent / "firmware" / "inline.elf"

# tests/firmware/inline.c run to "done": (lines hit, lines total) of each function, read off the
# source and `arm-none-eabi-objdump -dl tests/firmware/inline.elf`. clamp, inlined into first and
# second, has the statement lines 9-12 (13 and 15 have no statement of their own): its branch ran
# in first's copy only, so all 4 hit. first: 27 (its call of clamp), 28, 29; second: 34, 35, 36 —
# clamp's lines are in neither. warn, inlined into a branch of main that never ran: 20-22, none
# hit. main: 43-51; 48 (the call of warn) and 50 (the jump back to the wfi, which never wakes) not.
INLINE_LINES = {"clamp": (4, 4), "first": (3, 3), "second": (3, 3), "warn": (0, 3), "main": (7, 9)}




@pytest.fixture(params=["qemu", "builtin", "renode"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every backend with coverage (Renode: skipped with the reason where it is not installed)."""
    return chosen_backend(request)


@pytest.fixture(params=["builtin", "renode"])
def tracer(request: pytest.FixtureRequest) -> str:
    """Every backend with traces."""
    return chosen_backend(request)


# ----------------------------------------------------------------------------- the ELF side

def test_program_maps_addresses_to_functions_and_lines() -> None:
    prog = Program.load(HELLO)
    on_tick = prog.function_named("on_tick")
    assert on_tick is not None and on_tick.file == "hello.c" and on_tick.line == 24
    assert prog.function_at(on_tick.start + 2) == on_tick
    row = prog.line_at(on_tick.start)
    assert row is not None and (row.file, row.line) == ("hello.c", 24)
    assert prog.resolve("main") == prog.function_named("main").start and prog.resolve("0x40") == 0x40


def test_code_the_linker_dropped_has_no_lines() -> None:
    """hello-systick.elf never calls uart_getc: --gc-sections drops it but leaves its line table
    and DIE at address 0, over the vector table. Neither may count as code."""
    prog = Program.load(HELLO_SYSTICK)
    assert prog.function_named("uart_getc") is None
    assert [r for r in prog.rows if r.file.endswith("uart.c") and r.line in (51, 53)] == []
    assert "uart_getc" not in {f.name for f in prog.sources}
    cov = Coverage.compute(prog, [], HELLO_SYSTICK.parent)
    uart_c = str((HELLO_SYSTICK.parent / "uart.c").resolve())
    assert 51 not in cov.files[uart_c].lines and 20 in cov.files[uart_c].lines


def test_lcov_and_drcov_from_blocks(tmp_path: Path) -> None:
    prog = Program.load(HELLO)
    on_tick = prog.function_named("on_tick")
    # on_tick's whole body ran 3 times, and one block of it once more (a second translation).
    blocks = [(on_tick.start, on_tick.end - on_tick.start, 3), (on_tick.start, 4, 1)]
    cov = Coverage.compute(prog, blocks, HELLO.parent)
    hello_c = str((HELLO.parent / "hello.c").resolve())
    assert cov.files[hello_c].lines[24] == 4 and cov.files[hello_c].lines[25] == 3
    assert ("on_tick", 24, 4) in cov.files[hello_c].functions
    assert "DA:24,4" in cov.lcov() and "FNDA:4,on_tick" in cov.lcov()
    modules, bbs = parse_drcov(cov.drcov())
    assert modules[0]["path"] == str(HELLO) and int(modules[0]["base"], 16) == prog.base
    assert sorted(bbs) == sorted((0, s - prog.base, z) for s, z, _ in cov.blocks)


# ------------------------------------------------------------------------ through the daemon

def paused_after_ticks(cli: CLI, client: Client, backend: str, ticks: int = 3) -> str:
    # The SysTick variant sleeps (WFI) between ticks: few blocks, so the built-in engine's
    # per-block counting hook does not make the test slow (hello.elf's busy loop would).
    sid = cli.json("session", "create", "-b", "mps2-an385", "-f", str(HELLO_SYSTICK), "--backend", backend,
                   "--coverage", "--deterministic")["id"]
    wait_console(client, sid, b"tick %d\n" % ticks)
    client.session("pause", sid)
    return sid


def executed_lines(report: dict) -> set[tuple[str, str]]:
    return {(r["file"], r["function"]) for r in report["rows"] if r["lines_hit"]}


def test_coverage_counts_what_ran(cli: CLI, client: Client, backend: str, tmp_path: Path) -> None:
    sid = paused_after_ticks(cli, client, backend)
    report = cli.json("coverage", "report", sid)
    rows = {r["function"]: r for r in report["rows"]}
    # Each on_tick call printed its "tick " before the pause, but one the pause cut short. QEMU's
    # console keeper may still be writing them to the log (late on a loaded host: 121 of 153 with
    # the keeper held up), so count once it has them.
    wait_progress(lambda: client.console_text(sid).count(b"tick ") >= rows["on_tick"]["calls"] - 1,
                  progress=session_progress(client, sid), what="the console to show the ticks printed before the pause")
    ticks = client.console_text(sid).count(b"tick ")
    # exact counts: one call per printed line (plus one if the pause came in the middle of a line)
    assert rows["on_tick"]["calls"] - ticks in (0, 1)
    assert rows["main"]["lines_hit"] > 0 and rows["uart_putc"]["calls"] > 0
    assert rows["SysTick_Handler"]["calls"] >= ticks
    assert rows["Default_Handler"]["lines_hit"] == 0  # never ran: no fault, no unexpected interrupt
    assert rows["Reset_Handler"]["calls"] == 1  # counted from the first instruction
    assert report["lines_hit"] < report["lines_found"] and report["functions_hit"] >= 5
    # lcov that genhtml renders without errors
    need_tool("genhtml")
    info = tmp_path / "cov.info"
    done = cli.json("coverage", "export", sid, "--format", "lcov", "--out", str(info))
    assert done["state"] == "done" and done["result"]["lines_hit"] == report["lines_hit"]
    text = info.read_text()
    assert re.search(r"^FNDA:%d,on_tick$" % rows["on_tick"]["calls"], text, re.M)
    html = subprocess.run(["genhtml", str(info), "-o", str(tmp_path / "html")], capture_output=True, text=True)
    assert html.returncode == 0, html.stderr
    assert (tmp_path / "html" / "index.html").exists()
    # json and drcov describe the same blocks
    js = tmp_path / "cov.json"
    cli.json("coverage", "export", sid, "--format", "json", "--out", str(js))
    doc = json.loads(js.read_text())
    drcov = tmp_path / "cov.drcov"
    cli.json("coverage", "export", sid, "--format", "drcov", "--out", str(drcov))
    _, bbs = parse_drcov(drcov.read_bytes())
    assert sorted((s, z) for _, s, z in bbs) == sorted((s, z) for s, z, c in doc["blocks"] if c)
    # reset zeroes the counts; the emulator keeps counting afterwards
    after = cli.json("coverage", "reset", sid)
    assert after["lines_hit"] == 0
    client.session("resume", sid)
    wait_progress(lambda: cli.json("coverage", "report", sid)["lines_hit"] > 0, progress=session_progress(client, sid),
                  what="lines counted again")


def test_inlined_code_counts_for_the_function_it_came_from(cli: CLI, client: Client, backend: str,
                                                           tmp_path: Path) -> None:
    sid = cli.json("session", "create", "-b", "mps2-an385", "-f", str(INLINE), "--backend", backend,
                   "--coverage")["id"]
    wait_console(client, sid, b"done\n")

    def main_done() -> bool:  # main's last line (the wfi) ran: nothing runs after it
        row = next(r for r in client.request("coverage.report", sid).rows if r.function == "main")
        return row.lines_hit == INLINE_LINES["main"][0]

    wait_progress(main_done, progress=session_progress(client, sid), what="main to reach its wfi")
    report = cli.json("coverage", "report", sid)
    rows = {r["function"]: r for r in report["rows"] if r["file"].endswith("inline.c")}
    assert {name: (r["lines_hit"], r["lines_total"]) for name, r in rows.items()} == INLINE_LINES
    assert {name: r["inlined"] for name, r in rows.items()} == {"clamp": 2, "first": 0, "second": 0, "warn": 1,
                                                                 "main": 0}
    assert {name: r["calls"] for name, r in rows.items()} == {"clamp": 2, "first": 1, "second": 1, "warn": 0,
                                                               "main": 1}
    # lcov: an inlined line counts every copy (9: the test in both), the function is an FN of its own
    info = tmp_path / "cov.info"
    cli.json("coverage", "export", sid, "--format", "lcov", "--out", str(info))
    text = info.read_text()
    record = text[text.index("inline.c\n"):]
    record = record[:record.index("end_of_record")]
    assert re.search(r"^DA:9,2$", record, re.M) and re.search(r"^DA:10,1$", record, re.M)
    assert re.search(r"^FN:9,clamp$", record, re.M) and re.search(r"^FNDA:2,clamp$", record, re.M)
    assert re.search(r"^FNDA:0,warn$", record, re.M) and re.search(r"^DA:48,0$", record, re.M)
    need_tool("genhtml")
    html = subprocess.run(["genhtml", str(info), "-o", str(tmp_path / "html")], capture_output=True, text=True)
    assert html.returncode == 0, html.stderr


def test_hello_on_tick_is_covered_in_full_after_a_tick(cli: CLI, client: Client) -> None:
    """hello.elf's main inlines poll_rx and delay, whose lines come after on_tick's in hello.c: they
    are theirs, not on_tick's (before: on_tick 5/14 although it ran in full)."""
    need_tool("qemu-system-arm")
    sid = cli.json("session", "create", "-b", "mps2-an385", "-f", str(HELLO), "--coverage")["id"]
    wait_console(client, sid, b"tick 1\n")
    rows = {r["function"]: r for r in cli.json("coverage", "report", sid)["rows"]}
    assert (rows["on_tick"]["lines_hit"], rows["on_tick"]["lines_total"]) == (3, 3)  # hello.c:24-26
    assert rows["on_tick"]["calls"] >= 1
    assert rows["poll_rx"]["inlined"] == 1 and rows["delay"]["inlined"] == 1
    assert rows["delay"]["lines_hit"] == rows["delay"]["lines_total"] == 1
    assert rows["poll_rx"]["lines_hit"] >= 1  # its receive loop's test; no input, so not the rest
    assert rows["poll_rx"]["lines_hit"] < rows["poll_rx"]["lines_total"]


def test_builtin_coverage_stop_keeps_counts_and_start_adds_to_them(cli: CLI, client: Client,
                                                                  tmp_path: Path) -> None:
    sid = cli.json("session", "create", "-b", "mps2-an385", "-f", str(HELLO_SYSTICK), "--backend", "builtin",
                   "--coverage")["id"]
    wait_console(client, sid, b"tick 2\n")
    stopped = cli.json("coverage", "stop", sid)
    assert not stopped["active"]
    calls = {r["function"]: r["calls"] for r in stopped["rows"]}
    ticks = client.console_text(sid).count(b"tick ")
    # the firmware runs on, three more ticks, and nothing of it is counted
    wait_console(client, sid, b"tick %d\n" % (ticks + 3))
    later = cli.json("coverage", "report", sid)
    assert not later["active"] and later["rows"] == stopped["rows"] and later["blocks"] == stopped["blocks"]
    info = tmp_path / "cov.info"  # the kept counts export as before
    done = cli.json("coverage", "export", sid, "--format", "lcov", "--out", str(info))
    assert done["result"]["lines_hit"] == stopped["lines_hit"]
    assert re.search(r"^FNDA:%d,on_tick$" % calls["on_tick"], info.read_text(), re.M)
    # start again (paused, so the tick count is exact): counting adds to the counts kept, from now on
    client.session("pause", sid)
    ticks = client.console_text(sid).count(b"tick ")
    assert cli.json("coverage", "start", sid)["active"]
    client.session("resume", sid)
    wait_console(client, sid, b"tick %d\n" % (ticks + 2))
    client.session("pause", sid)
    resumed = {r["function"]: r["calls"] for r in cli.json("coverage", "report", sid)["rows"]}
    since = client.console_text(sid).count(b"tick ") - ticks  # on_tick calls since the start, give or take
    assert calls["on_tick"] + since - 1 <= resumed["on_tick"] <= calls["on_tick"] + since + 1  # one cut short


def test_every_backend_covers_the_same_code(cli: CLI, client: Client, renode: str) -> None:
    need_tool("qemu-system-arm")
    reports = {b: cli.json("coverage", "report", paused_after_ticks(cli, client, b)) for b in ("qemu", "builtin", "renode")}
    assert executed_lines(reports["qemu"]) == executed_lines(reports["builtin"]) == executed_lines(reports["renode"])
    assert reports["qemu"]["lines_hit"] == reports["builtin"]["lines_hit"] == reports["renode"]["lines_hit"]


def test_coverage_refusals(cli: CLI, client: Client) -> None:
    need_tool("qemu-system-arm")
    sid = client.session_create("mps2-an385", HELLO, backend="qemu").id
    err = cli.json("coverage", "start", sid, check=5)
    assert err["code"] == "NOT_SUPPORTED" and "--coverage" in err["error"]
    counting = cli.json("session", "create", "-b", "mps2-an385", "-f", str(HELLO), "--coverage", "--paused")["id"]
    err = cli.json("coverage", "stop", counting, check=5)  # the vcov plugin counts until QEMU exits
    assert err["code"] == "NOT_SUPPORTED" and "cannot be stopped" in err["error"]
    assert cli.json("coverage", "report", counting)["active"]
    err = cli.json("coverage", "report", sid, check=3)
    assert err["code"] == "NOT_FOUND" and "coverage start" in err["error"]
    err = cli.json("trace", "start", sid, check=5)  # QEMU has no trace capability
    assert err["code"] == "NOT_SUPPORTED"
    plain = client.session_create("mps2-an385", HELLO, backend="builtin").id
    err = cli.json("coverage", "report", plain, check=3)  # nothing collected yet
    assert err["code"] == "NOT_FOUND" and f"virsim coverage start {plain}" in err["error"]
    err = cli.json("coverage", "stop", plain, check=3)  # nothing to stop
    assert err["code"] == "NOT_FOUND" and f"virsim coverage start {plain}" in err["error"]
    assert cli.json("coverage", "start", plain)["active"]


def test_run_with_coverage_writes_lcov(cli: CLI, tmp_path: Path) -> None:
    need_tool("qemu-system-arm")
    out = tmp_path / "out" / "cov.info"
    run = cli.json("run", str(HELLO), "-e", "tick 2", "--coverage", str(out))
    assert run["status"] == "passed" and run["coverage"] == str(out)
    assert "FN:24,on_tick" in out.read_text() and "end_of_record" in out.read_text()


# ------------------------------------------------------------------------------------- traces

def check_chrome(doc: dict, names: set[str]) -> list[str]:
    """The trace-event structure Perfetto needs: B/E pairs nested LIFO, time never going back."""
    stack: list[str] = []
    last = -1.0
    seen = []
    for ev in doc["traceEvents"]:
        if ev["ph"] == "M":
            continue
        assert ev["ph"] in ("B", "E") and ev["pid"] == 1 and ev["tid"] == 1
        assert ev["ts"] >= last
        last = ev["ts"]
        assert ev["name"] in names
        if ev["ph"] == "B":
            stack.append(ev["name"])
            seen.append(ev["name"])
        else:
            assert stack and stack.pop() == ev["name"]
    assert not stack
    return seen


def test_trace_function_timeline(cli: CLI, client: Client, tracer: str, tmp_path: Path) -> None:
    sid = client.session_create("mps2-an385", RTOS, backend=tracer).id
    wait_console(client, sid, b"ready for input\n")
    # Paused while the trace starts and the input goes in: the 5000 events then begin at the
    # input, not after however many ticks a slow host lets the firmware run first.
    client.session("pause", sid)
    started = cli.json("trace", "start", sid, "--level", "function", "--limit", "5000")
    assert started["active"] and started["level"] == "function"
    client.console_send(sid, b"hello\n")
    client.session("resume", sid)
    wait_console(client, sid, b"echo: hello\n")
    stopped = cli.json("trace", "stop", sid)
    assert not stopped["active"] and stopped["events"] > 0
    out = tmp_path / "trace.json"
    done = cli.json("trace", "export", sid, "--format", "chrome", "--out", str(out))
    assert done["state"] == "done"
    names = {f.name for f in Program.load(RTOS).functions}
    seen = check_chrome(json.loads(out.read_text()), names)
    assert "UART0_RX_IRQHandler" in seen and "SysTick_Handler" in seen  # interrupts nest as calls
    text = tmp_path / "trace.txt"
    cli.json("trace", "export", sid, "--format", "text", "--out", str(text))
    assert re.search(r"enter\s+UART0_RX_IRQHandler\s+rtos\.c:\d+", text.read_text())


def test_trace_limit_and_range(cli: CLI, client: Client, tracer: str, tmp_path: Path) -> None:
    sid = client.session_create("mps2-an385", HELLO_SYSTICK, backend=tracer).id
    wait_console(client, sid, b"Hello")
    cli.json("trace", "start", sid, "--range", "uart_putc", "--limit", "50")
    wait_progress(lambda: cli.json("trace", "show", sid)["truncated"], progress=session_progress(client, sid),
                  what="the trace to reach its limit")
    info = cli.json("trace", "show", sid)
    assert info["events"] == 50 and info["note"] == "truncated at 50 events (--limit 50)"
    out = tmp_path / "trace.txt"
    done = cli.json("trace", "export", sid, "--format", "text", "--out", str(out))
    assert done["result"]["note"] == info["note"]
    lines = out.read_text().splitlines()
    assert "# truncated at 50 events (--limit 50)" in lines
    events = [ln for ln in lines if not ln.startswith("#")]
    assert len(events) == 50 and all("uart_putc+" in ln and "uart.c:" in ln for ln in events)
    js = tmp_path / "trace.json"
    cli.json("trace", "export", sid, "--format", "json", "--out", str(js))
    doc = json.loads(js.read_text())
    assert doc["truncated"] and len(doc["events"]) == 50 and doc["events"][0]["function"] == "uart_putc"


def test_trace_refusals(cli: CLI, client: Client) -> None:
    sid = client.session_create("mps2-an385", HELLO, backend="builtin").id
    err = cli.json("trace", "start", sid, "--range", "nosuch", check=2)
    assert err["code"] == "INVALID_INPUT" and "no function 'nosuch'" in err["error"]
    err = cli.json("trace", "start", sid, "--range", "main..on_tick", check=2)
    assert "is not after" in err["error"]
    err = cli("trace", "start", sid, "--limit", "lots", check=2)
    assert "--limit" in err.stderr
    err = cli.json("trace", "export", sid, "--out", "/tmp/never.json", check=3)
    assert err["code"] == "NOT_FOUND" and "trace start" in err["error"]


def test_engine_trace_times_are_exact_instruction_counts() -> None:
    """An instruction's event carries its index; a block's, the index of its first instruction."""
    from virsim.backends.builtin.machine import Machine
    from virsim.board import resolve_board
    from virsim.firmware import inspect

    board, _ = resolve_board("mps2-an385")
    traces = {}
    for level in ("block", "instruction"):
        m = Machine(board, board.nodes[0])
        m.program(inspect(HELLO))
        m.probes.trace_start(level, [], 1000)
        m.run(300)
        flat = m.probes.events.tolist()
        traces[level] = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 3)]
    assert [cycle for cycle, _ in traces["instruction"]] == list(range(300))
    assert traces["block"][0] == (0, traces["instruction"][0][1])
    assert set(traces["block"]) <= set(traces["instruction"])  # each block at its first instruction's index
