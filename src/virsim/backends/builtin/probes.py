"""Coverage and trace collection in the built-in engine: Unicorn hooks that exist only while on.

Coverage counts how often each translated block (start, size) is entered (UC_HOOK_BLOCK). Stopping
it removes the hook and keeps the counts (for reports and exports); starting it again adds to them,
and only a reset zeroes them. A trace
records (cycle, address, size) per block — or per instruction at level "instruction"
(UC_HOOK_CODE) — into a flat array, up to a limit, optionally only inside address ranges. At level
"function" only blocks that change function are kept (the caller passes the functions' start
addresses), so the limit counts calls and returns, not loop iterations. With
neither on, no hook is installed and the engine runs at full speed; turning one on or off flushes
Unicorn's translation cache so already translated code picks up (or drops) the hook.

While history re-executes for reverse debugging (`suspended`), nothing is counted: that code ran
once already. The trace file (`dump`) is one JSON header line, then little-endian records
`<QII` (cycle, address, size); the daemon symbolises it (virsim.analysis.trace).
"""

from __future__ import annotations

import bisect
from array import array
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE

from virsim.backends.base import TRACE_RECORD, trace_header

if TYPE_CHECKING:
    from unicorn import Uc

    from virsim.backends.builtin.machine import Machine

LEVELS = ("block", "instruction", "function")


class Probes:
    def __init__(self, machine: Machine) -> None:
        self.m = machine
        self.counts: dict[tuple[int, int], int] = {}  # coverage: times each block was entered
        self.counting = False  # coverage on now (the block hook adds to counts)
        self.events: array | None = None  # trace: cycle, address, size, cycle, ...
        self.level = "block"
        self.ranges: list[tuple[int, int]] = []
        self.limit = 0
        self.truncated = False
        self.tracing = False  # recording events now
        self.suspended = False
        self._block_hook: int | None = None
        self._code_hook: int | None = None

    # ------------------------------------------------------------------------------ coverage
    def coverage_start(self) -> None:
        self.counting = True
        self._hooks()

    def coverage_stop(self) -> None:
        """Stop counting (the block hook goes, and with it the cost); the counts stay."""
        self.counting = False
        self._hooks()

    def coverage_reset(self) -> None:
        self.counts = {}

    def coverage_blocks(self) -> list[list[int]]:
        return [[start, size, count] for (start, size), count in sorted(self.counts.items())]

    # --------------------------------------------------------------------------------- trace
    def trace_start(self, level: str, ranges: list[tuple[int, int]], limit: int,
                    functions: list[int] | None = None) -> None:
        if level not in LEVELS:
            raise ValueError(f"trace level {level!r}: one of {', '.join(LEVELS)}")
        self.level, self.ranges, self.limit = level, list(ranges), max(int(limit), 1)
        self.functions = sorted(functions or [])
        self._last_function = -2
        self.events = array("Q")
        self.truncated = False
        self.tracing = True
        self._hooks()

    def trace_stop(self) -> dict[str, Any]:
        """Stop recording; what was recorded stays for trace_dump until the next trace_start."""
        self.tracing = False
        self._hooks()
        return self.trace_info()

    def trace_info(self) -> dict[str, Any]:
        n = len(self.events) // 3 if self.events is not None else 0
        return {"level": self.level, "events": n, "truncated": self.truncated, "limit": self.limit,
                "active": self.tracing}

    def trace_dump(self, path: Path) -> dict[str, Any]:
        """Write the trace recorded so far (recording goes on if it is on)."""
        info = self.trace_info()
        flat = (self.events if self.events is not None else array("Q")).tolist()
        with path.open("wb") as f:
            f.write(trace_header(info, self.m.frequency, self.ranges))
            f.write(b"".join(TRACE_RECORD.pack(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)))
        return info

    # --------------------------------------------------------------------------------- hooks
    def _hooks(self) -> None:
        """Install exactly the hooks that what is on needs; none when nothing is."""
        uc = self.m.uc
        want_block = self.counting or (self.tracing and self.level != "instruction")
        want_code = self.tracing and self.level == "instruction"
        changed = False
        if want_block != (self._block_hook is not None):
            if want_block:
                self._block_hook = uc.hook_add(UC_HOOK_BLOCK, self._on_block, begin=1, end=0)
            else:
                uc.hook_del(self._block_hook)
                self._block_hook = None
            changed = True
        if want_code != (self._code_hook is not None):
            if want_code:
                self._code_hook = uc.hook_add(UC_HOOK_CODE, self._on_code, begin=1, end=0)
            else:
                uc.hook_del(self._code_hook)
                self._code_hook = None
            changed = True
        if changed:
            uc.ctl_flush_tb()  # code translated before keeps (or lacks) the hook until retranslated

    functions: list[int] = []
    _last_function = -2

    def _record(self, address: int, size: int, now: int) -> None:
        if self.ranges and not any(lo <= address < hi for lo, hi in self.ranges):
            return
        if self.level == "function":
            index = bisect.bisect_right(self.functions, address) - 1
            entry = index >= 0 and self.functions[index] == address
            if index == self._last_function and not entry:
                return  # still in the same function: not a call or a return
            self._last_function = index
        events = self.events
        assert events is not None
        if events and events[-1] == size and events[-2] == address and events[-3] == now:
            return  # the same block entered again at the same cycle: a slice boundary, not an execution
        if len(events) >= 3 * self.limit:
            self.truncated = True
            self.tracing = False  # full: keep what we have (the hooks go at the next _hooks())
            return
        events.append(now)
        events.append(address)
        events.append(size)

    def _on_block(self, uc: Uc, address: int, size: int, ud: Any) -> None:
        if self.suspended:
            return
        if self.counting:
            counts = self.counts
            key = (address, size)
            counts[key] = counts.get(key, 0) + 1
        if self.tracing and self.level != "instruction":
            self._record(address, size, self.m.cycles + self.m.counter.in_block_hook())

    def _on_code(self, uc: Uc, address: int, size: int, ud: Any) -> None:
        if self.tracing and not self.suspended:
            self._record(address, size, self.m.now())
