"""QEMU record/replay: the `-icount rr=...` arguments, the start-of-recording snapshot and the
console of a replay, which must not show what reverse execution re-runs.

QEMU records an execution with `-icount shift=auto,rr=record,rrfile=F,rrsnapshot=init`: every
non-deterministic input (console bytes, timers' host time) goes into F, and `init`, a snapshot
of the machine at instruction 0, into the session's qcow2. `rr=replay` with the same file and
snapshot reproduces the execution instruction for instruction, and its gdb stub then executes
backwards: reverse-stepi / reverse-continue load the nearest earlier snapshot with an
instruction count (here only `init`: `prepare_replay_disk` strips every other one) and re-run
forward to the target (QEMU's replay/replay-debugging.c).

Re-running prints the console output again from the snapshot on. `ReplayConsole` keeps the
session's console log a single copy of the output: QEMU's chardev logs to `console.raw`, and
only output beyond what the log already shows is appended to `console.log`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

START_SNAPSHOT = "init"  # the rrsnapshot: the machine at instruction 0 of the recording
RAW_CONSOLE = "console.raw"  # what QEMU printed during a replay, re-runs included
LOST_TRACK = (b"\n[virsim: the replay printed something other than the recorded output after reverse "
              b"execution; the console shows QEMU's output as it comes from here on]\n")


def icount_args(record: Path | None, replay: Path | None) -> str:
    """The -icount option of a recording or replaying QEMU.

    shift=auto, not shift=0: with shift=0 a busy guest starves the main loop under rr=record
    and QMP stops answering (field notes); the replay reproduces the recorded clock either way."""
    mode, path = ("record", record) if record is not None else ("replay", replay)
    return f"shift=auto,rr={mode},rrfile={path},rrsnapshot={START_SNAPSHOT}"


def prepare_replay_disk(recording_disk: Path, disk: Path) -> None:
    """Copy the recording's qcow2 (it holds `init`) for a replay, keeping only `init`: QEMU seeks
    from any snapshot with an instruction count, and the console accounting assumes `init`."""
    if disk.exists():
        return
    shutil.copyfile(recording_disk, disk)
    listing = subprocess.run(["qemu-img", "snapshot", "-l", str(disk)], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    for line in listing.splitlines()[2:]:
        parts = line.split()
        if len(parts) >= 2 and parts[1] != START_SNAPSHOT:
            subprocess.run(["qemu-img", "snapshot", "-d", parts[1], str(disk)], capture_output=True,
                           timeout=30, check=True)


def prefix_suffix_overlap(shown: bytes, rerun: bytes) -> int:
    """Length of the longest suffix of `rerun` that is a prefix of `shown` (Knuth-Morris-Pratt).

    Each reverse command makes QEMU re-run from `init` one or more times, so what it prints is
    shown[0:a1] + shown[0:a2] + ... ; the last re-run ends where the CPU now is."""
    if not shown or not rerun:
        return 0
    fail = [0] * len(shown)
    k = 0
    for i in range(1, len(shown)):
        while k and shown[i] != shown[k]:
            k = fail[k - 1]
        if shown[i] == shown[k]:
            k += 1
        fail[i] = k
    k = 0
    for byte in rerun:
        while k and (k == len(shown) or byte != shown[k]):
            k = fail[k - 1]
        if k < len(shown) and byte == shown[k]:
            k += 1
    return k


class ReplayConsole:
    """Turns QEMU's raw replay console (`console.raw`) into the session's console log.

    `pos` is where the replayed CPU is in the output already shown. Forward execution below the
    end of the log re-prints bytes the log has (they are checked, not written); beyond it, bytes
    are new and appended. Between reverse_begin() and reverse_end() QEMU re-runs from `init`;
    afterwards `pos` is the length of that last re-run. If a re-print ever differs from the log,
    the log says so (LOST_TRACK) and shows QEMU's output as is from there: never silently."""

    def __init__(self, raw: Path, log: Path) -> None:
        self.raw = raw
        self.log = log
        self.shown = bytearray(log.read_bytes() if log.exists() else b"")
        self.pos = len(self.shown)
        self.raw_offset = raw.stat().st_size if raw.exists() else 0
        self.rerun: bytearray | None = None  # raw output of the reverse command in progress

    def pump(self) -> None:
        if not self.raw.exists():
            return
        with self.raw.open("rb") as f:
            f.seek(self.raw_offset)
            data = f.read()
        if not data:
            return
        self.raw_offset += len(data)
        if self.rerun is not None:
            self.rerun += data
        else:
            self._forward(data)

    def _forward(self, data: bytes) -> None:
        again = min(len(data), len(self.shown) - self.pos)
        if again and data[:again] != self.shown[self.pos:self.pos + again]:
            self._append(LOST_TRACK + data)
            self.pos = len(self.shown)
            return
        self.pos += again
        if again < len(data):
            self._append(data[again:])
            self.pos = len(self.shown)

    def _append(self, data: bytes) -> None:
        with self.log.open("ab") as f:
            f.write(data)
        self.shown += data

    def reverse_begin(self) -> None:
        self.pump()
        self.rerun = bytearray()

    def reverse_end(self) -> None:
        if self.rerun is None:
            return
        self.pump()
        rerun, self.rerun = bytes(self.rerun), None
        # Every reverse command that moves re-runs from `init`; one that prints nothing ended
        # before the first byte (and one that cannot move is at instruction 0): pos 0 either way.
        self.pos = prefix_suffix_overlap(bytes(self.shown), rerun)
