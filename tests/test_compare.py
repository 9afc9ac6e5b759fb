"""`virsim run --compare qemu,builtin` and `session exceptions`: real QEMU and the built-in engine
side by side, the first console byte where they part, each backend's state there.

The diverging firmware is the conformance probe the engine knowingly differs on (scbid: no MPU,
ENGINE_LIMITS in test_conformance.py), and hello.elf on a deadline: it ticks every 0.8 s of
virtual time on QEMU (32 ns per instruction) and every 1 s on the built-in engine (40 ns cycles).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import CLI, HELLO, HELLO_SYSTICK, ROOT, wait_progress, session_progress
from virsim.client import Client

pytestmark = pytest.mark.usefixtures("qemu")

SCBID = ROOT / "tests" / "conformance" / "scbid.elf"


def compare(cli: CLI, *args: str, code: int) -> dict:
    proc = cli("run", *args, "--compare", "qemu,builtin", "--json", check=code)
    return json.loads(proc.stdout)


def test_same_console_passes(cli: CLI, tmp_path: Path) -> None:
    doc = compare(cli, str(HELLO), "--expect-text", "tick 3", "--serial-log", str(tmp_path / "uart.log"), code=0)
    assert doc["identical"] and doc["offset"] is None and doc["states"] == []
    assert [r["backend"] for r in doc["runs"]] == ["qemu", "builtin"]
    assert all(r["status"] == "passed" for r in doc["runs"])
    logs = [(tmp_path / f"uart.{b}.log").read_bytes() for b in ("qemu", "builtin")]
    assert logs[0] == logs[1] and logs[0].endswith(b"tick 3")


def test_first_diverging_byte_and_both_states_there(cli: CLI) -> None:
    doc = compare(cli, str(SCBID), "--expect-text", "DONE", "--timeout", "2s", code=1)
    at = doc["offset"]
    qemu_log, engine_log = (r["serial_log"].encode("latin-1") for r in doc["runs"])
    assert qemu_log[:at] == engine_log[:at] and qemu_log[at] != engine_log[at]
    assert doc["line"] == qemu_log[:at].count(b"\n") + 1
    qemu, engine = doc["states"]
    assert qemu["backend"] == "qemu" and engine["backend"] == "builtin"
    assert qemu["reason"] == engine["reason"] == "sent"
    # Both stopped on the instruction after the store that sent the byte: the same code, the same
    # instruction count (the clocks differ: 32 ns per instruction on QEMU, 40 on the engine).
    assert qemu["instructions"] == engine["instructions"] > 0
    assert qemu["pc"] == engine["pc"] and "uart_putc" in qemu["location"]
    assert qemu["registers"]["r0"] == qemu_log[at] and engine["registers"]["r0"] == engine_log[at]
    human = cli("run", str(SCBID), "--expect-text", "DONE", "--timeout", "2s", "--compare", "qemu,builtin",
                check=1).stdout
    assert f"part at console byte {at}" in human and "r0 *" in human and "sent byte" in human


def test_a_backend_that_never_sends_the_byte_stops_where_its_run_ended(cli: CLI) -> None:
    # By 1.7 s QEMU has ticked twice (0.8 s, 1.6 s), the engine once: the engine's console is a prefix.
    doc = compare(cli, str(HELLO), "--timeout", "1.7s", code=1)
    qemu_run, engine_run = doc["runs"]
    assert qemu_run["serial_log"].startswith(engine_run["serial_log"])
    assert doc["offset"] == engine_run["console_bytes"] < qemu_run["console_bytes"]
    qemu, engine = doc["states"]
    assert qemu["reason"] == "sent" and qemu["registers"]["r0"] == ord(qemu_run["serial_log"][doc["offset"]])
    assert engine["reason"] == "ended" and engine["virtual_ns"] == 1_700_000_000 == engine_run["virtual_ns"]


def test_the_last_exceptions_at_the_divergence(cli: CLI) -> None:
    # irqload's two timers interleave differently with 32 and 40 ns instructions: its first report
    # line differs. Both backends list the timer interrupts they took just before it.
    doc = compare(cli, str(ROOT / "examples" / "irqload" / "irqload.elf"), "--timeout", "1.1s", code=1)
    for state in doc["states"]:
        assert state["reason"] == "sent" and state["exceptions_total"] > 1000
        names = {e["name"] for e in state["exceptions"]}
        assert names <= {"IRQ 8 (timer0)", "IRQ 9 (timer1)"} and len(state["exceptions"]) == 8, state
        assert {e["handler_function"] for e in state["exceptions"]} <= {"IRQ8_Handler", "IRQ9_Handler"}
        times = [e["virtual_ns"] for e in state["exceptions"]]
        assert times == sorted(times) and times[-1] <= state["virtual_ns"]


@pytest.mark.parametrize("args, message", [
    (["--compare", "qemu"], "two different backends"),
    (["--compare", "qemu,qemu"], "two different backends"),
    (["--compare", "qemu,bochs"], "no backend 'bochs'"),
    (["--compare", "qemu,builtin", "--backend", "qemu"], "drop --backend"),
    (["--compare", "qemu,builtin", "--keep"], "--keep"),
    (["--compare", "qemu,builtin", "--no-deterministic"], "--no-deterministic"),
])
def test_refusals(cli: CLI, args: list[str], message: str) -> None:
    proc = cli("run", str(HELLO), *args, check=2)
    assert message in proc.stdout + proc.stderr


@pytest.mark.parametrize("backend", ["qemu", "builtin"])
def test_session_exceptions(cli: CLI, client: Client, backend: str) -> None:
    info = client.session_create("mps2-an385", HELLO_SYSTICK, backend=backend, deterministic=True)
    wait_progress(lambda: client.request("session.exceptions", info.id, last=4).total >= 5,
                  progress=session_progress(client, info.id))
    reply = cli.json("session", "exceptions", info.id, "--last", "4")
    assert reply["total"] >= 5 and len(reply["exceptions"]) == 4
    for e in reply["exceptions"]:
        assert e["name"] == "SysTick" and e["exception"] == 15 and e["handler_function"] == "SysTick_Handler"
        assert e["exc_return"] == 0xFFFFFFF9 and e["return_location"].startswith("main (hello_systick.c:")
        # QEMU's clock inside a block is the one at its budget's start; the engine's is exact.
        assert e["clock_exact"] == (backend == "builtin")
    times = [e["virtual_ns"] for e in reply["exceptions"]]
    assert times == sorted(times)
    if backend == "builtin":  # SysTick every 100 ms of virtual time
        assert {b - a for a, b in zip(times, times[1:])} == {100_000_000}
    human = cli("session", "exceptions", info.id).stdout
    assert "SysTick_Handler" in human and "exceptions taken" in human
    client.session_delete(info.id)
    proc = cli("session", "exceptions", info.id, check=False)
    assert proc.returncode != 0


def test_the_ring_of_exceptions_taken(tmp_path: Path) -> None:
    """The table's second ring (backends/faults.py): oldest first, the last `n`, wrapping; a table
    written by an older virsim (no ring) has no entries and takes none."""
    from virsim.backends.faults import HEADER, MAGIC, RECORD, ExceptionEntry, FaultTable

    table = FaultTable.create(tmp_path / "faults.map", taken_capacity=4)
    assert table.last_taken(8) == [] and table.taken == 0
    for i in range(6):
        table.append_taken(ExceptionEntry(16 + i, 1, 1000 * i, 25 * i, 0x100 + i, 0x20001000, 0xFFFFFFF9, 0x200 + i))
    assert table.taken == 6
    assert [e.exception for e in table.last_taken(8)] == [18, 19, 20, 21]  # the ring keeps 4
    assert [e.return_pc for e in table.last_taken(2)] == [0x204, 0x205]
    assert table.since(0) == ([], 0)  # the fault records are untouched
    table.close()
    old = tmp_path / "old.map"
    old.write_bytes(HEADER.pack(MAGIC, 0, 0, 2, 0, 0) + bytes(2 * RECORD.size))
    table = FaultTable.open(old)
    table.append_taken(ExceptionEntry(15, 0, 0, 0, 0, 0, 0, 0))
    assert table.taken == 0 and table.last_taken(4) == []
    table.close()
