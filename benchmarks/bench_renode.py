#!/usr/bin/env python3
"""Renode benchmark: virsim's Renode backend side by side with its QEMU backend, and with Renode
driven by hand, on examples/hello (mps2-an385):

  a. `session create` -> first console byte on the live event stream, Renode vs QEMU backend; and
     Renode started by hand (the same platform, its monitor on stdin, a socket terminal on
     127.0.0.1) -> the first byte on that terminal, to show what virsim adds to Renode itself;
  b. a warm register read through the daemon (`debug.regs`, stopped at a breakpoint), Renode vs QEMU;
  c. speed: instructions per host second of the busy-looping hello on each backend (deterministic
     sessions, the backend's own instruction counter sampled over --seconds);
  d. coverage on vs off on Renode (virsim's extension counting every block), the same measure.

Runs in a private VIRSIM_HOME under /tmp with its own daemon and stops every process it started.
Not a pass/fail test. Usage: python benchmarks/bench_renode.py [--runs 5] [--calls 200] [--seconds 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import qemu_binary, side_by_side

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples" / "hello" / "hello.elf"
BOARD = "mps2-an385"
FIRST_BYTE_TIMEOUT = 120.0  # Renode takes seconds to start on a loaded machine


def first_byte(client: Any, sub: Any, backend: str) -> float:
    """Seconds from sending session.create to the first console event of that session."""
    while sub.recv(0) is not None:
        pass
    t0 = time.perf_counter()
    info = client.session_create(BOARD, HELLO, backend=backend)
    try:
        deadline = time.monotonic() + FIRST_BYTE_TIMEOUT
        while True:
            got = sub.recv(max(0.0, deadline - time.monotonic()))
            if got is None:
                raise RuntimeError(f"no console event from session {info.id} within {FIRST_BYTE_TIMEOUT}s")
            event, data = got
            if event.session == info.id and event.type == "console" and data:
                return time.perf_counter() - t0
    finally:
        client.session_delete(info.id, purge=True)


def raw_renode_first_byte(renode: str, work: Path) -> float:
    """Renode by hand: the platform virsim generates for the board, loaded from a file, the ELF,
    a socket terminal on 127.0.0.1; seconds from spawning it to the first byte there."""
    from virsim.backends.renode.platform import platform as repl
    from virsim.board import resolve_board

    board, _ = resolve_board(BOARD)
    (work / "an385.repl").write_text(repl(board.nodes[0]).repl)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = "\n".join([
        'mach create "m"', f"machine LoadPlatformDescription @{work / 'an385.repl'}",
        "emulation SetGlobalSerialExecution true", "sysbus.cpu PerformanceInMips 25",
        f"sysbus LoadELF @{HELLO}", f'emulation CreateServerSocketTerminal {port} "term" false',
        "connector Connect sysbus.uart0 term", "start", ""])
    (work / "hello.resc").write_text(script)
    env = dict(os.environ, TMPDIR=str(work))
    t0 = time.perf_counter()
    proc = subprocess.Popen([renode, "--disable-xwt", "--plain", "--console", "--hide-log", "-P", "0",
                             "--config", str(work / "renode.config"), str(work / "hello.resc")],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + FIRST_BYTE_TIMEOUT
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("raw Renode did not open its terminal") from None
                time.sleep(0.01)
        with conn:
            conn.settimeout(max(1.0, deadline - time.monotonic()))
            while True:
                data = conn.recv(1)
                if data and data not in (b"\xff",):  # the terminal may open with telnet negotiation
                    return time.perf_counter() - t0
                if not data:
                    raise RuntimeError("raw Renode's terminal closed before any output")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def median_us(call: Any, calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def stopped_at_on_tick(client: Any, backend: str) -> str:
    sid = client.session_create(BOARD, HELLO, backend=backend, paused=True).id
    client.debug("break", sid, location="on_tick")
    client.debug("continue", sid, wait=True, timeout=120)
    return sid


def speed(client: Any, backend: str, seconds: float, coverage: bool = False) -> float:
    """Instructions per host second, from the backend's own counter over `seconds` of running."""
    info = client.session_create(BOARD, HELLO, backend=backend, deterministic=True, coverage=coverage)
    try:
        deadline = time.monotonic() + FIRST_BYTE_TIMEOUT
        while not (client.session("show", info.id).instructions or 0) and time.monotonic() < deadline:
            time.sleep(0.05)  # running: start counting from a live CPU
        first = client.session("show", info.id).instructions or 0
        t0 = time.perf_counter()
        time.sleep(seconds)
        last = client.session("show", info.id).instructions or 0
        return (last - first) / (time.perf_counter() - t0)
    finally:
        client.session_delete(info.id, purge=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions per measurement (median reported)")
    parser.add_argument("--calls", type=int, default=200, help="register reads per repetition")
    parser.add_argument("--seconds", type=float, default=4.0, help="host seconds each speed sample runs")
    args = parser.parse_args()
    if args.runs < 1 or args.calls < 1 or args.seconds <= 0:
        parser.error("--runs, --calls and --seconds must be positive")
    from virsim.backends.renode import find_renode

    renode = find_renode()
    if renode is None:
        sys.exit("bench: Renode is not installed (`renode` on PATH or VIRSIM_RENODE)")
    qemu_binary()
    home = Path(tempfile.mkdtemp(prefix="vsbr-", dir="/tmp"))
    os.environ["VIRSIM_HOME"] = str(home)
    os.environ.pop("XDG_RUNTIME_DIR", None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from virsim.client import Client

    rows: list[tuple[str, str, float, float, str]] = []
    client = Client(timeout=180).connect()
    try:
        with client.subscribe(None) as sub:
            r, q = side_by_side(args.runs, lambda: first_byte(client, sub, "renode"),
                                lambda: first_byte(client, sub, "qemu"))
        rows.append(("session create -> first UART byte", "ms", r * 1e3, q * 1e3, "QEMU backend"))
        raw_dir = home / "raw"
        raw_dir.mkdir()
        with client.subscribe(None) as sub:
            r2, raw = side_by_side(args.runs, lambda: first_byte(client, sub, "renode"),
                                   lambda: raw_renode_first_byte(renode, raw_dir))
        rows.append(("session create -> first UART byte", "ms", r2 * 1e3, raw * 1e3, "Renode by hand"))

        sids = {b: stopped_at_on_tick(client, b) for b in ("renode", "qemu")}
        reads = {b: [] for b in sids}
        for _ in range(args.runs):
            for b, sid in sids.items():
                reads[b].append(median_us(lambda sid=sid: client.debug("regs", sid), args.calls))
        rows.append(("register read via the daemon (warm)", "us", statistics.median(reads["renode"]),
                     statistics.median(reads["qemu"]), "QEMU backend"))
        for sid in sids.values():
            client.session_delete(sid, purge=True)

        ips_r, ips_q = side_by_side(args.runs, lambda: speed(client, "renode", args.seconds),
                                    lambda: speed(client, "qemu", args.seconds))
        rows.append(("speed, hello busy loop (deterministic)", "MIPS", ips_r / 1e6, ips_q / 1e6, "QEMU backend"))
        cov_on, cov_off = side_by_side(args.runs, lambda: speed(client, "renode", args.seconds, coverage=True),
                                       lambda: speed(client, "renode", args.seconds))
        rows.append(("Renode speed, coverage on vs off", "MIPS", cov_on / 1e6, cov_off / 1e6, "coverage off"))
    finally:
        try:
            client.stop_daemon()
        finally:
            client.close()
            shutil.rmtree(home, ignore_errors=True)

    version = subprocess.run([renode, "--version"], capture_output=True, text=True).stdout.split("\n", 1)[0]
    print(f"virsim Renode benchmark: medians of {args.runs} runs; {version}; Python {platform.python_version()}; "
          f"{os.cpu_count()} CPUs")
    width = max(len(name) for name, *_ in rows)
    print(f"{'measurement':<{width}}  {'unit':>5}  {'Renode':>9}  {'baseline':>9}  {'ratio':>7}  baseline")
    for name, unit, ours, base, what in rows:
        print(f"{name:<{width}}  {unit:>5}  {ours:>9.2f}  {base:>9.2f}  {ours / base:>6.2f}x  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
