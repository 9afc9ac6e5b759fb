"""Console logs: reading a session's log by byte offset, and tailing it onto the live event stream.

The backend appends console bytes to the log file; the log is the record. Every console event
carries the byte offset of its first byte, so a client that reads history with `console.read`
and then follows events can drop overlap and fetch any gap: nothing duplicated, nothing lost.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

# A single event carries at most this much; a burst becomes several events.
MAX_EVENT_BYTES = 64 * 1024


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def read_log(path: Path, offset: int, limit: int, tail: int | None = None) -> tuple[int, bytes, int]:
    """(start offset, bytes, current size) of the log, from `offset` or the last `tail` bytes."""
    size = log_size(path)
    start = max(0, size - tail) if tail is not None else min(offset, size)
    if start >= size or limit == 0:
        return start, b"", size
    with path.open("rb") as fh:
        fh.seek(start)
        return start, fh.read(min(limit, size - start)), size


class ConsoleTail:
    """Publishes what was appended to one log since the last pump."""

    def __init__(self, path: Path, publish: Callable[[int, bytes], None], from_start: bool = False) -> None:
        self.path = path
        self.publish = publish
        self.offset = 0 if from_start else log_size(path)

    def pump(self) -> int:
        """Publish new bytes; return how many."""
        size = log_size(self.path)
        if size < self.offset:  # truncated by someone: start over rather than stall
            self.offset = 0
        if size == self.offset:
            return 0
        sent = 0
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            while self.offset < size:
                chunk = fh.read(min(MAX_EVENT_BYTES, size - self.offset))
                if not chunk:
                    break
                self.publish(self.offset, chunk)
                self.offset += len(chunk)
                sent += len(chunk)
        return sent


def ensure_log(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
    os.close(fd)
