"""Unicorn called directly, through its C entry points, on the engine's hot paths.

`Uc.reg_read`/`reg_write` of Unicorn's Python binding pick a register class and build ctypes
objects on every call (about 5 µs); exception entry and return touch a dozen registers each, so
an interrupt-heavy firmware spent most of its host time there. `Regs` calls `uc_reg_read` /
`uc_reg_write` (and their batch forms) directly with buffers it keeps (well under 1 µs a
register). `add_block_hook` registers a block hook whose callback is the plain function, without
the binding's three Python frames around it (its cost halves). Where the binding does not expose
its C library, both fall back to the public calls.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

from collections.abc import Callable

from unicorn import UC_HOOK_BLOCK, Uc

try:  # the C library behind Unicorn's Python binding (it keeps it as `uclib`)
    from unicorn.unicorn_py3.unicorn import HOOK_CODE_CFUNC as _HOOK_CODE_CFUNC
    from unicorn.unicorn_py3.unicorn import uclib as _uclib

    _read, _write = _uclib.uc_reg_read, _uclib.uc_reg_write
    _read_batch, _write_batch = _uclib.uc_reg_read_batch, _uclib.uc_reg_write_batch
    _hook_add, _hook_del = _uclib.uc_hook_add, _uclib.uc_hook_del
except (ImportError, AttributeError):  # another binding layout: the slower public calls still work
    _uclib = None


class BlockHook:
    """A block hook on [begin, end] calling `fn(address, size)`; `remove()` takes it off. The
    callback must not raise (it runs inside Unicorn with no binding to catch it)."""

    def __init__(self, uc: Uc, fn: Callable[[int, int], None], begin: int, end: int) -> None:
        self.uc = uc
        if _uclib is None:
            self._handle = uc.hook_add(UC_HOOK_BLOCK, lambda _uc, address, size, ud: fn(address, size),
                                       begin=begin, end=end)
            self._cb = None
            return
        self._cb = _HOOK_CODE_CFUNC(lambda handle, address, size, ud: fn(address, size))  # kept: Unicorn calls it
        handle = ctypes.c_size_t()
        err = _hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_BLOCK, ctypes.cast(self._cb, ctypes.c_void_p), None,
                        begin, end)
        if err:
            raise RuntimeError(f"uc_hook_add failed with Unicorn error {err}")
        self._handle = handle.value

    def remove(self) -> None:
        if self._cb is None:
            self.uc.hook_del(self._handle)
        else:
            _hook_del(self.uc._uch, self._handle)
            self._cb = None


class Regs:
    def __init__(self, uc: Uc) -> None:
        self.uc = uc
        self._value = ctypes.c_uint32()
        self._ref = ctypes.byref(self._value)
        self._batches: dict[tuple[int, ...], tuple[ctypes.Array, ctypes.Array, ctypes.Array]] = {}

    def read(self, reg: int) -> int:
        if _uclib is None:
            return int(self.uc.reg_read(reg))
        _read(self.uc._uch, reg, self._ref)
        return self._value.value

    def write(self, reg: int, value: int) -> None:
        if _uclib is None:
            self.uc.reg_write(reg, value)
            return
        self._value.value = value & 0xFFFFFFFF
        _write(self.uc._uch, reg, self._ref)

    def _batch(self, regs: Sequence[int]) -> tuple[ctypes.Array, ctypes.Array, ctypes.Array]:
        key = tuple(regs)
        found = self._batches.get(key)
        if found is None:
            ids = (ctypes.c_int * len(key))(*key)
            values = (ctypes.c_uint32 * len(key))()
            ptrs = (ctypes.c_void_p * len(key))(*[ctypes.addressof(values) + 4 * i for i in range(len(key))])
            found = self._batches[key] = (ids, values, ptrs)
        return found

    def read_many(self, regs: Sequence[int]) -> list[int]:
        if _uclib is None:
            return [int(self.uc.reg_read(r)) for r in regs]
        ids, values, ptrs = self._batch(regs)
        _read_batch(self.uc._uch, ids, ptrs, len(regs))
        return list(values)

    def write_many(self, regs: Sequence[int], vals: Sequence[int]) -> None:
        if _uclib is None:
            for r, v in zip(regs, vals):
                self.uc.reg_write(r, v)
            return
        ids, values, ptrs = self._batch(regs)
        for i, v in enumerate(vals):
            values[i] = v & 0xFFFFFFFF
        _write_batch(self.uc._uch, ids, ptrs, len(regs))


class CalibrationError(RuntimeError):
    pass


# Unicorn 2.1's CPUARMState (QEMU 5.0's target/arm/cpu.h, struct v7m): where the fields the FP
# extension needs lie, from BASEPRI's bank 1 (what a register write reaches: Unicorn runs the
# M-profile CPU in the Secure bank). basepri[2], control[2], ccr[2], cfsr[2], hfsr, dfsr, sfsr,
# mmfar[2], bfar, sfar, mpu_ctrl[2], exception, primask[2], faultmask[2], aircr, secure,
# csselr[2], scr[2], msplim[2], psplim[2], fpcar[2], fpccr[2], fpdscr[2], cpacr[2], nsacr.
_FROM_BASEPRI_S = {"control_s": 8, "ccr_ns": 12, "ccr_s": 16, "secure": 88, "fpcar_ns": 124, "fpcar_s": 128,
                   "fpccr_ns": 132, "fpccr_s": 136, "fpdscr_ns": 140, "fpdscr_s": 144, "cpacr_ns": 148,
                   "cpacr_s": 152, "nsacr": 156}


def _v7m_offsets() -> dict[str, int]:
    """Offsets of the v7m fields in Unicorn's CPU context (uc_context_save's bytes), found once by
    writing BASEPRI in a scratch Cortex-M4 and checked against the reset values around it; a
    layout that differs fails loudly instead of writing the wrong field."""
    from unicorn import UC_ARCH_ARM, UC_MODE_MCLASS, UC_MODE_THUMB
    from unicorn.arm_const import UC_ARM_REG_BASEPRI, UC_CPU_ARM_CORTEX_M4

    global _OFFSETS
    if _OFFSETS is not None:
        return _OFFSETS
    uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
    uc.ctl_set_cpu_model(UC_CPU_ARM_CORTEX_M4)
    before = bytes(uc.context_save())
    uc.reg_write(UC_ARM_REG_BASEPRI, 0xA0)
    after = bytes(uc.context_save())
    changed = [i for i in range(0, len(after) - 3, 4) if before[i:i + 4] != after[i:i + 4]
               and int.from_bytes(after[i:i + 4], "little") == 0xA0]
    found = {name: changed[0] + delta for name, delta in _FROM_BASEPRI_S.items()} if len(changed) == 1 else {}

    def word(name: str) -> int:
        return int.from_bytes(after[found[name]:found[name] + 4], "little")

    if not found or (word("ccr_ns"), word("ccr_s"), word("secure"), word("fpccr_ns"), word("fpccr_s")) != \
            (0x201, 0x201, 1, 0x80000000, 0xC0000004):
        raise CalibrationError("cannot locate the v7m fields in Unicorn's CPU state: the built-in engine's FP "
                               "extension needs unicorn==2.1.4")
    _OFFSETS = found
    return found


_OFFSETS: dict[str, int] | None = None


class CpuFields:
    """Fields of Unicorn's CPU state no register id reaches (FPCCR, FPDSCR, CPACR, the security
    state), read and written through uc_context_save/restore: a whole-context copy (about 5 KB),
    so for what changes rarely (reset, an SCB write, a snapshot), never per instruction."""

    def __init__(self, uc: Uc) -> None:
        self.uc = uc
        self.offsets = _v7m_offsets()

    def write(self, **fields: int) -> None:
        ctx = self.uc.context_save()
        raw = bytearray(bytes(ctx))
        for name, value in fields.items():
            off = self.offsets[name]
            raw[off:off + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")
        ctx.__setstate__((bytes(raw), ctx.size, ctx.arch, ctx.mode))
        self.uc.context_restore(ctx)

    def read(self, name: str) -> int:
        raw = bytes(self.uc.context_save())
        off = self.offsets[name]
        return int.from_bytes(raw[off:off + 4], "little")
