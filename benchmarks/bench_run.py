#!/usr/bin/env python3
"""`virsim run` against the shell pipeline it replaces, measured side by side.

The check: hello.elf on mps2-an385 prints "tick 3". Three pairs, each measured alternately in one
run (one side, then the other, --runs times, after one warm-up of each), reported as medians and
their ratio:

  a. `virsim run examples/hello/hello.elf --board mps2-an385 --expect-text "tick 3"` (the installed
     script, a subprocess; deterministic, its default) until it exits, versus
     `bash -c "timeout 10 qemu-system-arm -M mps2-an385 -nographic -kernel examples/hello/hello.elf
     | grep -m1 'tick 3'"` until grep has exited with the match (its verdict);
  b. the same with `virsim run --no-deterministic`, versus the same pipeline;
  c. the pipeline with `-icount shift=0,align=off,sleep=off` (what virsim's deterministic default
     runs QEMU with), versus the plain pipeline: the cost of determinism itself.

QEMU ignores SIGPIPE, so after grep exits it keeps running (its writes fail with EPIPE) until
`timeout 10` kills it: the pipeline as a whole returns only after 10 s. The pipeline side is
therefore timed to grep's exit, and everything left of it (bash, timeout, QEMU: the process
session it was started in) is killed right after; the benchmark checks that no QEMU of its own
survives. The whole pipeline, until bash returns, is timed once and printed below the table.

Not a pass/fail test. Usage: python benchmarks/bench_run.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import side_by_side, virsim_script

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples" / "hello" / "hello.elf"
BOARD = "mps2-an385"
EXPECT = "tick 3"
ICOUNT = "shift=0,align=off,sleep=off"
PIPELINE_LIMIT = 10  # the `timeout` of the raw pipeline, seconds


def pipeline(icount: bool) -> str:
    qemu = ["timeout", str(PIPELINE_LIMIT), "qemu-system-arm", "-M", BOARD, "-nographic"]
    if icount:
        qemu += ["-icount", ICOUNT]
    qemu += ["-kernel", str(HELLO)]
    return f"{shlex.join(qemu)} | grep -m1 {shlex.quote(EXPECT)}"


def kill_session(sid: int) -> list[int]:
    """SIGKILL every process of session `sid` (what the pipeline started); return their pids.

    `timeout` moves itself and QEMU into a process group of their own, so a process-group kill
    of bash would miss QEMU: the session id (the pipeline runs with start_new_session) does not.
    """
    killed = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.getsid(pid) == sid:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        except (ProcessLookupError, PermissionError):
            continue
    return killed


def session_alive(sid: int) -> list[str]:
    """Command lines of the live (non-zombie) processes still in session `sid`."""
    left = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) != sid:
                continue
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                left.append(f.read().replace(b"\0", b" ").decode(errors="replace").strip())
        except (ProcessLookupError, PermissionError, FileNotFoundError, IndexError):
            continue
    return left


def time_pipeline(icount: bool, leftovers: list[str]) -> float:
    """Seconds from start until grep has printed the match and exited (the pipeline's verdict)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(["bash", "-c", pipeline(icount)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # grep's stdout is this pipe: it writes the matching line when it exits (-m1), so the
        # first bytes here are the verdict. EOF alone would wait for QEMU (see the docstring).
        line = proc.stdout.readline() if proc.stdout else b""
        elapsed = time.perf_counter() - t0
        if line.strip() != EXPECT.encode():
            raise SystemExit(f"bench: the pipeline printed {line!r}, not {EXPECT!r}: {pipeline(icount)}")
        return elapsed
    finally:
        kill_session(proc.pid)
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
        deadline = time.monotonic() + 5
        while (left := session_alive(proc.pid)) and time.monotonic() < deadline:
            kill_session(proc.pid)
            time.sleep(0.05)
        leftovers.extend(left)


def time_full_pipeline() -> float:
    """Seconds until the plain pipeline returns by itself (bash exits), as a shell script sees it."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(["bash", "-c", pipeline(False)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(PIPELINE_LIMIT + 20)
    finally:
        kill_session(proc.pid)
        proc.wait()
    return time.perf_counter() - t0


def time_virsim(script: str, *extra: str) -> float:
    cmd = [script, "run", str(HELLO), "--board", BOARD, "--expect-text", EXPECT, *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench: {shlex.join(cmd)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="repetitions of each side (default 10)")
    ap.add_argument("--no-full-pipeline", action="store_true",
                    help="skip the one timing of the whole pipeline (it takes about 10 s)")
    args = ap.parse_args()
    for tool in ("qemu-system-arm", "timeout", "grep", "bash"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is missing (scripts/setup.sh installs qemu-system-arm)", file=sys.stderr)
            return 1
    if not HELLO.exists():
        print(f"bench: {HELLO} is missing (make -C examples)", file=sys.stderr)
        return 1
    script = virsim_script()
    leftovers: list[str] = []
    rows = [
        ("virsim run vs qemu | grep",
         *side_by_side(args.runs, lambda: time_virsim(script), lambda: time_pipeline(False, leftovers))),
        ("virsim run --no-deterministic vs qemu | grep",
         *side_by_side(args.runs, lambda: time_virsim(script, "--no-deterministic"), lambda: time_pipeline(False, leftovers))),
        ("qemu -icount | grep vs qemu | grep",
         *side_by_side(args.runs, lambda: time_pipeline(True, leftovers), lambda: time_pipeline(False, leftovers))),
    ]
    full = None if args.no_full_pipeline else time_full_pipeline()
    qemu = subprocess.run(["qemu-system-arm", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"virsim run benchmark: {HELLO.relative_to(ROOT)} on {BOARD} until {EXPECT!r}; medians of {args.runs} "
          f"runs, wall seconds; {qemu}; {os.cpu_count()} CPUs")
    print(f"{'pair (left side vs baseline)':<46} {'virsim':>8} {'baseline':>9} {'ratio':>7}")
    for name, ours, theirs in rows:
        print(f"{name:<46} {ours:>8.3f} {theirs:>9.3f} {ours / theirs:>6.2f}x")
    print("baseline: the pipeline timed until grep exits with the match; then its QEMU is killed.")
    print("last row: the left side is the raw pipeline with -icount " + ICOUNT + " (no virsim).")
    if full is not None:
        print(f"the plain pipeline left to itself returned after {full:.3f} s: QEMU ignores SIGPIPE and "
              f"runs on until `timeout {PIPELINE_LIMIT}` kills it.")
    if leftovers:
        print(f"bench: processes of the pipeline survived SIGKILL: {leftovers}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
