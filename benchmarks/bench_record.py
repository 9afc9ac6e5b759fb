"""Record overhead: a recorded deterministic run vs a plain one, on the built-in engine and on QEMU.

Built-in engine: each side starts a real engine process (the backend interface, as the daemon
does), runs examples/hello/hello.elf for N instructions with `run_for`, then feeds K console
lines, each followed by a short `run_for` so the firmware echoes it. The recorded side also writes
every input with its cycle to its recording.

QEMU (--ticks T, skipped with --no-qemu): the same firmware through the QEMU backend's instance,
timed from power-on until the console shows "tick T" (a fixed instruction count): `--record`
(`-icount shift=auto,rr=record` plus its start snapshot) vs `--deterministic` (`-icount shift=0`),
and the replay of that recording vs the same plain run.

Prints medians side by side and the ratio (no pass/fail).

    python benchmarks/bench_record.py [--runs 5] [--instructions 100000000] [--inputs 50] [--ticks 10]
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


def qemu_run(tmp: Path, ticks: int, *, record: bool = False, replay: Path | None = None, coverage: bool = False,
             firmware: Path = HELLO) -> float:
    """Seconds from power-on of a QEMU instance until its console shows "tick <ticks>"."""
    board, _ = resolve_board("mps2-an385")
    run = Path(tempfile.mkdtemp(prefix="vsbq-", dir="/tmp"))  # short: Unix socket paths
    spec = InstanceSpec(session_id="bench", board=board, node=board.nodes[0], workdir=tmp, rundir=run,
                        console_log=tmp / "console.log", stderr_log=tmp / "qemu.log", firmware=inspect(firmware),
                        deterministic=True, record=(tmp / "recording.data") if record else None, replay=replay,
                        coverage=coverage)
    (tmp / "console.log").unlink(missing_ok=True)
    want = b"tick %d\n" % ticks
    inst = get_backend("qemu").create_instance(spec)
    t0 = time.perf_counter()
    inst.power_on()
    try:
        while True:
            inst.tick()  # a replay's console goes through ReplayConsole
            log = tmp / "console.log"
            if log.exists() and want in log.read_bytes():
                return time.perf_counter() - t0
            if inst.exit_status() is not None or time.perf_counter() - t0 > 120:
                raise SystemExit(f"bench: QEMU did not print {want!r}")
            time.sleep(0.002)
    finally:
        inst.destroy()
        shutil.rmtree(run, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--instructions", type=int, default=100_000_000)
    parser.add_argument("--inputs", type=int, default=50)
    parser.add_argument("--ticks", type=int, default=10)
    parser.add_argument("--no-qemu", action="store_true", help="only the built-in engine")
    args = parser.parse_args()
    sizes: list[int] = []

    def recorded() -> float:
        seconds, size = one_run(True, args.instructions, args.inputs)
        sizes.append(size)
        return seconds

    ours, base = side_by_side(args.runs, recorded, lambda: one_run(False, args.instructions, args.inputs)[0])
    print(f"record overhead: hello.elf on mps2-an385 (built-in engine), {args.instructions:,} instructions then "
          f"{args.inputs} console lines; medians of {args.runs} runs")
    print(f"{'measurement':<50}  {'unit':>4}  {'record':>8}  {'plain':>8}  {'ratio':>7}")
    print(f"{'deterministic run, recorded vs not':<50}  {'s':>4}  {ours:>8.3f}  {base:>8.3f}  {ours / base:>6.2f}x")
    print(f"recording size: {sizes[-1]} bytes for {args.inputs} lines ({sizes[-1] / max(args.inputs, 1):.0f} B per "
          "input; nothing is written while no input arrives)")
    if args.no_qemu:
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="vsbr-"))
    try:
        rec, plain = tmp / "record", tmp / "plain"
        rec.mkdir()
        plain.mkdir()
        ours, base = side_by_side(args.runs, lambda: qemu_run(rec, args.ticks, record=True),
                                  lambda: qemu_run(plain, args.ticks))
        print(f"{'qemu: until tick ' + str(args.ticks) + ', --record vs --deterministic':<50}  {'s':>4}  {ours:>8.3f}  "
              f"{base:>8.3f}  {ours / base:>6.2f}x")
        replay_dir = tmp / "replay"
        replay_dir.mkdir()

        def replayed() -> float:
            (replay_dir / "vm.qcow2").unlink(missing_ok=True)  # a fresh copy of the start snapshot each time
            return qemu_run(replay_dir, args.ticks, replay=rec / "recording.data")

        ours, base = side_by_side(args.runs, replayed, lambda: qemu_run(plain, args.ticks))
        print(f"{'qemu: until tick ' + str(args.ticks) + ', replay vs --deterministic':<50}  {'s':>4}  {ours:>8.3f}  "
              f"{base:>8.3f}  {ours / base:>6.2f}x")
        print(f"qemu recording: {(rec / 'recording.data').stat().st_size} bytes of rr log for {args.ticks} ticks, "
              f"plus the start snapshot in a {(rec / 'vm.qcow2').stat().st_size / 1024:.0f} KiB qcow2")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
