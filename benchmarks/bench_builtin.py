#!/usr/bin/env python3
"""Built-in engine benchmark: its emulation speed and start-up, against bare Unicorn and QEMU.

The workload is examples/hello/hello.elf on mps2-an385 (a counted busy loop printing "tick N" on
the CMSDK UART every ~84M instructions) run for exactly N instructions, N being the instruction
that writes the "\\n" of "tick 2" (found once at start with the built-in machine). Each pair is
measured alternately in one run (one side, then the baseline, --runs times, after one warm-up of
each) and reported as medians and their ratio.

Instructions per second, each against a bare Unicorn loop running the same N instructions
(`emu_start(count=N)` with the UART page as the only MMIO) — the baseline:

  a. the built-in Machine in-process (`Machine.run(N)`);
  b. the built-in engine through virsim: `session create --backend builtin` on this script's own
     daemon until "tick 2" arrives on the event stream (engine process start-up included);
  c. raw QEMU (`-serial stdio`) from spawn until "tick 2" on its stdout, plain TCG;
  d. the same with `-icount shift=0,align=off,sleep=off` (deterministic, as virsim runs QEMU).

Under interrupt load: examples/irqload/irqload.elf (two CMSDK timers at 2 kHz at two priorities,
BASEPRI critical sections in the handlers and main, as an RTOS's interrupt-queue demo has them) run
for the same N instructions in-process, against hello's busy loop (a): the target is >= 0.5x.

Session create -> first UART byte, with bench_foundation.py's method: the builtin backend against
the qemu backend through virsim, and against raw QEMU spawn -> first byte (the floor).

Runs in a private VIRSIM_HOME under /tmp with its own daemon, and stops every process it started.
Not a pass/fail test. Usage: python benchmarks/bench_builtin.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench_foundation import BOARD, HELLO, finish, qemu_version_line, raw_qemu_first_byte, virsim_first_byte
from common import qemu_binary, side_by_side

EXPECT = b"tick 2\n"
UART0 = 0x40004000
ICOUNT = "shift=0,align=off,sleep=off"
QEMU_ARGS = ["-M", BOARD, "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "stdio",
             "-kernel", str(HELLO)]  # the raw command of bench_foundation.py
RUN_TIMEOUT = 60.0
_signalled: list[int] = []


def on_signal(signum: int, frame: Any) -> None:
    """SIGTERM/SIGINT: exit, cleaning up. Unicorn runs Python hooks as ctypes callbacks, which
    print and drop an exception raised in them, so the signal is also kept for `check_signal()`."""
    _signalled.append(signum)
    raise SystemExit(128 + signum)


def check_signal() -> None:
    """After an in-process run: exit if a signal arrived while Unicorn was in a Python hook."""
    if _signalled:
        raise SystemExit(128 + _signalled[0])


# ------------------------------------------------------------------------------- the target


def new_machine() -> tuple[Any, bytearray]:
    """A built-in Machine for hello.elf on mps2-an385, reset, its console UART going to a buffer."""
    from virsim.backends.builtin.machine import Machine
    from virsim.board import resolve_board
    from virsim.firmware import inspect

    board, _ = resolve_board(BOARD)
    m = Machine(board, board.nodes[0])
    m.program(inspect(HELLO))
    out = bytearray()
    uart = m.console_uart()
    assert uart is not None
    uart.sinks.append(out.extend)
    return m, out


def find_target() -> tuple[int, int]:
    """(instructions up to and including the write of EXPECT's last byte, of the first byte)."""
    m, out = new_machine()
    marks: list[int] = []

    def sink(data: bytes) -> None:  # runs inside the UART write: m.now() is the count before it
        if len(out) == len(data):
            marks.append(m.now() + 1)
        if out.endswith(EXPECT) and len(marks) == 1:
            marks.append(m.now() + 1)

    m.console_uart().sinks.append(sink)
    while len(marks) < 2:
        if m.instructions > 1_000_000_000:
            sys.exit(f"bench: {HELLO.name} did not print {EXPECT!r} within 1e9 instructions")
        m.run(1_000_000)
        check_signal()
    return marks[1], marks[0]


# ------------------------------------------------------------------------------- a, b: in-process


def machine_rate(n: int) -> float:
    """Instructions/s of the built-in Machine running n instructions (building it is not timed)."""
    m, out = new_machine()
    t0 = time.perf_counter()
    stop = m.run(n)
    elapsed = time.perf_counter() - t0
    check_signal()
    if stop.reason != "budget" or m.instructions != n or not out.endswith(EXPECT):
        raise RuntimeError(f"machine: {stop}, {m.instructions} instructions, output ends {bytes(out[-16:])!r}")
    return n / elapsed


IRQLOAD = HELLO.parents[1] / "irqload" / "irqload.elf"


def irqload_rate(n: int) -> float:
    """Instructions/s of the built-in Machine running irqload.elf for n instructions."""
    from virsim.backends.builtin.machine import Machine
    from virsim.board import resolve_board
    from virsim.firmware import inspect

    board, _ = resolve_board(BOARD)
    m = Machine(board, board.nodes[0])
    m.program(inspect(IRQLOAD))
    t0 = time.perf_counter()
    while m.instructions < n:
        m.run(n - m.instructions)
        check_signal()
    return m.instructions / (time.perf_counter() - t0)


def bare_unicorn_rate(n: int) -> float:
    """Instructions/s of a bare Unicorn running the same ELF for n instructions (setup not timed)."""
    from elftools.elf.elffile import ELFFile
    from unicorn import UC_ARCH_ARM, UC_MODE_MCLASS, UC_MODE_THUMB, Uc
    from unicorn.arm_const import UC_ARM_REG_SP, UC_CPU_ARM_CORTEX_M3

    uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
    uc.ctl_set_cpu_model(UC_CPU_ARM_CORTEX_M3)
    uc.mem_map(0, 4 << 20)
    uc.mem_map(0x20000000, 4 << 20)
    with HELLO.open("rb") as f:
        for seg in ELFFile(f).iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_filesz"]:
                uc.mem_write(seg["p_paddr"], seg.data())
    out = bytearray()

    def write(uc: Any, off: int, size: int, value: int, ud: Any) -> None:
        if off == 0:
            out.append(value & 0xFF)

    uc.mmio_map(UART0, 0x1000, lambda uc, off, size, ud: 0, None, write, None)
    sp, pc = struct.unpack("<II", uc.mem_read(0, 8))
    uc.reg_write(UC_ARM_REG_SP, sp)
    t0 = time.perf_counter()
    uc.emu_start(pc | 1, 0xFFFFFFFF, count=n)
    elapsed = time.perf_counter() - t0
    check_signal()
    if not out.endswith(EXPECT):
        raise RuntimeError(f"bare Unicorn: output ends {bytes(out[-16:])!r} after {n} instructions")
    return n / elapsed


# ------------------------------------------------------------------------------- c: through virsim


class WithBackend:
    """A Client whose session_create() asks for one backend (so bench_foundation's helper serves)."""

    def __init__(self, client: Any, backend: str) -> None:
        self.client = client
        self.backend = backend

    def session_create(self, board: str, firmware: Any = None, **options: Any) -> Any:
        return self.client.session_create(board, firmware, backend=self.backend, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def engine_rate(client: Any, sub: Any, n: int, log: list[tuple[float, float]]) -> float:
    """N / seconds from session.create (builtin backend) until EXPECT is on the event stream.
    (seconds to the first console byte, seconds to EXPECT) of this run are appended to `log`."""
    while sub.recv(0) is not None:  # drop events of earlier runs (deletions)
        pass
    t0 = time.perf_counter()
    info = client.session_create(BOARD, HELLO, backend="builtin")
    try:
        console = bytearray()
        first = None
        deadline = time.monotonic() + RUN_TIMEOUT
        while EXPECT not in console:
            got = sub.recv(max(0.0, deadline - time.monotonic()))
            if got is None:
                raise RuntimeError(f"no {EXPECT!r} from session {info.id} within {RUN_TIMEOUT:g}s")
            event, data = got
            if event.session != info.id:
                continue
            if event.type == "state" and event.state == "failed":
                raise RuntimeError(f"session {info.id} failed: {event.reason}")
            if event.type == "console" and data:
                if event.offset != len(console):
                    raise RuntimeError(f"console event at offset {event.offset}, expected {len(console)}")
                if first is None:
                    first = time.perf_counter() - t0
                console += data
        elapsed = time.perf_counter() - t0
    finally:
        client.session_delete(info.id, purge=True)
    assert first is not None
    log.append((first, elapsed))
    return n / elapsed


# ------------------------------------------------------------------------------- d: raw QEMU


def qemu_rate(qemu: str, icount: bool, n: int, own: list[subprocess.Popen[bytes]],
              log: list[tuple[float, float]]) -> float:
    """N / seconds from spawning QEMU until EXPECT is on its stdout; (first byte, EXPECT) to `log`."""
    args = [qemu] + (["-icount", ICOUNT] if icount else []) + QEMU_ARGS
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            bufsize=0, start_new_session=True)
    own.append(proc)
    try:
        assert proc.stdout is not None
        out = bytearray()
        first = None
        while EXPECT not in out:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"QEMU exited (status {proc.wait()}) before {EXPECT!r}: {bytes(out)!r}")
            if first is None:
                first = time.perf_counter() - t0
            out += chunk
        elapsed = time.perf_counter() - t0
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        own.remove(proc)
    assert first is not None
    log.append((first, elapsed))
    return n / elapsed


# ------------------------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions per measurement (median reported)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not HELLO.exists():
        sys.exit(f"bench: {HELLO} is missing (make -C examples)")
    qemu = qemu_binary()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t0 = time.perf_counter()
    n, n_first = find_target()
    target_s = time.perf_counter() - t0

    home = Path(tempfile.mkdtemp(prefix="vsb-", dir="/tmp"))
    os.environ["VIRSIM_HOME"] = str(home)
    os.environ.pop("XDG_RUNTIME_DIR", None)

    from virsim.client import Client
    from virsim.paths import get_paths

    own: list[subprocess.Popen[bytes]] = []
    rates: list[tuple[str, float, float]] = []
    loads: list[tuple[str, float, float]] = []
    latencies: list[tuple[str, float, float]] = []
    logs: dict[str, list[tuple[float, float]]] = {"engine": [], "tcg": [], "icount": []}  # warm-up first
    client = None
    try:
        # a. the machine in-process against bare Unicorn (the target: >= 0.8x)
        a, base = side_by_side(args.runs, lambda: machine_rate(n), lambda: bare_unicorn_rate(n))
        rates.append(("built-in Machine.run(N), in-process", a, base))
        irq, busy = side_by_side(args.runs, lambda: irqload_rate(n), lambda: machine_rate(n))
        loads = [("irqload (2 timers at 2 kHz, BASEPRI) vs hello busy loop", irq, busy)]

        client = Client(get_paths(), timeout=30).connect()  # starts this home's daemon
        with client.subscribe(None) as sub:
            # b. the engine through virsim, end to end
            b, base = side_by_side(args.runs, lambda: engine_rate(client, sub, n, logs["engine"]),
                                   lambda: bare_unicorn_rate(n))
            rates.append(("virsim session --backend builtin", b, base))

            # c, d. raw QEMU, plain TCG and with icount
            for key, name, icount in (("tcg", "qemu-system-arm (TCG)", False),
                                      ("icount", "qemu-system-arm -icount", True)):
                log = logs[key]
                q, base = side_by_side(args.runs, lambda icount=icount, log=log: qemu_rate(qemu, icount, n, own, log),
                                       lambda: bare_unicorn_rate(n))
                rates.append((name, q, base))

            # 2. session create -> first UART byte (bench_foundation.py's measurement)
            builtin, qemu_backend = WithBackend(client, "builtin"), WithBackend(client, "qemu")
            ours, theirs = side_by_side(args.runs, lambda: virsim_first_byte(builtin, sub),
                                        lambda: virsim_first_byte(qemu_backend, sub))
            latencies.append(("builtin vs qemu backend (both via virsim)", ours * 1e3, theirs * 1e3))
            ours, theirs = side_by_side(args.runs, lambda: virsim_first_byte(builtin, sub),
                                        lambda: raw_qemu_first_byte(qemu, own))
            latencies.append(("builtin via virsim vs raw QEMU spawn (floor)", ours * 1e3, theirs * 1e3))
    finally:
        finish(client, home, own)

    version = qemu_version_line(qemu)
    print(f"built-in engine benchmark: {HELLO.relative_to(HELLO.parents[2])} on {BOARD} for N = {n:,} instructions "
          f"(to the end of {EXPECT.decode().strip()!r}); medians of {args.runs} runs; unicorn "
          f"{metadata.version('unicorn')}; {version}; Python {platform.python_version()}; {os.cpu_count()} CPUs")
    width = max(len(name) for name, *_ in rates + latencies)
    width = max(width, len("session create -> first UART byte"))
    print(f"{'instructions per second':<{width}}  {'unit':>7}  {'left':>9}  {'bare uc':>9}  {'ratio':>7}")
    for name, ours, base in rates:
        print(f"{name:<{width}}  {'Minsn/s':>7}  {ours / 1e6:>9.1f}  {base / 1e6:>9.1f}  {ours / base:>6.2f}x")
    print(f"{'built-in Machine under interrupt load':<{width}}  {'unit':>7}  {'irqload':>9}  {'busy':>9}  {'ratio':>7}")
    for name, ours, base in loads:
        print(f"{name:<{width}}  {'Minsn/s':>7}  {ours / 1e6:>9.1f}  {base / 1e6:>9.1f}  {ours / base:>6.2f}x")
    print(f"{'session create -> first UART byte':<{width}}  {'unit':>7}  {'left':>9}  {'right':>9}  {'ratio':>7}")
    for name, ours, base in latencies:
        print(f"{name:<{width}}  {'ms':>7}  {ours:>9.1f}  {base:>9.1f}  {ours / base:>6.2f}x")
    print("rates: N / wall time until 'tick 2' is out. Machine and bare uc: run(N) / emu_start(count=N) only;")
    print("  the others include start-up (virsim: session create -> console event; QEMU: spawn -> its stdout).")
    print("ratios: left / right; for rates higher is faster (target for the first row: >= 0.8x), for ms slower.")
    for key, label in (("engine", "virsim builtin session"), ("tcg", "QEMU TCG"), ("icount", "QEMU -icount")):
        runs = logs[key][1:]  # without the warm-up
        start = statistics.median(first for first, _ in runs)
        steady = statistics.median((n - n_first) / (total - first) for first, total in runs)
        print(f"  {label}: first byte (instruction {n_first}) after {start * 1e3:.0f} ms; from there to 'tick 2' "
              f"{steady / 1e6:.1f} Minsn/s (medians of {len(runs)})")
    print(f"finding N (one machine run in 1M-instruction slices) took {target_s:.2f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
