"""Coverage and trace cost: the same firmware with coverage on vs off, on QEMU and the built-in engine.

QEMU: the QEMU backend's instance (--deterministic) from power-on until the console shows "tick T"
(a fixed instruction count), with the vcov plugin (--coverage) vs without.
Built-in engine: `Machine.run(N)` in this process with coverage on (Unicorn block hook) vs off,
and after `coverage stop` (on for a first stretch, then stopped) vs never on: the same N cycles
after the same first stretch, so both run the same code.
Both for examples/hello/hello.elf (a busy-wait loop of 4-instruction blocks: the worst case for a
per-block hook) and examples/hello/hello-systick.elf (sleeps in WFI between SysTick interrupts).
Traces (built-in engine): events recorded per second of host time at each level, and bytes per
million instructions (the raw file, and the Chrome export of a function-level trace).

Prints medians side by side and the ratio (no pass/fail).

    python benchmarks/bench_coverage.py [--runs 3] [--ticks 5] [--instructions 20000000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench_record import qemu_run
from common import side_by_side

from virsim.analysis.symbols import Program
from virsim.analysis.trace import RawTrace, export
from virsim.backends.builtin.machine import Machine
from virsim.board import resolve_board
from virsim.firmware import inspect

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = {"hello.elf": ROOT / "examples/hello/hello.elf", "hello-systick.elf": ROOT / "examples/hello/hello-systick.elf"}


def machine(elf: Path) -> Machine:
    board, _ = resolve_board("mps2-an385")
    m = Machine(board, board.nodes[0])
    m.program(inspect(elf))
    return m


def builtin_run(elf: Path, cycles: int, coverage: bool) -> float:
    """Seconds to run `cycles` of virtual time (instructions, and idle cycles while in WFI)."""
    m = machine(elf)
    if coverage:
        m.probes.coverage_start()
    t0 = time.perf_counter()
    m.run(cycles, idle_to_end=True)
    return time.perf_counter() - t0


def builtin_after_stop(elf: Path, cycles: int, stopped: bool) -> float:
    """Seconds to run `cycles` after a first cycles/10 with coverage on and then stopped (`stopped`)
    or with coverage never on."""
    m = machine(elf)
    if stopped:
        m.probes.coverage_start()
    m.run(cycles // 10, idle_to_end=True)
    if stopped:
        m.probes.coverage_stop()
        assert m.probes.counts, "coverage counted nothing before the stop"
    t0 = time.perf_counter()
    m.run(cycles, idle_to_end=True)
    return time.perf_counter() - t0


def row(label: str, unit: str, ours: float, base: float) -> None:
    print(f"{label:<52}  {unit:>4}  {ours:>9.3f}  {base:>9.3f}  {ours / base:>6.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--instructions", type=int, default=20_000_000)
    args = parser.parse_args()
    print(f"coverage benchmark: medians of {args.runs} runs; QEMU until 'tick {args.ticks}', built-in engine "
          f"{args.instructions:,} cycles of virtual time")
    print(f"{'measurement':<52}  {'unit':>4}  {'coverage':>9}  {'off':>9}  {'ratio':>7}")
    tmp = Path(tempfile.mkdtemp(prefix="vsbc-"))
    try:
        for name, elf in FIRMWARE.items():
            on, off = tmp / f"on-{name}", tmp / f"off-{name}"
            on.mkdir()
            off.mkdir()
            ours, base = side_by_side(args.runs, lambda: qemu_run(on, args.ticks, coverage=True, firmware=elf),
                                      lambda: qemu_run(off, args.ticks, firmware=elf))
            row(f"qemu: {name} until tick {args.ticks}", "s", ours, base)
        for name, elf in FIRMWARE.items():
            ours, base = side_by_side(args.runs, lambda: builtin_run(elf, args.instructions, True),
                                      lambda: builtin_run(elf, args.instructions, False))
            row(f"builtin: {name}, {args.instructions:,} cycles", "s", ours, base)
        print(f"{'':<52}  {'':>4}  {'stopped':>9}  {'never on':>9}")
        for name, elf in FIRMWARE.items():
            ours, base = side_by_side(args.runs, lambda: builtin_after_stop(elf, args.instructions, True),
                                      lambda: builtin_after_stop(elf, args.instructions, False))
            row(f"builtin: {name} after coverage stop", "s", ours, base)
        print("trace (built-in engine)                              events   events/s   raw bytes per M instr")
        for name, elf in FIRMWARE.items():
            functions = [f.start for f in Program.load(elf).functions]
            for level in ("block", "instruction", "function"):
                m = machine(elf)
                n = args.instructions // (10 if level == "instruction" else 1)
                m.probes.trace_start(level, [], 100_000_000, functions if level == "function" else None)
                t0 = time.perf_counter()
                m.run(n, idle_to_end=True)
                seconds = time.perf_counter() - t0
                raw = tmp / f"{name}-{level}.bin"
                info = m.probes.trace_dump(raw)
                per_m = raw.stat().st_size / max(m.instructions / 1e6, 1e-6)
                extra = ""
                if level == "function":
                    chrome = tmp / f"{name}.json"
                    program = Program.load(elf)
                    t1 = time.perf_counter()
                    export(program, RawTrace.read(raw), "chrome", chrome)
                    extra = (f"; chrome export {chrome.stat().st_size / max(m.instructions / 1e6, 1e-6):,.0f} B per M instr, "
                             f"{info['events'] / max(time.perf_counter() - t1, 1e-9):,.0f} events/s symbolised")
                print(f"  {name:<18} {level:<12} {info['events']:>10,} events  {info['events'] / seconds:>12,.0f}   "
                      f"{per_m:>12,.0f}{extra}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
