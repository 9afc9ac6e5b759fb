"""Fault catching: what it costs the firmware on QEMU, and how soon a fault becomes a verdict.

Cost (QEMU, raw processes, no daemon): examples/hello/hello.elf from start until its console shows
"tick T", under -icount as virsim's deterministic sessions run it, three ways:
  - with vprobe (virsim's plugin: a call at the start of the fault handlers' blocks only) vs none;
  - with a gdb-stub breakpoint on the fault handler (what virsim's debugger used to catch faults
    with: QEMU then runs the code sharing the handler's page one instruction per block) vs none.
Verdict latency (both backends, the real daemon): examples/hello/fault.elf prints "about to
divide by zero" just before it faults; the time from that line reaching a subscriber to the
`fault` event reaching it, which is what `virsim run` fails on; and end to end, from that line to
`virsim run`'s FAILED verdict line on its stdout.

Prints medians side by side and the ratio (no pass/fail).

    python benchmarks/bench_faults.py [--runs 5] [--ticks 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import qemu_binary, side_by_side, virsim_script

from virsim.backends.faults import FaultTable
from virsim.backends.qemu import icount_shift, plugins, qemu_version
from virsim.client import Client
from virsim.firmware import inspect, vector_table
from virsim.private import PrivateDaemon

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples/hello/hello.elf"
FAULT = ROOT / "examples/hello/fault.elf"


def qemu_until_tick(ticks: int, extra: list[str], gdb: int | None = None) -> float:
    """Seconds from QEMU's start until "tick <ticks>" on its console; `gdb`: a handler address to put a
    breakpoint on through the gdb stub before the CPU starts."""
    with tempfile.TemporaryDirectory(prefix="vsbf-", dir="/tmp") as tmp:
        args = [qemu_binary(), "-M", "mps2-an385", "-nodefaults", "-display", "none", "-monitor", "none",
                "-serial", "stdio", "-icount", f"shift={icount_shift(25_000_000)},align=off,sleep=off",
                "-kernel", str(HELLO), *extra]
        if gdb is not None:
            args += ["-S", "-gdb", f"unix:{tmp}/gdb.sock,server=on,wait=off"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            if gdb is not None:
                _break_and_continue(Path(tmp) / "gdb.sock", gdb)
            want, seen = b"tick %d\n" % ticks, b""
            assert proc.stdout is not None
            while want not in seen:
                chunk = proc.stdout.read1(4096)
                if not chunk:
                    raise SystemExit(f"bench: QEMU ended before {want!r}")
                seen += chunk
            return time.perf_counter() - t0
        finally:
            proc.kill()
            proc.wait()


def _packet(payload: str) -> bytes:
    return f"${payload}#{sum(payload.encode()) % 256:02x}".encode()


def _break_and_continue(path: Path, address: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.connect(str(path))
            break
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                raise SystemExit("bench: QEMU's gdb stub did not come up") from None
            time.sleep(0.005)
    for cmd in (f"Z0,{address:x},2", "c"):
        sock.sendall(_packet(cmd))
        reply = b""
        while b"+" not in reply:
            reply += sock.recv(4096)
        if cmd != "c":
            while b"#" not in reply:
                reply += sock.recv(4096)
            sock.sendall(b"+")
    # keep the connection open: the stub keeps the breakpoint only while gdb is attached
    _break_and_continue.keep = sock  # type: ignore[attr-defined]


def fault_latency(client: Client, backend: str) -> float:
    """Seconds from "about to divide by zero" reaching a subscriber to the fault event reaching it."""
    info = client.session_create("mps2-an385", FAULT, backend=backend, deterministic=True, paused=True)
    seen, line_at, fault_at = b"", None, None
    with client.subscribe(info.id) as sub:
        client.session("resume", info.id)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = sub.recv(1.0)
            if got is None:
                continue
            event, data = got
            now = time.perf_counter()
            if event.type == "console":
                seen += data
                if line_at is None and b"about to divide by zero\n" in seen:
                    line_at = now
            elif event.type == "fault":
                fault_at = now
            if line_at is not None and fault_at is not None:
                client.session_delete(info.id, purge=True)
                return max(0.0, fault_at - line_at)  # the fault may even be told before the line
    raise SystemExit(f"bench: no fault event from {backend}")


def run_verdict_latency(backend: str) -> float:
    """`virsim run fault.elf`: seconds from the console line printed just before the fault to the
    FAILED verdict line, both read from its stdout as a CI log would."""
    proc = subprocess.Popen([virsim_script(), "run", str(FAULT), "-e", "tick 3", "--backend", backend],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line_at = None
    for line in proc.stdout:
        now = time.perf_counter()
        if b"about to divide by zero" in line:
            line_at = now
        elif b"FAILED" in line and line_at is not None:
            proc.wait()
            return now - line_at
    proc.wait()
    raise SystemExit(f"bench: virsim run on {backend} printed no FAILED verdict after the fault")


def row(label: str, unit: str, ours: float, base: float) -> None:
    print(f"{label:<56}  {unit:>4}  {ours:>9.3f}  {base:>9.3f}  {ours / base:>6.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ticks", type=int, default=3)
    args = parser.parse_args()
    version = ".".join(map(str, qemu_version("qemu-system-arm") or (0, 0, 0)))
    probe = plugins.build("vprobe", version)
    handler = vector_table(inspect(HELLO))[3] & ~1  # HardFault's (the startup code's Default_Handler)
    with tempfile.TemporaryDirectory(prefix="vsbf-", dir="/tmp") as tmp:
        table = Path(tmp) / "faults.map"
        FaultTable.create(table).close()
        print(f"fault benchmark: medians of {args.runs} runs; QEMU until 'tick {args.ticks}' of hello.elf")
        print(f"{'measurement':<56}  {'unit':>4}  {'caught':>9}  {'none':>9}  {'ratio':>7}")
        plugin = ["-plugin", f"{probe},table={table},handlers={handler:#x}"]
        ours, base = side_by_side(args.runs, lambda: qemu_until_tick(args.ticks, plugin),
                                  lambda: qemu_until_tick(args.ticks, []))
        row("qemu: vprobe on the fault handlers vs no catching", "s", ours, base)
        ours, base = side_by_side(args.runs, lambda: qemu_until_tick(args.ticks, [], gdb=handler),
                                  lambda: qemu_until_tick(args.ticks, []))
        row("qemu: gdb breakpoint on the handler (before) vs none", "s", ours, base)
    private = PrivateDaemon("vsbf-")
    try:
        client = Client(private.paths, lifeline=True).connect()
        print(f"{'fault verdict latency (line before the fault -> event)':<56}  {'unit':>4}  {'median':>9}  {'max':>9}")
        for backend in ("qemu", "builtin"):
            samples = [fault_latency(client, backend) for _ in range(args.runs)]
            print(f"{backend:<56}  {'ms':>4}  {statistics.median(samples) * 1000:>9.1f}  {max(samples) * 1000:>9.1f}")
        for backend in ("qemu", "builtin"):
            samples = [run_verdict_latency(backend) for _ in range(args.runs)]
            label = f"virsim run on {backend}: that line -> FAILED verdict line"
            print(f"{label:<56}  {'ms':>4}  {statistics.median(samples) * 1000:>9.1f}  {max(samples) * 1000:>9.1f}")
        client.close()
    finally:
        private.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
