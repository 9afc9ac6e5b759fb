"""Lockstep cost: aggregate speed of a 2-node built-in board in timeslice sync vs the same two
nodes free-running, side by side in one run.

Both nodes run examples/hello/hello.elf (no cross-node traffic: what is measured is the barrier
itself). Free-running: two engine processes with no lockstep. Synchronised: the same two through
virsim.sync (a shared-memory barrier every quantum) at quanta of 1k, 10k and 100k cycles, and in
event mode from 1k (quanta double while no node sends anything). Each
side runs for --seconds of host time; the rate is the instructions both nodes executed, summed,
per second. Also printed: the cost of one barrier between two processes doing nothing else.

Mixed board (one built-in node, one QEMU node held by the vsync plugin, both running hello.elf):
lockstep makes every node advance the same virtual time, so the system can go no faster than its
slowest node alone. Measured: virtual time per host second of the synced pair (the least any node
reached) against the slower of the two nodes free-running (QEMU at the same icount shift, 32 ns
per instruction, so its virtual time is instructions x 32 ns), and the QEMU node's largest skew.

    python benchmarks/bench_sync.py [--seconds 3] [--runs 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from virsim.board import BoardConfig, resolve_board
from virsim.firmware import inspect
from virsim.sync import lockstep
from virsim.sync.lockstep import Lockstep
from virsim.sync.system import Plan, System, plan

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples" / "hello" / "hello.elf"


def two_nodes() -> BoardConfig:
    single, _ = resolve_board("mps2-an385")
    node = single.nodes[0].model_dump()
    node.update(backend="builtin", runs_on=["builtin"])
    return BoardConfig.model_validate({"system_id": "bench-2x-an385", "name": "two mps2-an385 nodes",
                                       "nodes": [dict(node, id="cpu0"), dict(node, id="cpu1")]})


@contextmanager
def running(board: BoardConfig, quantum: int | None, mode: str = "timeslice") -> Iterator[tuple[System, Plan]]:
    """Both nodes of `board` running hello.elf, past start-up; quantum None: no lockstep at all."""
    tmp = Path(tempfile.mkdtemp(prefix="vsb-", dir="/tmp"))
    image = inspect(HELLO)
    p = plan(board, {n.id: image for n in board.nodes}, tmp / "work", tmp / "run", quantum or 1, mode=mode)
    if quantum is None:
        for n in p.nodes:
            n.spec.lockstep = None
    system = System(p)
    try:
        system.start()
        time.sleep(0.5)
        yield system, p
    finally:
        system.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def instructions_per_s(system: System, seconds: float) -> list[float]:
    """Each node's instructions per host second over `seconds`."""
    insts = list(system.instances.values())
    before = [i.instructions() or 0 for i in insts]
    t0 = time.perf_counter()
    time.sleep(seconds)
    after = [i.instructions() or 0 for i in insts]
    elapsed = time.perf_counter() - t0
    return [(a - b) / elapsed for a, b in zip(after, before)]


def rate(quantum: int | None, seconds: float, mode: str = "timeslice") -> float:
    """Aggregate instructions/s of the two nodes; quantum None = free-running (no lockstep)."""
    with running(two_nodes(), quantum, mode) as (system, _):
        return sum(instructions_per_s(system, seconds))


def mixed_board() -> BoardConfig:
    single, _ = resolve_board("mps2-an385")
    node = single.nodes[0].model_dump()
    builtin = dict(node, id="cpu0", backend="builtin", runs_on=["builtin"])
    return BoardConfig.model_validate({"system_id": "bench-mixed", "name": "built-in + QEMU mps2-an385",
                                       "nodes": [builtin, dict(node, id="cpu1", backend="qemu", runs_on=["qemu"])]})


def mixed_rate(quantum: int | None, seconds: float) -> tuple[float, int]:
    """Virtual seconds per host second of the built-in + QEMU pair in lockstep (quantum cycles), and
    the QEMU node's largest skew in ns; quantum None: the slower node free-running (skew 0)."""
    board = mixed_board()
    hz = board.nodes[0].processor.frequency
    with running(board, quantum) as (system, p):
        if quantum is None:  # each alone: built-in 1 instruction per cycle, QEMU 32 ns per instruction
            builtin, qemu = instructions_per_s(system, seconds)
            return min(builtin / hz, qemu * 32e-9), 0
        lock = Lockstep(p.segment, 0)
        try:
            start = min(lock.reached(0), lock.reached(1))
            t0 = time.perf_counter()
            time.sleep(seconds)
            end = min(lock.reached(0), lock.reached(1))
            elapsed = time.perf_counter() - t0
            return (end - start) / hz / elapsed, lock.stats(1)["skew_max_ns"]
        finally:
            lock.close()


def _barrier_loop(segment: str, index: int, rounds: int, out: Any) -> None:
    lock = Lockstep(Path(segment), index)
    t0 = time.perf_counter()
    for _ in range(rounds):
        lock.barrier([])
    out.put((index, time.perf_counter() - t0))


def barrier_cost(rounds: int = 100_000) -> float:
    """Microseconds per barrier of two processes that do nothing else (the floor per quantum)."""
    tmp = Path(tempfile.mkdtemp(prefix="vsbb-", dir="/tmp"))
    try:
        seg = tmp / "seg"
        lockstep.create(seg, 2, 1)
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        procs = [ctx.Process(target=_barrier_loop, args=(str(seg), i, rounds, q)) for i in (0, 1)]
        for proc in procs:
            proc.start()
        times = [q.get(timeout=120)[1] for _ in procs]
        for proc in procs:
            proc.join()
        return max(times) / rounds * 1e6
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"lockstep benchmark: 2 built-in nodes running hello.elf, {args.seconds:g} s per side, medians of "
          f"{args.runs} runs")
    print(f"{'measurement':<44}  {'unit':>7}  {'synced':>8}  {'free':>8}  {'ratio':>7}")
    for mode, quantum in (("timeslice", 1_000), ("timeslice", 10_000), ("timeslice", 100_000), ("event", 1_000)):
        synced, free = [], []
        for _ in range(args.runs):
            synced.append(rate(quantum, args.seconds, mode))
            free.append(rate(None, args.seconds))
        s, f = statistics.median(synced), statistics.median(free)
        label = f"{mode}, quantum {quantum:,} cycles" + (" (grows, no traffic)" if mode == "event" else "")
        print(f"{label:<44}  {'Minstr/s':>7}  {s / 1e6:>8.1f}  {f / 1e6:>8.1f}  {s / f:>6.2f}x")
    print(f"barrier alone (2 processes, no work, 100k rounds): {barrier_cost():.2f} us per quantum")
    print()
    print("mixed board: 1 built-in + 1 QEMU node (vsync plugin), hello.elf on both; virtual time per host second, "
          "synced vs the slower node alone")
    print(f"{'measurement':<44}  {'unit':>7}  {'synced':>8}  {'free':>8}  {'ratio':>7}  {'QEMU skew':>9}")
    for quantum in (1_000, 10_000, 100_000):
        synced, free, skews = [], [], []
        for _ in range(args.runs):
            rate_s, skew = mixed_rate(quantum, args.seconds)
            synced.append(rate_s)
            skews.append(skew)
            free.append(mixed_rate(None, args.seconds)[0])
        s, f = statistics.median(synced), statistics.median(free)
        print(f"{f'timeslice, quantum {quantum:,} cycles':<44}  {'ms/s':>7}  {s * 1e3:>8.1f}  {f * 1e3:>8.1f}  "
              f"{s / f:>6.2f}x  {max(skews):>6} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
