#!/usr/bin/env python3
"""Snapshot benchmark: what `virsim snapshot` costs on top of the emulators' own save and load.

The target is examples/hello/hello.elf on mps2-an385, running (it prints "tick N" from a busy loop
forever). Each pair is measured alternately in one run (virsim, then its baseline, --runs times,
after one warm-up of each) and reported as medians and their ratio (virsim / baseline).

QEMU (backend qemu, --deterministic), against a raw QEMU of the same shape started by this script
(a 1 MiB qcow2 on `-drive if=none`, `-icount shift=0,align=off,sleep=off`, QMP on a Unix socket):
QEMU's QMP socket serves one client at a time and the daemon holds the session's, so the raw side
cannot be the session itself.

  a. `snapshot create` (fresh name) vs HMP `savevm NAME` over QMP; each is then deleted
     (`snapshot delete` vs `delvm NAME`, also timed) so the qcow2 holds one snapshot at most;
  b. `snapshot restore` of one snapshot vs `loadvm` of one, both VMs running (loadvm stops and
     restarts the VM itself; virsim stops, loads, writes a console marker, continues).

While one side is timed the other side's emulator is stopped (session pause / QMP stop), so one
busy vCPU at a time competes with the daemon and this script for the CPUs.

Built-in engine (backend builtin) against the same machine in this process (the floor):

  c. `snapshot create` vs `Machine.save_state()`, and vs `save_state()` plus writing the .vsnap as
     the engine does (JSON state, zlib memory, checksums, fsync): the rest is IPC and bookkeeping;
  d. `snapshot restore` vs `Machine.load_state()`, and vs reading that .vsnap plus `load_state()`.

  e. `snapshot export` (builtin vs qemu, both via virsim, both sessions paused) and the sizes:
     SnapshotInfo.size (builtin: the .vsnap file; qemu: the VM state in the qcow2), the raw VM
     state size, the qcow2 files, the exported files.

Runs in a private VIRSIM_HOME under /tmp with its own daemon, and stops every process it started.
Not a pass/fail test. Usage: python benchmarks/bench_snapshots.py [--runs 30]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from bench_builtin import new_machine
from bench_foundation import BOARD, HELLO, finish, qemu_version_line
from common import qemu_binary, side_by_side

ICOUNT = "shift=0,align=off,sleep=off"
SNAPSHOT_DISK = "vm.qcow2"  # what the qemu backend calls it in the session's directory
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def vm_size(info_snapshots: str, tag: str) -> int:
    """The VM SIZE column of `info snapshots` for `tag`, in bytes (as the qemu backend parses it)."""
    for line in info_snapshots.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == tag:
            return int(float(parts[2]) * UNITS.get(parts[3], 1))
    raise RuntimeError(f"no snapshot {tag!r} in: {info_snapshots!r}")


def kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB"


# ------------------------------------------------------------------------------- the raw QEMU


class RawQemu:
    """qemu-system-arm started by hand in the shape of a deterministic virsim session, with QMP."""

    def __init__(self, qemu: str, workdir: Path, own: list[subprocess.Popen[bytes]]) -> None:
        from virsim.backends.qemu.qmp import QMPClient

        workdir.mkdir()
        self.disk = workdir / SNAPSHOT_DISK
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(self.disk), "1M"], check=True,
                       capture_output=True, timeout=30)
        sock = workdir / "qmp.sock"
        self.own = own
        self.proc = subprocess.Popen(
            [qemu, "-M", BOARD, "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "null",
             "-qmp", f"unix:{sock},server=on,wait=off",
             "-drive", f"if=none,format=qcow2,file={self.disk},id=snap",
             "-icount", ICOUNT, "-kernel", str(HELLO)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        own.append(self.proc)
        self.qmp = QMPClient(sock)
        self.qmp.connect(time.monotonic() + 5)

    def hmp(self, command_line: str) -> None:
        reply = self.qmp.hmp(command_line).strip()
        if reply:  # savevm/loadvm/delvm say nothing when they succeed
            raise RuntimeError(f"raw QEMU {command_line!r}: {reply}")

    def info_snapshots(self) -> str:
        return self.qmp.hmp("info snapshots")

    def stop(self) -> None:
        self.qmp.execute("stop")

    def cont(self) -> None:
        self.qmp.execute("cont")

    def close(self) -> None:
        self.qmp.close()
        self.proc.kill()
        self.proc.wait()
        self.own.remove(self.proc)


# ------------------------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=30, help="repetitions per measurement (median reported)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not HELLO.exists():
        sys.exit(f"bench: {HELLO} is missing (make -C examples)")
    qemu = qemu_binary()
    if shutil.which("qemu-img") is None:
        sys.exit("bench: qemu-img is not installed (sudo apt-get install -y qemu-utils)")

    home = Path(tempfile.mkdtemp(prefix="vsb-", dir="/tmp"))
    os.environ["VIRSIM_HOME"] = str(home)
    os.environ.pop("XDG_RUNTIME_DIR", None)
    # SIGTERM should clean up like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from virsim import snapshot
    from virsim.client import Client
    from virsim.paths import get_paths

    own: list[subprocess.Popen[bytes]] = []
    rows: list[tuple[str, float, float]] = []  # (name, virsim ms, baseline ms)
    notes: list[str] = []
    names = (f"t{i}" for i in itertools.count())  # snapshot names are unique per session
    client = None
    raw = None
    try:
        paths = get_paths()
        client = Client(paths, timeout=60).connect()  # starts this home's daemon

        # ------------------------------------------------------------------ QEMU: virsim vs raw QMP
        q = client.session_create(BOARD, HELLO, backend="qemu", deterministic=True)
        raw = RawQemu(qemu, home / "raw", own)
        qdel: dict[str, list[float]] = {"virsim": [], "raw": []}

        def on_virsim(measure: Callable[[], float]) -> float:
            raw.stop()
            try:
                return measure()
            finally:
                raw.cont()

        def on_raw(measure: Callable[[], float]) -> float:
            client.session("pause", q.id)
            try:
                return measure()
            finally:
                client.session("resume", q.id)

        def q_save_virsim() -> float:
            name = next(names)
            t = timed(lambda: client.snapshot("create", q.id, name=name))
            qdel["virsim"].append(timed(lambda: client.snapshot("delete", q.id, snapshot=name)))
            return t

        def q_save_raw() -> float:
            name = next(names)
            t = timed(lambda: raw.hmp(f"savevm {name}"))
            qdel["raw"].append(timed(lambda: raw.hmp(f"delvm {name}")))
            return t

        ours, base = side_by_side(args.runs, lambda: on_virsim(q_save_virsim), lambda: on_raw(q_save_raw))
        rows.append(("qemu: snapshot create vs savevm", ours, base))
        rows.append(("qemu: snapshot delete vs delvm (after each)", statistics.median(qdel["virsim"][1:]),
                     statistics.median(qdel["raw"][1:])))

        q_base = client.snapshot("create", q.id, name="base")
        raw.hmp("savevm base")
        ours, base = side_by_side(
            args.runs, lambda: on_virsim(lambda: timed(lambda: client.snapshot("restore", q.id, snapshot="base"))),
            lambda: on_raw(lambda: timed(lambda: raw.hmp("loadvm base"))))
        rows.append(("qemu: snapshot restore vs loadvm", ours, base))

        q_disk = paths.session_dir(q.id) / SNAPSHOT_DISK
        raw_vm_size = vm_size(raw.info_snapshots(), "base")
        notes.append(f"qemu VM state: virsim SnapshotInfo.size {kib(q_base.size)} (its .vsnap holds only the tag: "
                     f"{Path(q_base.path).stat().st_size} B), raw `info snapshots` {kib(raw_vm_size)}; "
                     f"qcow2 files now (1 snapshot, {args.runs + 1} saved and deleted before): virsim "
                     f"{kib(q_disk.stat().st_size)}, raw {kib(raw.disk.stat().st_size)}")
        raw.close()
        raw = None

        # ----------------------------------------------------- builtin: virsim vs the machine in-process
        client.session("pause", q.id)  # one busy emulator at a time
        b = client.session_create(BOARD, HELLO, backend="builtin", deterministic=True)
        m, _ = new_machine()
        m.run(5_000_000)  # into the busy loop, past the first console bytes
        b_base = client.snapshot("create", b.id, name="base")
        meta, sections = snapshot.read(Path(b_base.path))
        for key in ("_offset", "sections"):
            meta.pop(key, None)
        inproc = home / "inproc"
        inproc.mkdir()
        vsnap = inproc / "base.vsnap"
        saved = m.save_state()
        bdel: list[float] = []

        def b_save_virsim() -> float:
            name = next(names)
            t = timed(lambda: client.snapshot("create", b.id, name=name))
            bdel.append(timed(lambda: client.snapshot("delete", b.id, snapshot=name)))
            return t

        def in_process(measure: Callable[[], float]) -> float:
            client.session("pause", b.id)  # the engine's loop would take a CPU from this process
            try:
                return measure()
            finally:
                client.session("resume", b.id)

        def engine_save() -> None:  # what the engine's snapshot_save does, without the request
            state, memory = m.save_state()
            snapshot.write(vsnap, meta, {"state": json.dumps(state).encode(), "memory": zlib.compress(memory, 1)})

        def engine_load() -> None:  # and its snapshot_load
            _, secs = snapshot.read(vsnap)
            m.load_state(json.loads(secs["state"]), zlib.decompress(secs["memory"]))

        ours, base = side_by_side(args.runs, b_save_virsim, lambda: in_process(lambda: timed(m.save_state)))
        rows.append(("builtin: snapshot create vs Machine.save_state()", ours, base))
        ours, base = side_by_side(args.runs, b_save_virsim, lambda: in_process(lambda: timed(engine_save)))
        rows.append(("builtin: snapshot create vs save_state + .vsnap write", ours, base))
        del bdel[args.runs + 1], bdel[0]  # the two warm-ups
        notes.append(f"builtin snapshot delete (after each create): {statistics.median(bdel) * 1e3:.2f} ms "
                     f"(median of {len(bdel)}); the .vsnap and its row, nothing in the engine")

        def restore_b() -> float:
            return timed(lambda: client.snapshot("restore", b.id, snapshot="base"))

        ours, base = side_by_side(args.runs, restore_b, lambda: in_process(lambda: timed(lambda: m.load_state(*saved))))
        rows.append(("builtin: snapshot restore vs Machine.load_state()", ours, base))
        engine_save()
        ours, base = side_by_side(args.runs, restore_b, lambda: in_process(lambda: timed(engine_load)))
        rows.append(("builtin: snapshot restore vs .vsnap read + load_state", ours, base))

        state_len, memory_len = len(sections["state"]), len(sections["memory"])
        notes.append(f"builtin: SnapshotInfo.size {kib(b_base.size)} (.vsnap: state JSON {kib(state_len)}, memory "
                     f"{kib(memory_len)} zlib-1 of {kib(len(saved[1]))} RAM, header "
                     f"{kib(b_base.size - state_len - memory_len)})")

        # --------------------------------------------------------------- export, both through virsim
        client.session("pause", b.id)
        exports = home / "exports"
        exports.mkdir()
        export_sizes: dict[str, list[int]] = {"builtin": [], "qemu": []}

        def export(sid: str, backend: str) -> float:
            out = exports / f"{next(names)}.vsnap"
            t0 = time.perf_counter()
            info = client.snapshot("export", sid, snapshot="base", out=str(out))
            t = time.perf_counter() - t0
            export_sizes[backend].append(info.size)
            out.unlink()
            return t

        ex_b, ex_q = side_by_side(args.runs, lambda: export(b.id, "builtin"), lambda: export(q.id, "qemu"))
        sizes = {k: statistics.median(v) for k, v in export_sizes.items()}
        notes.append(f"exported files: builtin {kib(sizes['builtin'])} (the .vsnap plus the program image), "
                     f"qemu {kib(sizes['qemu'])} (the whole qcow2, {kib(q_disk.stat().st_size)}, plus the program)")
        for sid in (q.id, b.id):
            client.session_delete(sid, purge=True)
    finally:
        if raw is not None:
            raw.close()
        finish(client, home, own)

    version = qemu_version_line(qemu)
    print(f"snapshot benchmark: {HELLO.relative_to(HELLO.parents[2])} on {BOARD}, running; medians of {args.runs} "
          f"runs; {version}; unicorn {metadata.version('unicorn')}; Python {platform.python_version()}; "
          f"{os.cpu_count()} CPUs")
    width = max(len(name) for name, *_ in rows)
    print(f"{'measurement':<{width}}  {'unit':>4}  {'virsim':>8}  {'baseline':>8}  {'ratio':>7}")
    for name, ours, base in rows:
        print(f"{name:<{width}}  {'ms':>4}  {ours * 1e3:>8.2f}  {base * 1e3:>8.2f}  {ours / base:>6.2f}x")
    print(f"{'snapshot export (both via virsim)':<{width}}  {'unit':>4}  {'builtin':>8}  {'qemu':>8}  {'ratio':>7}")
    print(f"{'export of the base snapshot':<{width}}  {'ms':>4}  {ex_b * 1e3:>8.2f}  {ex_q * 1e3:>8.2f}  "
          f"{ex_b / ex_q:>6.2f}x")
    print("ratios: virsim / baseline (export: builtin / qemu); target for the qemu create and restore rows: <= 1.5x.")
    print("qemu baseline: a raw qemu-system-arm of the same shape (qcow2 drive, -icount), HMP over its QMP socket;")
    print("  the other side's emulator is stopped while one side is timed. builtin baseline: the same machine "
          "in this process.")
    for note in notes:
        print(f"  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
