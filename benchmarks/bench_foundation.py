#!/usr/bin/env python3
"""Foundation benchmark: what virsim costs on top of the tools it wraps, measured side by side.

Three pairs, each measured alternately in one run (virsim, then its baseline, N times) and
reported as medians and their ratio:

  a. `session create` -> first console byte on the live event stream, versus QEMU started by hand
     with `-serial stdio` -> first byte on its stdout pipe;
  b. the installed `virsim session list` (daemon already running), versus `python -c pass`;
  c. one daemon request (`daemon.status`) round trip, versus a bare ZeroMQ DEALER/ROUTER echo over
     ipc:// answered by a thread with a reply of the same size; and again versus the same echo in a
     child process, as the daemon is (so the process boundary is not counted as virsim's cost).

Runs in a private VIRSIM_HOME under /tmp with its own daemon, and stops every process it started.
Not a pass/fail test. Usage: python benchmarks/bench_foundation.py [--runs 10] [--calls 1000]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import qemu_binary, side_by_side, virsim_script
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples" / "hello" / "hello.elf"
BOARD = "mps2-an385"
FIRST_BYTE_TIMEOUT = 15.0


# -------------------------------------------------------------------------------------------- helpers


def finish(client: Any, home: Path, own: list[subprocess.Popen[bytes]]) -> None:
    """End a run's private VIRSIM_HOME: stop its daemon, kill anything of ours still alive, remove it."""
    if client is not None:
        try:
            client.stop_daemon()
        except Exception as err:  # reported; the sweep below still cleans up
            print(f"bench: stopping the daemon failed: {err}", file=sys.stderr)
        client.close()
    leftovers = stop_processes_of(home, own)
    shutil.rmtree(home, ignore_errors=True)
    if leftovers:
        print(f"bench: had to kill left-over processes: {leftovers}", file=sys.stderr)


def qemu_version_line(qemu: str) -> str:
    return subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.split("\n", 1)[0]


def stop_processes_of(home: Path, own: list[subprocess.Popen[bytes]]) -> list[str]:
    """Kill whatever this run started that is still alive; return what had to be killed."""
    import psutil

    killed = []
    for proc in own:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            killed.append(f"raw qemu {proc.pid}")
    marker = str(home)
    for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
        try:
            cmd = " ".join(proc.info.get("cmdline") or [])
            env = proc.info.get("environ") or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if proc.pid != os.getpid() and (marker in cmd or env.get("VIRSIM_HOME") == marker):
            try:
                proc.kill()
                killed.append(f"{proc.pid} {cmd[:80]}")
            except psutil.NoSuchProcess:
                pass
    return killed


# ------------------------------------------------------------------------------- a. create -> first byte


def virsim_first_byte(client: Any, sub: Any) -> float:
    """Seconds from sending session.create to the first console event of that session."""
    while sub.recv(0) is not None:  # drop events of earlier runs (deletions)
        pass
    t0 = time.perf_counter()
    info = client.session_create(BOARD, HELLO)
    try:
        deadline = time.monotonic() + FIRST_BYTE_TIMEOUT
        while True:
            got = sub.recv(max(0.0, deadline - time.monotonic()))
            if got is None:
                raise RuntimeError(f"no console event from session {info.id} within {FIRST_BYTE_TIMEOUT}s")
            event, data = got
            if event.session == info.id and event.type == "console" and data:
                elapsed = time.perf_counter() - t0
                if event.offset != 0:
                    raise RuntimeError(f"first console event at offset {event.offset}: the subscription "
                                       "missed earlier bytes, so this measurement would be wrong")
                return elapsed
    finally:
        client.session_delete(info.id, purge=True)


def raw_qemu_first_byte(qemu: str, own: list[subprocess.Popen[bytes]]) -> float:
    """Seconds from spawning the same QEMU by hand to the first byte on its stdout pipe."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([qemu, "-M", BOARD, "-nodefaults", "-display", "none", "-monitor", "none",
                             "-serial", "stdio", "-kernel", str(HELLO)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            bufsize=0, start_new_session=True)
    own.append(proc)
    try:
        assert proc.stdout is not None
        first = proc.stdout.read(1)
        elapsed = time.perf_counter() - t0
        if not first:
            raise RuntimeError(f"raw QEMU exited (status {proc.wait()}) without printing")
        return elapsed
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        own.remove(proc)


# ---------------------------------------------------------------------------------- b. CLI end to end


def timed_run(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True, timeout=60)
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------- c. round trip


class EchoRouter:
    """A bare ZeroMQ ROUTER in a thread answering every request with a fixed reply frame."""

    def __init__(self, address: str, reply: bytes) -> None:
        import zmq

        self.ctx = zmq.Context()
        self.address = address
        self.reply = reply
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        if not self.ready.wait(5):
            raise RuntimeError("echo ROUTER did not start")

    def _serve(self) -> None:
        import zmq

        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.address)
        self.ready.set()
        try:
            while not self.stop.is_set():
                if sock.poll(100):
                    identity, _request = sock.recv_multipart()
                    sock.send_multipart([identity, self.reply])
        finally:
            sock.close(0)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.ctx.term()


ECHO_PROCESS = """
import sys, zmq
reply = open(sys.argv[2], "rb").read()
ctx = zmq.Context()
sock = ctx.socket(zmq.ROUTER)
sock.bind(sys.argv[1])
open(sys.argv[2] + ".ready", "w").close()
while True:
    identity, request = sock.recv_multipart()
    if request == b"stop":
        break
    sock.send_multipart([identity, reply])
"""


class EchoProcess:
    """The same echo ROUTER in a child process: the process boundary without virsim's code."""

    def __init__(self, address: str, reply: bytes, workdir: Path, own: list[subprocess.Popen[bytes]]) -> None:
        reply_file = workdir / "echo-reply.bin"
        reply_file.write_bytes(reply)
        self.proc = subprocess.Popen([sys.executable, "-c", ECHO_PROCESS, address, str(reply_file)],
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        own.append(self.proc)
        deadline = time.monotonic() + 10
        while not Path(str(reply_file) + ".ready").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("echo process did not start")
            time.sleep(0.005)

    def close(self, dealer: Any) -> None:
        dealer.send(b"stop")
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def virsim_round_trips(client: Any, calls: int) -> float:
    """Mean seconds per `client.status()` over `calls` calls."""
    t0 = time.perf_counter()
    for _ in range(calls):
        client.status()
    return (time.perf_counter() - t0) / calls


def zmq_round_trips(dealer: Any, request: bytes, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        dealer.send(request)
        dealer.recv()
    return (time.perf_counter() - t0) / calls


# ------------------------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=10, help="repetitions per measurement (median reported)")
    parser.add_argument("--calls", type=int, default=1000, help="requests per round-trip repetition")
    args = parser.parse_args()
    if args.runs < 1 or args.calls < 1:
        parser.error("--runs and --calls must be at least 1")
    if not HELLO.exists():
        sys.exit(f"bench: {HELLO} is missing (make -C examples)")
    qemu = qemu_binary()
    script = virsim_script()

    home = Path(tempfile.mkdtemp(prefix="vsb-", dir="/tmp"))
    os.environ["VIRSIM_HOME"] = str(home)
    os.environ.pop("XDG_RUNTIME_DIR", None)
    env = dict(os.environ)
    # SIGTERM should clean up like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    import zmq

    from virsim import protocol
    from virsim.client import Client
    from virsim.paths import get_paths

    own: list[subprocess.Popen[bytes]] = []
    rows: list[tuple[str, str, float, float]] = []
    client = None
    try:
        paths = get_paths()
        client = Client(paths, timeout=30).connect()  # starts this home's daemon

        # a. session create -> first UART byte, against QEMU by hand
        with client.subscribe(None) as sub:
            a_ours, a_base = side_by_side(args.runs, lambda: virsim_first_byte(client, sub),
                                          lambda: raw_qemu_first_byte(qemu, own))
        rows.append(("session create -> first UART byte", "ms", a_ours * 1e3, a_base * 1e3))

        # b. the CLI end to end, against starting Python
        b_ours, b_base = side_by_side(args.runs, lambda: timed_run([script, "session", "list"], env),
                                      lambda: timed_run([sys.executable, "-c", "pass"], env))
        rows.append(("CLI `virsim session list` vs `python -c pass`", "ms", b_ours * 1e3, b_base * 1e3))

        # c. one request's round trip, against bare ZeroMQ with frames of the same sizes
        request = protocol.encode("daemon.status", {})
        reply = protocol.reply_frame("0" * 12, result=client.status())
        echo = EchoRouter(f"ipc://{home}/echo.sock", reply)
        dealer = echo.ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(echo.address)
        try:
            c_ours, c_base = side_by_side(args.runs, lambda: virsim_round_trips(client, args.calls),
                                          lambda: zmq_round_trips(dealer, request, args.calls))
        finally:
            dealer.close(0)
            echo.close()
        rows.append((f"daemon.status round trip (x{args.calls}) vs ZeroMQ echo thread", "us/call", c_ours * 1e6,
                     c_base * 1e6))

        # c2. the same, with the echo in another process (as the daemon is): what the boundary costs
        zctx = zmq.Context()
        echo_proc = EchoProcess(f"ipc://{home}/echo2.sock", reply, home, own)
        dealer = zctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(f"ipc://{home}/echo2.sock")
        try:
            d_ours, d_base = side_by_side(args.runs, lambda: virsim_round_trips(client, args.calls),
                                          lambda: zmq_round_trips(dealer, request, args.calls))
        finally:
            echo_proc.close(dealer)
            own.remove(echo_proc.proc)
            dealer.close(0)
            zctx.term()
        rows.append((f"daemon.status round trip (x{args.calls}) vs ZeroMQ echo process", "us/call", d_ours * 1e6,
                     d_base * 1e6))
    finally:
        finish(client, home, own)

    version = qemu_version_line(qemu)
    print(f"virsim foundation benchmark: median of {args.runs} runs; {version}; Python "
          f"{platform.python_version()}; {os.cpu_count()} CPUs")
    width = max(len(name) for name, *_ in rows)
    print(f"{'measurement':<{width}}  {'unit':>7}  {'virsim':>9}  {'baseline':>9}  {'ratio':>7}")
    for name, unit, ours, base in rows:
        print(f"{name:<{width}}  {unit:>7}  {ours:>9.2f}  {base:>9.2f}  {ours / base:>6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
