"""Record overhead on the built-in engine: a recorded deterministic run vs a plain one.

Each side starts a real engine process (the backend interface, as the daemon does), runs
examples/hello/hello.elf for N instructions with `run_for`, then feeds K console lines, each
followed by a short `run_for` so the firmware echoes it. The recorded side also writes every input
with its cycle to its recording. Prints medians side by side and the ratio (no pass/fail).

    python benchmarks/bench_record.py [--runs 5] [--instructions 100000000] [--inputs 50]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import side_by_side

from virsim.backends import get_backend
from virsim.backends.base import InstanceSpec
from virsim.board import resolve_board
from virsim.firmware import inspect

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples" / "hello" / "hello.elf"


def one_run(record: bool, instructions: int, inputs: int) -> tuple[float, int]:
    """Seconds for the run and the recording's size in bytes."""
    tmp = Path(tempfile.mkdtemp(prefix="vsbr-", dir="/tmp"))
    board, _ = resolve_board("mps2-an385")
    spec = InstanceSpec(session_id="bench", board=board, node=board.nodes[0], workdir=tmp, rundir=tmp,
                        console_log=tmp / "console.log", stderr_log=tmp / "engine.log", firmware=inspect(HELLO),
                        start_paused=True, record=(tmp / "recording.data") if record else None)
    inst = get_backend("builtin").create_instance(spec)
    inst.power_on()
    try:
        t0 = time.perf_counter()
        inst.run_for(instructions)
        for i in range(inputs):
            inst.console_write(b"line %d\n" % i)
            inst.run_for(200_000)
        elapsed = time.perf_counter() - t0
        size = (tmp / "recording.data").stat().st_size if record else 0
    finally:
        inst.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    return elapsed, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--instructions", type=int, default=100_000_000)
    parser.add_argument("--inputs", type=int, default=50)
    args = parser.parse_args()
    sizes: list[int] = []

    def recorded() -> float:
        seconds, size = one_run(True, args.instructions, args.inputs)
        sizes.append(size)
        return seconds

    ours, base = side_by_side(args.runs, recorded, lambda: one_run(False, args.instructions, args.inputs)[0])
    print(f"record overhead: hello.elf on mps2-an385 (built-in engine), {args.instructions:,} instructions then "
          f"{args.inputs} console lines; medians of {args.runs} runs")
    print(f"{'measurement':<44}  {'unit':>4}  {'record':>8}  {'plain':>8}  {'ratio':>7}")
    print(f"{'deterministic run, recorded vs not':<44}  {'s':>4}  {ours:>8.3f}  {base:>8.3f}  {ours / base:>6.2f}x")
    print(f"recording size: {sizes[-1]} bytes for {args.inputs} lines ({sizes[-1] / max(args.inputs, 1):.0f} B per "
          "input; nothing is written while no input arrives)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
