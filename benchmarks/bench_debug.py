"""Debugging costs side by side: virsim's debug requests vs the raw GDB remote protocol underneath.

For each pair, medians over --runs repetitions (each repetition does --calls operations):
  register read   daemon `debug.regs` (general scope, warm)  vs  raw RSP `g` on QEMU's stub
  4-byte read     daemon `debug.mem` of tick_count           vs  raw RSP `m addr,4`
  break -> event  `debug.continue` to a breakpoint on the next instruction, until the stop event
                  arrives on the PUB stream                  vs  raw RSP `c` until the `T05` stop reply
  CLI regs        `virsim debug regs <sid>` end to end       vs  `gdb-multiarch -batch … info registers`

The raw side runs against its own QEMU (same firmware, same machine), so both see the same stub.
Usage: python benchmarks/bench_debug.py [--runs 10] [--calls 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples" / "hello" / "hello.elf"


class RSP:
    """A minimal GDB remote protocol client (QEMU 7.2's stub does not do no-ack mode)."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + 5
        while True:
            try:
                self.sock.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.buf = b""

    def send(self, data: str) -> None:
        body = data.encode()
        self.sock.sendall(b"$" + body + b"#" + f"{sum(body) & 0xFF:02x}".encode())

    def reply(self) -> bytes:
        while True:
            start = self.buf.find(b"$")
            end = self.buf.find(b"#", start + 1) if start >= 0 else -1
            if start >= 0 and end >= 0 and len(self.buf) >= end + 3:
                packet = self.buf[start + 1:end]
                self.buf = self.buf[end + 3:]
                self.sock.sendall(b"+")
                return packet
            self.buf += self.sock.recv(65536)

    def call(self, data: str) -> bytes:
        self.send(data)
        return self.reply()


def median_us(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    for tool in ("qemu-system-arm", "gdb-multiarch"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: run scripts/setup.sh", file=sys.stderr)
            return 1
    home = Path(tempfile.mkdtemp(prefix="vsbd-", dir="/tmp"))
    os.environ["VIRSIM_HOME"] = str(home)
    os.environ.pop("XDG_RUNTIME_DIR", None)
    from virsim.client import Client

    raw_dir = home / "raw"
    raw_dir.mkdir()
    stub = str(raw_dir / "gdb.sock")
    raw = subprocess.Popen(["qemu-system-arm", "-M", "mps2-an385", "-S", "-nodefaults", "-display", "none",
                            "-monitor", "none", "-serial", "null", "-chardev",
                            f"socket,id=g,path={stub},server=on,wait=off", "-gdb", "chardev:g",
                            "-kernel", str(HELLO)], stderr=subprocess.DEVNULL)
    c = Client().connect()
    rows = []
    try:
        # Both targets stopped at on_tick (0x40), with a second breakpoint on the next instruction.
        nm = subprocess.run(["gdb-multiarch", "-batch", "-nx", str(HELLO), "-ex", "print &tick_count"],
                            capture_output=True, text=True).stdout
        tick_count = int(nm.split("0x")[1].split()[0], 16)
        sid = c.session_create("mps2-an385", HELLO, paused=True).id
        c.debug("break", sid, location="on_tick")
        c.debug("continue", sid, wait=True, timeout=10)
        rsp = RSP(stub)
        rsp.call("?")
        assert rsp.call("Z0,40,2") == b"OK"
        stop = rsp.call("c")
        assert stop.startswith(b"T05"), stop

        def pair(name: str, unit: str, ours, theirs, calls: int) -> None:
            a, b = [], []
            for _ in range(args.runs):
                a.append(median_us(ours, calls))
                b.append(median_us(theirs, calls))
            rows.append((name, unit, statistics.median(a), statistics.median(b)))

        pair("register read (warm)", "us", lambda: c.debug("regs", sid), lambda: rsp.call("g"), args.calls)
        pair("4-byte memory read", "us", lambda: c.debug("mem", sid, address=f"{tick_count:#x}", size=4),
             lambda: rsp.call(f"m{tick_count:x},4"), args.calls)

        # on_tick+2 is the next instruction after the stop at on_tick: a hit microseconds later.
        c.debug("break", sid, location="*0x42")
        assert rsp.call("Z0,42,2") == b"OK"

        def virsim_hit() -> None:
            c.debug("reg_set", sid, name="pc", value=0x40)
            with c.subscribe(sid) as sub:
                time.sleep(0.05)  # the subscription must reach the daemon before the stop
                t0 = time.perf_counter()
                c.debug("continue", sid)
                while True:
                    got = sub.recv(5)
                    if got and got[0].type == "stop":
                        hits.append(time.perf_counter() - t0)
                        return

        def raw_hit() -> None:
            # What a debugger must do to continue from a breakpoint on QEMU's stub (it would report
            # the same breakpoint again): remove it, step, put it back. The step lands on the
            # breakpoint at 0x42, which is the hit (as gdb reports it).
            regs = rsp.call("g").decode()
            assert rsp.call("G" + regs[:15 * 8] + "40000000" + regs[16 * 8:]) == b"OK"  # pc = 0x40
            t0 = time.perf_counter()
            assert rsp.call("z0,40,2") == b"OK"
            reply = rsp.call("s")
            assert rsp.call("Z0,40,2") == b"OK"
            raw_hits.append(time.perf_counter() - t0)
            assert reply.startswith(b"T05"), reply
            pc = rsp.call("g")[15 * 8:16 * 8]
            assert pc == b"42000000", pc

        hits: list[float] = []
        raw_hits: list[float] = []
        for _ in range(args.runs * 5):
            virsim_hit()
            raw_hit()
        rows.append(("breakpoint hit -> stop event", "us", statistics.median(hits) * 1e6,
                     statistics.median(raw_hits) * 1e6))

        env = {**os.environ}
        cli_runs, gdb_runs = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "virsim", "debug", "regs", sid], env=env, check=True,
                           capture_output=True)
            cli_runs.append(time.perf_counter() - t0)
            rsp.sock.close()  # the stub takes one client: let gdb have it
            t0 = time.perf_counter()
            subprocess.run(["gdb-multiarch", "-batch", "-nx", "-ex", f"target remote {stub}",
                            "-ex", "info registers", "-ex", "detach"], check=True, capture_output=True)
            gdb_runs.append(time.perf_counter() - t0)
            rsp = RSP(stub)
            rsp.call("?")
        rows.append(("CLI `virsim debug regs` vs gdb -batch", "ms", statistics.median(cli_runs) * 1e3,
                     statistics.median(gdb_runs) * 1e3))
    finally:
        c.stop_daemon()
        raw.kill()
        raw.wait()
        shutil.rmtree(home, ignore_errors=True)
    qemu = subprocess.run(["qemu-system-arm", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"virsim debug benchmark: medians of {args.runs} runs x {args.calls} calls; {qemu}; {os.cpu_count()} CPUs")
    print(f"{'measurement':<42} {'unit':>4} {'virsim':>10} {'raw RSP':>10} {'ratio':>8}")
    for name, unit, ours, theirs in rows:
        print(f"{name:<42} {unit:>4} {ours:>10.1f} {theirs:>10.1f} {ours / theirs:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
