"""Exact instruction counts out of Unicorn: where `emu_start(count=N)` keeps its counter.

Unicorn counts instructions for `emu_start(count=N)` in two fields of its engine struct (a running
counter and the limit) but has no API to read the counter when emulation stops early (a breakpoint,
WFI, an exception return, a fault), nor to say "stop after this instruction" from inside a memory
hook (`emu_stop()` there aborts and later re-executes the access). Both are what an
instruction-exact engine needs, so this module finds the two fields once per process by running a
known number of instructions and looking for the values, checks the find with a second count, and
then reads/writes them directly. If the layout ever changes (virsim pins unicorn), calibration fails
loudly instead of the engine counting wrong.
"""

from __future__ import annotations

import ctypes
import struct
from functools import lru_cache

from unicorn import UC_ARCH_ARM, UC_MODE_MCLASS, UC_MODE_THUMB, Uc

_SCAN_BYTES = 0x1000
_LOOP = bytes.fromhex("0130fde7")  # adds r0, #1 ; b .-2  (Thumb)


class CalibrationError(RuntimeError):
    pass


def _handle(uc: Uc) -> int:
    h = uc._uch  # the uc_engine pointer the bindings hold
    return int(h.value if hasattr(h, "value") else h)


@lru_cache(maxsize=1)
def _offsets() -> tuple[int, int]:
    """(offset of the running counter, offset of the limit) in Unicorn's engine struct."""
    uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
    uc.mem_map(0, 0x1000)
    uc.mem_write(0x100, _LOOP)

    def candidates(count: int) -> set[int]:
        uc.emu_start(0x101, 0xFFFFFFFF, count=count)
        raw = ctypes.string_at(_handle(uc), _SCAN_BYTES)
        return {off for off in range(0, _SCAN_BYTES - 16, 8)
                if struct.unpack_from("<QQ", raw, off) == (count + 1, count)}

    found = candidates(123_457) & candidates(98_765)
    if len(found) != 1:
        raise CalibrationError(f"cannot locate Unicorn's instruction counter (candidates: {sorted(found)}); "
                               "the built-in engine needs unicorn==2.1.4")
    off = found.pop()
    return off, off + 8


class InstructionCounter:
    """Reads how many instructions the last (or current) `emu_start(count=N)` executed."""

    def __init__(self, uc: Uc) -> None:
        counter_off, limit_off = _offsets()
        base = _handle(uc)
        self._counter = ctypes.c_uint64.from_address(base + counter_off)
        self._limit = ctypes.c_uint64.from_address(base + limit_off)
        self.stop_before = False  # a hook stopped emulation before the current instruction ran

    def begin(self) -> None:
        self.stop_before = False

    def in_hook(self) -> int:
        """Inside a hook: instructions completed before the current one in this emu_start."""
        return self._counter.value - 1

    def in_block_hook(self) -> int:
        """Inside a block hook: instructions completed before the block (its first one is not
        counted yet, unlike in a code or memory hook)."""
        return self._counter.value

    def stop_after_current(self) -> None:
        """Inside a hook: let the current instruction finish, then stop (exact, no re-execution)."""
        self._limit.value = self._counter.value

    def executed(self) -> int:
        """After emu_start returned: instructions it executed."""
        counted, limit = self._counter.value, self._limit.value
        if counted > limit or self.stop_before:
            return max(counted - 1, 0)  # the last counted instruction was not executed
        return counted

    def overshot(self) -> bool:
        """The last stop came from the count limit (reached, or lowered by stop_after_current), not
        from the CPU itself (WFI/WFE end emulation without running past the limit)."""
        return self._counter.value > self._limit.value

    @staticmethod
    def calibrate() -> None:
        _offsets()
