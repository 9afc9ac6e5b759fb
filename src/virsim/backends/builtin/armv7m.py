"""The ARMv7-M parts Unicorn leaves out: the exception model, NVIC, SCB and SysTick.

Unicorn executes Thumb-2 instructions but takes no exceptions of its own: an SVC, a `bx` to an
EXC_RETURN value or an undefined instruction only reach an interrupt hook, and the System Control
Space (0xE000E000) is unmapped. This module is that missing half, following the ARMv7-M
Architecture Reference Manual (B1.5): priorities with PRIGROUP, PRIMASK/BASEPRI/FAULTMASK boosting,
exception entry with the 8-word frame (8-byte aligned, xPSR bit 9 when realigned), every
EXC_RETURN form (handler/MSP, thread/MSP, thread/PSP, and with the FP extension the same three with
the 26-word extended frame), tail-chaining, fault escalation to HardFault and lockup. `Scs` is the
memory-mapped face (NVIC, SCB, SysTick, STIR). `Fpu` is a Cortex-M4's FP extension: CPACR, FPCCR,
FPCAR, FPDSCR, MVFR0/1, CONTROL.FPCA and the extended frame (Unicorn runs the FP instructions; its
lazy state preservation does not store, so the FP registers are stacked at exception entry
whatever FPCCR.LSPEN says).

Time is the machine's cycle counter; SysTick counts it (or the reference clock) exactly and tells
the machine when its next wrap is due, so the machine can end an execution slice there.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from unicorn import UcError
from unicorn.arm_const import (
    UC_ARM_REG_BASEPRI,
    UC_ARM_REG_CONTROL,
    UC_ARM_REG_FAULTMASK,
    UC_ARM_REG_LR,
    UC_ARM_REG_MSP,
    UC_ARM_REG_PC,
    UC_ARM_REG_PRIMASK,
    UC_ARM_REG_PSP,
    UC_ARM_REG_R0,
    UC_ARM_REG_R1,
    UC_ARM_REG_R2,
    UC_ARM_REG_R3,
    UC_ARM_REG_R12,
    UC_ARM_REG_XPSR,
)

from unicorn.arm_const import UC_ARM_REG_FPSCR, UC_ARM_REG_S0

from virsim.backends.builtin.direct import CpuFields, Regs

if TYPE_CHECKING:
    from virsim.backends.builtin.machine import Machine

RESET, NMI, HARDFAULT, MEMMANAGE, BUSFAULT, USAGEFAULT = 1, 2, 3, 4, 5, 6
FAULT_HANDLERS = frozenset({HARDFAULT, MEMMANAGE, BUSFAULT, USAGEFAULT})
SVCALL, DEBUGMON, PENDSV, SYSTICK = 11, 12, 14, 15
FIRST_IRQ = 16
EXCEPTION_NAMES = {RESET: "Reset", NMI: "NMI", HARDFAULT: "HardFault", MEMMANAGE: "MemManage",
                   BUSFAULT: "BusFault", USAGEFAULT: "UsageFault", SVCALL: "SVCall", DEBUGMON: "DebugMonitor",
                   PENDSV: "PendSV", SYSTICK: "SysTick"}
EXC_RETURN_FORMS = {0xFFFFFFF1: (False, False), 0xFFFFFFF9: (True, False), 0xFFFFFFFD: (True, True)}
# With the FP extension: the same returns to the extended frame (EXC_RETURN bit 4 clear).
FP_EXC_RETURN_FORMS = {value & ~0x10: form for value, form in EXC_RETURN_FORMS.items()}
CONTROL_FPCA = 1 << 2
# v8-M's CONTROL.SFPA: Unicorn (its CPU in Secure state) sets it with FPCA and starts a new FP
# context when either is clear, so virsim sets and clears both together: an MRS of CONTROL then
# shows bit 3 with FPCA, the one visible difference.
CONTROL_SFPA = 1 << 3
CONTROL_FP = CONTROL_FPCA | CONTROL_SFPA
FPCCR_ASPEN, FPCCR_LSPEN, FPCCR_S = 1 << 31, 1 << 30, 1 << 2

# CFSR bits (MMFSR | BFSR << 8 | UFSR << 16) and HFSR bits.
CFSR_IACCVIOL = 1 << 0
DFSR_BKPT = 1 << 1
CFSR_IBUSERR, CFSR_PRECISERR, CFSR_STKERR, CFSR_BFARVALID = 1 << 8, 1 << 9, 1 << 12, 1 << 15
CFSR_UNDEFINSTR, CFSR_INVSTATE, CFSR_INVPC, CFSR_NOCP, CFSR_DIVBYZERO = 1 << 16, 1 << 17, 1 << 18, 1 << 19, 1 << 25
HFSR_VECTTBL, HFSR_FORCED, HFSR_DEBUGEVT = 1 << 1, 1 << 30, 1 << 31
_SHCSR_ENABLE = {MEMMANAGE: 1 << 16, BUSFAULT: 1 << 17, USAGEFAULT: 1 << 18}
_FRAME_REGS = (UC_ARM_REG_R0, UC_ARM_REG_R1, UC_ARM_REG_R2, UC_ARM_REG_R3, UC_ARM_REG_R12, UC_ARM_REG_LR)
_ENTRY_REGS = _FRAME_REGS + (UC_ARM_REG_PC, UC_ARM_REG_XPSR, UC_ARM_REG_CONTROL)
_MASK_REGS = (UC_ARM_REG_PRIMASK, UC_ARM_REG_BASEPRI, UC_ARM_REG_FAULTMASK)
# QEMU's values (r0p1 M3, r0p0 M4): the oracle of the conformance suite (tests/conformance/scbid.c).
_CPUID = {"cortex-m3": 0x410FC231, "cortex-m4": 0x410FC240}
# ID_PFR0..ID_ISAR4 (0xE000ED40-0xED70) as QEMU reports them for both.
_ID_REGS = {0xD40: 0x00000030, 0xD44: 0x00000200, 0xD48: 0x00100000, 0xD4C: 0, 0xD50: 0x00000030, 0xD54: 0,
            0xD58: 0, 0xD5C: 0, 0xD60: 0x01141110, 0xD64: 0x02111000, 0xD68: 0x21112231, 0xD6C: 0x01111110,
            0xD70: 0x01310102}
# The SCS peripheral and component IDs (0xE000EFD0-0xEFFC: PID4-7, PID0-3, CID0-3).
_SCS_IDS = (0, 0, 0, 0, 0x00, 0xB0, 0x1B, 0x00, 0x0D, 0xE0, 0x05, 0xB1)
# Exceptions whose SHPR byte is reserved (RAZ/WI): 7-10 and 13.
_RESERVED_SHPR = frozenset({7, 8, 9, 10, 13})


class Fpu:
    """A Cortex-M4's FP extension (ARMv7-M B1.5.6-7, B3.2.20-24): its SCB registers, and the FP part
    of the exception frame.

    Unicorn executes the FP instructions and, with FPCCR.ASPEN, sets CONTROL.FPCA at the first one
    (and starts a new FP context from FPDSCR in a handler, as the architecture says). An exception
    taken with FPCA set gets the extended frame: with LSPEN, lazily, as on the hardware: FPCCR
    records the interrupted context (LSPACT, USER, THREAD, the RDY bits) and FPCAR the frame's FP
    part, and Unicorn's own lazy state preservation stores S0-S15 and FPSCR there at the handler's
    first FP instruction and clears LSPACT; without LSPEN they are stacked at once. What no register
    id of Unicorn reaches (FPCCR, FPCAR, FPDSCR, and full FPU access for that store) is written into
    its CPU state through `CpuFields`. CPACR is virsim's alone: Unicorn does not check it, so an FP
    instruction with the FPU disabled runs instead of taking a NOCP UsageFault.
    """

    MVFR0, MVFR1 = 0x10110021, 0x11000011  # a Cortex-M4F's, as QEMU reports them
    LAZY_STATE = 0x17B  # FPCCR's MONRDY, BFRDY, MMRDY, HFRDY, THREAD, USER, LSPACT
    FPCCR_WRITABLE = FPCCR_ASPEN | FPCCR_LSPEN | LAZY_STATE
    FRAME_REGS = tuple(range(UC_ARM_REG_S0, UC_ARM_REG_S0 + 16)) + (UC_ARM_REG_FPSCR,)
    ALL_REGS = tuple(range(UC_ARM_REG_S0, UC_ARM_REG_S0 + 32)) + (UC_ARM_REG_FPSCR,)

    def __init__(self, machine: Machine, regs: Regs) -> None:
        self.m = machine
        self.regs = regs
        self.cpu = CpuFields(machine.uc)
        self.cpacr = self.fpccr = self.fpcar = self.fpdscr = 0
        self._sync_due = False
        self.reset()

    def reset(self) -> None:
        self.cpacr, self.fpccr, self.fpcar, self.fpdscr = 0, FPCCR_ASPEN | FPCCR_LSPEN, 0, 0
        self.regs.write_many(self.ALL_REGS, [0] * len(self.ALL_REGS))  # QEMU zeroes them at reset too
        self.sync()

    def sync(self) -> None:
        """Unicorn's CPU state after FPCCR, FPCAR or FPDSCR changed (between two slices). Its Secure
        bank: Unicorn runs the CPU in Secure state (switching it breaks its MPU lookups), and FPCCR.S
        stays set as Unicorn has it."""
        self._sync_due = False
        self.cpu.write(fpccr_s=self.fpccr | FPCCR_S, fpcar_s=self.fpcar, fpdscr_s=self.fpdscr, cpacr_s=0xF << 20)

    def _lazy_pending(self) -> bool:
        """LSPACT: the FP part of the last extended frame is still to be stored. Unicorn clears it
        in its CPU state when it stores; virsim's copy follows."""
        if self.fpccr & 1 and not self.cpu.read("fpccr_s") & 1:
            self.fpccr &= ~1
        return bool(self.fpccr & 1)

    def sync_due(self) -> bool:
        return self._sync_due

    def read(self, off: int) -> int | None:
        """An SCB register of the FP extension at SCS offset `off`, None if `off` is none of them."""
        if off == 0xF34:
            self._lazy_pending()
        return {0xD88: self.cpacr, 0xF34: self.fpccr, 0xF38: self.fpcar, 0xF3C: self.fpdscr, 0xF40: self.MVFR0,
                0xF44: self.MVFR1}.get(off)

    def write(self, off: int, value: int, lanes: int) -> bool:
        """Write one of its SCB registers; False if `off` is none of them."""
        def merged(old: int, mask: int) -> int:
            return (old & ~(lanes & mask)) | (value & lanes & mask)

        if off == 0xD88:
            self.cpacr = merged(self.cpacr, 0xF << 20)  # CP10, CP11
        elif off == 0xF34:
            self.fpccr = merged(self.fpccr, self.FPCCR_WRITABLE)
        elif off == 0xF38:
            self.fpcar = merged(self.fpcar, 0xFFFFFFF8)
        elif off == 0xF3C:
            self.fpdscr = merged(self.fpdscr, 0x07C00000)  # AHP, DN, FZ, RMode
        elif off in (0xF40, 0xF44):
            pass  # read-only
        else:
            return False
        if off in (0xF34, 0xF38, 0xF3C):
            self._sync_due = True
            self.m.attention()  # the next instruction runs with it
        return True

    def save(self, at: int, context: int) -> None:
        """Exception entry with an FP context: S0-S15 and FPSCR go to `at`, the extended frame's FP
        part: at once, or (LSPEN) when the handler first uses the FPU, with `context` (the
        LAZY_STATE bits but LSPACT, ARMv7-M B1.5.7 UpdateFPCCR) saying what was interrupted."""
        if not self.fpccr & FPCCR_LSPEN:
            self.m.uc.mem_write(at, struct.pack("<17I", *self.regs.read_many(self.FRAME_REGS)))
            return
        self.fpccr = (self.fpccr & ~self.LAZY_STATE) | context | 1  # LSPACT
        self.fpcar = at
        self.sync()

    def restore(self, at: int) -> None:
        """Exception return to an extended frame: its S0-S15 and FPSCR back, unless they were never
        stored (LSPACT still set: the handler did not use the FPU, the registers are untouched)."""
        if self._lazy_pending():
            self.fpccr &= ~1
            self.sync()
            return
        values = struct.unpack("<17I", self.m.uc.mem_read(at, 68))
        self.regs.write_many(self.FRAME_REGS, values)

    def state(self) -> dict[str, Any]:
        return {"cpacr": self.cpacr, "fpccr": self.fpccr, "fpcar": self.fpcar, "fpdscr": self.fpdscr,
                "regs": self.regs.read_many(self.ALL_REGS)}

    def load(self, state: dict[str, Any]) -> None:
        self.cpacr, self.fpccr, self.fpcar, self.fpdscr = (state[k] for k in ("cpacr", "fpccr", "fpcar", "fpdscr"))
        self.regs.write_many(self.ALL_REGS, state["regs"])
        self.sync()


class Lockup(Exception):
    """The CPU can make no progress (a fault while handling HardFault/NMI, an unreadable vector)."""


def name_of(exc: int) -> str:
    return EXCEPTION_NAMES.get(exc, f"IRQ{exc - FIRST_IRQ}")


class Nvic:
    """Enable/pending/active/priority state of every exception, and the choice of what runs next."""

    def __init__(self, num_irqs: int, prio_bits: int) -> None:
        n = FIRST_IRQ + num_irqs
        self.num_irqs = num_irqs
        self.enabled = [False] * n
        self.pending = [False] * n
        self.active = [False] * n
        self.priority = [0] * n
        self.level = [False] * num_irqs  # external input lines (level-sensitive)
        self.prio_mask = (0xFF << (8 - prio_bits)) & 0xFF
        self.prigroup = 0
        self.shcsr = 0
        self.priority[RESET], self.priority[NMI], self.priority[HARDFAULT] = -3, -2, -1
        for exc in (NMI, HARDFAULT, SVCALL, DEBUGMON, PENDSV, SYSTICK):
            self.enabled[exc] = True
        self.changed: Callable[[], None] = lambda: None  # the machine re-evaluates after this

    # ------------------------------------------------------------------ priorities
    def group(self, prio: int) -> int:
        if prio < 0:
            return prio
        return prio & ~((2 << self.prigroup) - 1) & 0xFF

    def set_priority(self, exc: int, value: int) -> None:
        if exc > HARDFAULT and exc not in _RESERVED_SHPR:
            self.priority[exc] = value & self.prio_mask
            self.changed()

    def is_enabled(self, exc: int) -> bool:
        if exc in _SHCSR_ENABLE:
            return bool(self.shcsr & _SHCSR_ENABLE[exc])
        return self.enabled[exc]

    def active_priority(self) -> int:
        """Priority of the running handlers alone (256: thread mode, nothing active)."""
        active = self.active
        if True not in active:  # C-speed scans: this runs at every exception entry and return
            return 256
        best, at = 256, -1
        while True:
            try:
                at = active.index(True, at + 1)
            except ValueError:
                return best
            best = min(best, self.group(self.priority[at]))

    def execution_priority(self, primask: int, basepri: int, faultmask: int) -> int:
        prio = self.active_priority()
        if basepri & 0xFF:
            prio = min(prio, self.group(basepri & self.prio_mask))
        if primask & 1:
            prio = min(prio, 0)
        if faultmask & 1:
            prio = min(prio, -1)
        return prio

    def best_pending(self) -> int | None:
        """The pending, enabled exception that would be taken first (ignoring masks)."""
        pending = self.pending
        if True not in pending:
            return None
        best: int | None = None
        exc = -1
        while True:
            try:
                exc = pending.index(True, exc + 1)
            except ValueError:
                return best
            if self.is_enabled(exc) and (best is None or self.priority[exc] < self.priority[best]):
                best = exc

    def pending_ids(self) -> list[int]:
        return [exc for exc, pend in enumerate(self.pending) if pend]

    # ------------------------------------------------------------------ state changes
    def pend(self, exc: int) -> None:
        if not self.pending[exc]:
            self.pending[exc] = True
            self.changed()

    def unpend(self, exc: int) -> None:
        if exc >= FIRST_IRQ and self.level[exc - FIRST_IRQ]:
            return  # a level-sensitive line that is still asserted stays pending
        if self.pending[exc]:
            self.pending[exc] = False
            self.changed()

    def set_level(self, irq: int, high: bool) -> None:
        if irq >= self.num_irqs:
            return
        rising = high and not self.level[irq]
        self.level[irq] = high
        if rising:
            self.pend(FIRST_IRQ + irq)

    def set_enabled(self, exc: int, on: bool) -> None:
        if self.enabled[exc] != on:
            self.enabled[exc] = on
            self.changed()

    def deactivate(self, exc: int) -> None:
        self.active[exc] = False
        if exc >= FIRST_IRQ and self.level[exc - FIRST_IRQ]:
            self.pending[exc] = True  # still asserted: taken again

    def reset(self) -> None:
        n = len(self.pending)
        self.enabled[FIRST_IRQ:] = [False] * (n - FIRST_IRQ)
        self.pending = [False] * n
        self.active = [False] * n
        self.priority[4:] = [0] * (n - 4)
        self.prigroup = 0
        self.shcsr = 0
        self.level = [False] * self.num_irqs


@dataclass
class FaultStatus:
    cfsr: int = 0
    hfsr: int = 0
    bfar: int = 0
    mmfar: int = 0
    dfsr: int = 0  # debug fault status: BKPT (bit 1)
    log: list[str] = field(default_factory=list)  # human-readable record of faults taken


class ExceptionUnit:
    """Takes and returns from exceptions on the Unicorn CPU, with the NVIC deciding which."""

    def __init__(self, machine: Machine, nvic: Nvic) -> None:
        self.m = machine
        self.uc = machine.uc
        self.regs = Regs(machine.uc)  # entry and return touch a dozen registers: the fast path
        self.nvic = nvic
        self.vtor = 0
        self.ccr = 0x200  # STKALIGN set, as on Cortex-M3 r2p0+ and QEMU
        self.faults = FaultStatus()
        self.invstate = False  # the last vector had bit 0 clear: EPSR.T=0, the next instruction faults
        self.fpu: Fpu | None = None  # a Cortex-M4's FP extension (the machine sets it)

    # ------------------------------------------------------------------ what runs next
    def masks(self) -> tuple[int, int, int]:
        primask, basepri, faultmask = self.regs.read_many(_MASK_REGS)
        return primask, basepri, faultmask

    def execution_priority(self) -> int:
        return self.nvic.execution_priority(*self.masks())

    def preempting(self) -> int | None:
        """The exception to take now, if any."""
        exc = self.nvic.best_pending()
        if exc is None:
            return None
        if self.nvic.group(self.nvic.priority[exc]) < self.execution_priority():
            return exc
        return None

    def pending_unmasked(self) -> bool:
        """Something pending would preempt if PRIMASK/BASEPRI/FAULTMASK were clear. That wakes
        WFI/WFE, and while the masks hold it back the machine watches, instruction by instruction,
        for them to drop."""
        exc = self.nvic.best_pending()
        if exc is None:
            return False
        return self.nvic.group(self.nvic.priority[exc]) < self.nvic.active_priority()

    # ------------------------------------------------------------------ faults
    def fault(self, exc: int, cfsr_bits: int = 0, bfar: int | None = None, what: str = "") -> None:
        """A synchronous fault at the current instruction: pend its handler (or HardFault)."""
        f = self.faults
        f.cfsr |= cfsr_bits
        if bfar is not None:
            f.bfar = bfar & 0xFFFFFFFF
        prio_now = self.execution_priority()
        target = exc
        if exc != HARDFAULT and (not self.nvic.is_enabled(exc)
                                 or self.nvic.group(self.nvic.priority[exc]) >= prio_now):
            target = HARDFAULT
            f.hfsr |= HFSR_FORCED
        if target == HARDFAULT and prio_now <= -1:
            raise Lockup(f"{what or name_of(exc)} while in a handler of priority {prio_now}")
        pc = self.regs.read(UC_ARM_REG_PC)
        f.log.append(f"{name_of(target)}{'' if target == exc else ' (escalated ' + name_of(exc) + ')'}"
                     f" at pc={pc:#010x}: {what}")
        self.nvic.pending[target] = True

    # ------------------------------------------------------------------ entry / return
    def take(self, exc: int) -> None:
        """Exception entry from the current context; the return address is the current PC."""
        uc = self.uc
        *vals, ret, xpsr, control = self.regs.read_many(_ENTRY_REGS)
        thread = (xpsr & 0x1FF) == 0
        use_psp = thread and bool(control & 2)
        fp = self.fpu is not None and bool(control & CONTROL_FPCA)  # the extended frame
        sp = self.regs.read(UC_ARM_REG_PSP if use_psp else UC_ARM_REG_MSP)
        frame = (sp - (0x68 if fp else 0x20)) & 0xFFFFFFFF
        # T bit: the return state is Thumb, unless it is the EPSR.T=0 an INVSTATE fault is taken on.
        stacked_xpsr = (xpsr | (1 << 24)) if not self.invstate else (xpsr & ~(1 << 24))
        if self.ccr & 0x200 and frame & 4:
            frame &= ~7
            stacked_xpsr |= 1 << 9
        else:
            stacked_xpsr &= ~(1 << 9)
        try:
            uc.mem_write(frame, struct.pack("<8I", *vals, ret & ~1, stacked_xpsr))
            if fp:
                self.fpu.save(frame + 0x20, self._fp_context(thread, bool(control & 1)))  # type: ignore[union-attr]
        except UcError:
            self.faults.cfsr |= CFSR_STKERR
            if exc == HARDFAULT or self.execution_priority() <= -1:
                raise Lockup(f"stacking for {name_of(exc)} failed at sp={frame:#010x}") from None
            self.faults.hfsr |= HFSR_FORCED
            self.faults.log.append(f"HardFault: stacking for {name_of(exc)} failed at sp={frame:#010x}")
            self.nvic.pending[exc] = False
            self.take(HARDFAULT)
            return
        exc_return = 0xFFFFFFF1 if not thread else (0xFFFFFFFD if use_psp else 0xFFFFFFF9)
        if fp:
            exc_return &= ~0x10
        if use_psp:
            self.regs.write(UC_ARM_REG_CONTROL, control & ~2)  # handler mode runs on MSP
            self.regs.write(UC_ARM_REG_PSP, frame)
        else:
            self.regs.write(UC_ARM_REG_MSP, frame)
        self._enter_handler(exc, exc_return)

    def _fp_context(self, thread: bool, unprivileged: bool) -> int:
        """FPCCR's record of the context an exception interrupts (B1.5.7 UpdateFPCCR): USER, THREAD,
        and which of HardFault, MemManage, BusFault and DebugMonitor could preempt it (the RDY bits)."""
        nvic, prio_now = self.nvic, self.execution_priority()

        def ready(exc: int, enabled: bool) -> bool:
            return enabled and nvic.group(nvic.priority[exc]) < prio_now

        return ((2 if thread and unprivileged else 0) | (8 if thread else 0) | (16 if -1 < prio_now else 0)
                | (32 if ready(MEMMANAGE, nvic.is_enabled(MEMMANAGE)) else 0)
                | (64 if ready(BUSFAULT, nvic.is_enabled(BUSFAULT)) else 0)
                | (256 if ready(DEBUGMON, bool(self.demcr & (1 << 16))) else 0))

    def _enter_handler(self, exc: int, exc_return: int) -> None:
        uc = self.uc
        try:
            vector = struct.unpack("<I", uc.mem_read(self.vtor + 4 * exc, 4))[0]
        except UcError:
            raise Lockup(f"cannot read the vector of {name_of(exc)} at {self.vtor + 4 * exc:#010x}") from None
        flags = self.regs.read(UC_ARM_REG_XPSR) & 0xF8000000
        self.regs.write(UC_ARM_REG_XPSR, flags | (1 << 24) | exc)  # handler mode, IT bits clear
        self.regs.write(UC_ARM_REG_LR, exc_return)
        self.regs.write(UC_ARM_REG_PC, vector | 1)
        if self.fpu is not None:
            control = self.regs.read(UC_ARM_REG_CONTROL)
            if control & CONTROL_FP:  # a handler starts without an FP context
                self.regs.write(UC_ARM_REG_CONTROL, control & ~CONTROL_FP)
        self.invstate = not vector & 1
        if self.invstate:
            self.m.attention()  # the handler's first instruction must not run: INVSTATE is taken there
        self.nvic.pending[exc] = False
        self.nvic.active[exc] = True
        self.m.on_exception(exc, entering=True)

    def current(self) -> int:
        return self.regs.read(UC_ARM_REG_XPSR) & 0x1FF

    def exception_return(self, exc_return: int) -> None:
        """A branch to an EXC_RETURN value in handler mode (ARMv7-M B1.5.8 ExceptionReturn): checked,
        then tail-chain or unstack. An invalid return deactivates the returning exception and takes
        an INVPC UsageFault on the frame already stacked, with the EXC_RETURN in LR."""
        uc = self.uc
        exc = self.current()
        nvic = self.nvic
        form = EXC_RETURN_FORMS.get(exc_return)
        fp = False
        if form is None and self.fpu is not None:
            form = FP_EXC_RETURN_FORMS.get(exc_return)
            fp = form is not None
        if not nvic.active[exc] or form is None:
            self._invalid_return(exc, exc_return, "not an EXC_RETURN value" if form is None
                                 else f"exception {exc} is not active")
            return
        to_thread, to_psp = form
        if to_thread and sum(nvic.active) != 1 and not self.ccr & 1:  # CCR.NONBASETHRDENA
            self._invalid_return(exc, exc_return, "to thread mode with other exceptions active")
            return
        sp = self.regs.read(UC_ARM_REG_PSP if to_psp else UC_ARM_REG_MSP)
        try:
            r0, r1, r2, r3, r12, lr, pc, xpsr = struct.unpack("<8I", uc.mem_read(sp, 32))
        except UcError:
            raise Lockup(f"unstacking failed at sp={sp:#010x}") from None
        if (xpsr & 0x1FF == 0) != to_thread:  # the frame's IPSR contradicts the mode returned to
            self._invalid_return(exc, exc_return, f"to {'thread' if to_thread else 'handler'} mode with a stacked "
                                 f"IPSR of {xpsr & 0x1FF}")
            return
        if exc != NMI:
            self.regs.write(UC_ARM_REG_FAULTMASK, 0)  # B1.5.8: a return from any but NMI clears FAULTMASK
        nvic.deactivate(exc)
        self.m.on_exception(exc, entering=False)
        nxt = nvic.best_pending()
        if nxt is not None:
            # Tail-chain: the next handler runs on the frame already stacked, with the same EXC_RETURN.
            primask, basepri, faultmask = self.masks()
            if nvic.group(nvic.priority[nxt]) < nvic.execution_priority(primask, basepri, faultmask):
                self._enter_handler(nxt, exc_return)
                return
        if fp:
            try:
                self.fpu.restore(sp + 0x20)  # type: ignore[union-attr]
            except UcError:
                raise Lockup(f"unstacking the FP registers failed at sp={sp + 0x20:#010x}") from None
        new_sp = (sp + (0x68 if fp else 0x20) + (4 if xpsr & (1 << 9) else 0)) & 0xFFFFFFFF
        self.regs.write_many(_FRAME_REGS, (r0, r1, r2, r3, r12, lr))
        ipsr = 0 if to_thread else (xpsr & 0x1FF)
        self.invstate = not xpsr & (1 << 24)  # EPSR.T as stacked: clear means an INVSTATE fault next
        self.regs.write(UC_ARM_REG_XPSR, (xpsr & ~0x3FF) | ipsr | (1 << 24))
        control = self.regs.read(UC_ARM_REG_CONTROL)
        control = (control | 2) if to_thread and to_psp else (control & ~2)
        if self.fpu is not None:  # FPCA as the frame says: the FP context returns with it
            control = (control | CONTROL_FP) if fp else (control & ~CONTROL_FP)
        self.regs.write(UC_ARM_REG_CONTROL, control)
        self.regs.write(UC_ARM_REG_PSP if to_psp else UC_ARM_REG_MSP, new_sp)
        self.regs.write(UC_ARM_REG_PC, pc | 1)

    def _invalid_return(self, exc: int, exc_return: int, why: str) -> None:
        """B1.5.8: DeActivate the returning exception, UFSR.INVPC, LR = EXC_RETURN, and take the
        UsageFault (or HardFault, escalated) without stacking: on the frame already there."""
        if self.nvic.active[exc]:
            self.nvic.deactivate(exc)
            self.m.on_exception(exc, entering=False)
        f = self.faults
        f.cfsr |= CFSR_INVPC
        target = USAGEFAULT
        prio_now = self.execution_priority()
        if not self.nvic.is_enabled(USAGEFAULT) or self.nvic.group(self.nvic.priority[USAGEFAULT]) >= prio_now:
            target = HARDFAULT
            f.hfsr |= HFSR_FORCED
            if prio_now <= -1:
                raise Lockup(f"invalid exception return {exc_return:#010x} ({why}) at priority {prio_now}")
        f.log.append(f"{name_of(target)}{'' if target == USAGEFAULT else ' (escalated UsageFault)'}: invalid "
                     f"exception return {exc_return:#010x}: {why}")
        self._enter_handler(target, exc_return)

    def reset(self) -> None:
        if self.fpu is not None:
            self.fpu.reset()
        self.vtor = 0
        self.demcr = 0
        self.ccr = 0x200
        self.faults = FaultStatus()
        self.invstate = False


class SysTick:
    """The SysTick timer (CSR/RVR/CVR/CALIB), counting machine cycles or the reference clock."""

    def __init__(self, machine: Machine, nvic: Nvic, cpu_hz: int, ref_hz: int) -> None:
        self.m = machine
        self.nvic = nvic
        self.cpu_hz = cpu_hz
        self.ref_hz = ref_hz
        self.reset()

    def reset(self) -> None:
        self.csr = 0
        self.rvr = 0
        self.value = 0  # CVR when stopped, or at `anchor` when running
        self.anchor = 0
        self.next_zero: int | None = None
        self.top = 0  # the highest CVR of the current count down: where it started, or RVR after a reload

    def _div(self) -> int:
        return 1 if self.csr & 4 else max(1, self.cpu_hz // self.ref_hz)

    def _running(self) -> bool:
        return bool(self.csr & 1)

    def current(self, now: int) -> int:
        if not self._running() or self.next_zero is None:
            return self.value
        if now >= self.next_zero:
            return 0
        return min(-(-(self.next_zero - now) // self._div()), self.top)

    def _schedule(self, now: int, value: int) -> None:
        # Counting from `value` at `now`: zero after `value` ticks; a zero value reloads on the next
        # tick and counts down from RVR.
        div = self._div()
        if value == 0:
            self.next_zero = now + (self.rvr + 1) * div if self.rvr else None
            self.top = self.rvr
        else:
            self.next_zero = now + value * div
            self.top = value

    def next_event(self) -> int | None:
        return self.next_zero if self._running() else None

    def advance(self, now: int) -> None:
        while self._running() and self.next_zero is not None and self.next_zero <= now:
            self.csr |= 1 << 16  # COUNTFLAG
            if self.csr & 2:
                self.nvic.pend(SYSTICK)
            if not self.rvr:
                self.next_zero = None
                self.value = 0
                break
            self.next_zero += (self.rvr + 1) * self._div()
            self.top = self.rvr

    def read(self, reg: int, now: int) -> int:
        if reg == 0x0:
            val = self.csr
            self.csr &= ~(1 << 16)
            return val
        if reg == 0x4:
            return self.rvr
        if reg == 0x8:
            return self.current(now)
        if reg == 0xC:
            # CALIB: TENMS for a 10 ms reference-clock period, as QEMU reports it (NOREF, SKEW clear).
            return (self.ref_hz // 100 - 1) & 0xFFFFFF
        return 0

    def write(self, reg: int, value: int, now: int) -> None:
        if reg == 0x0:
            cur = self.current(now)
            was_running = self._running()
            self.csr = (self.csr & (1 << 16)) | (value & 7)
            if self._running() and not was_running:
                self._schedule(now, cur)
            elif not self._running():
                self.value = cur
                self.next_zero = None
            else:
                self._schedule(now, cur)  # the clock source may have changed
        elif reg == 0x4:
            self.rvr = value & 0xFFFFFF
            if self._running() and self.next_zero is None:
                self._schedule(now, 0)
        elif reg == 0x8:
            self.value = 0
            self.csr &= ~(1 << 16)
            if self._running():
                self._schedule(now, 0)
        self.m.reschedule()


class Scs:
    """The System Control Space page at 0xE000E000: ICTR, SysTick, NVIC, SCB, STIR."""

    base = 0xE000E000
    size = 0x1000

    def __init__(self, machine: Machine, nvic: Nvic, exc: ExceptionUnit, systick: SysTick, cpu: str) -> None:
        self.m = machine
        self.nvic = nvic
        self.exc = exc
        self.systick = systick
        self.cpuid = _CPUID.get(cpu, _CPUID["cortex-m3"])
        self.scr = 0

    # ICSR as the SCB reports it
    def _icsr(self) -> int:
        nvic = self.nvic
        val = self.exc.current()
        pend = nvic.best_pending()
        if pend is not None:
            val |= (pend & 0x1FF) << 12
        if any(nvic.pending[FIRST_IRQ:]):
            val |= 1 << 22
        if sum(nvic.active) <= 1:
            val |= 1 << 11  # RETTOBASE
        if nvic.pending[SYSTICK]:
            val |= 1 << 26
        if nvic.pending[PENDSV]:
            val |= 1 << 28
        if nvic.pending[NMI]:
            val |= 1 << 31
        return val

    def _bits(self, flags: list[bool], first: int) -> int:
        val = 0
        for i in range(32):
            idx = first + i
            if idx < len(flags) and flags[idx]:
                val |= 1 << i
        return val

    def read(self, off: int, size: int) -> int:
        word = self.read32(off & ~3)
        shift = (off & 3) * 8
        return (word >> shift) & ((1 << (size * 8)) - 1)

    def read32(self, off: int) -> int:
        nvic, now = self.nvic, self.m.now()
        if off == 0x004:
            return (nvic.num_irqs + 31) // 32 - 1
        if 0x010 <= off < 0x020:
            return self.systick.read(off - 0x10, now)
        if 0x100 <= off < 0x140:
            return self._bits(nvic.enabled, FIRST_IRQ + 32 * ((off - 0x100) // 4))
        if 0x180 <= off < 0x1C0:
            return self._bits(nvic.enabled, FIRST_IRQ + 32 * ((off - 0x180) // 4))
        if 0x200 <= off < 0x240:
            return self._bits(nvic.pending, FIRST_IRQ + 32 * ((off - 0x200) // 4))
        if 0x280 <= off < 0x2C0:
            return self._bits(nvic.pending, FIRST_IRQ + 32 * ((off - 0x280) // 4))
        if 0x300 <= off < 0x340:
            return self._bits(nvic.active, FIRST_IRQ + 32 * ((off - 0x300) // 4))
        if 0x400 <= off < 0x400 + nvic.num_irqs + 3:
            return self._prio_word(FIRST_IRQ + (off - 0x400))
        if off in _ID_REGS:
            return _ID_REGS[off]
        if 0xFD0 <= off < 0x1000:
            return _SCS_IDS[(off - 0xFD0) // 4]
        fpu = self.exc.fpu
        if fpu is not None:
            value = fpu.read(off)
            if value is not None:
                return value
        f = self.exc.faults
        regs = {
            0xD00: lambda: self.cpuid, 0xD04: self._icsr, 0xD08: lambda: self.exc.vtor,
            0xD0C: lambda: 0xFA050000 | (nvic.prigroup << 8), 0xD10: lambda: self.scr,
            0xD14: lambda: self.exc.ccr, 0xD18: lambda: self._prio_word(4),
            0xD1C: lambda: self._prio_word(8), 0xD20: lambda: self._prio_word(12),
            0xD24: self._shcsr, 0xD28: lambda: f.cfsr, 0xD2C: lambda: f.hfsr, 0xD30: lambda: f.dfsr,
            0xDFC: lambda: self.exc.demcr,
            0xD34: lambda: f.mmfar, 0xD38: lambda: f.bfar, 0xD3C: lambda: 0, 0xD88: lambda: 0,
        }
        return regs[off]() if off in regs else 0

    def _prio_word(self, first: int) -> int:
        val = 0
        for i in range(4):
            exc = first + i
            if exc < len(self.nvic.priority) and exc > HARDFAULT and exc not in _RESERVED_SHPR:
                val |= (self.nvic.priority[exc] & 0xFF) << (8 * i)
        return val

    def _shcsr(self) -> int:
        nvic = self.nvic
        val = nvic.shcsr & (0x7 << 16)
        for exc, bit in ((MEMMANAGE, 0), (BUSFAULT, 1), (USAGEFAULT, 3), (SVCALL, 7), (DEBUGMON, 8),
                         (PENDSV, 10), (SYSTICK, 11)):
            if nvic.active[exc]:
                val |= 1 << bit
        for exc, bit in ((USAGEFAULT, 12), (MEMMANAGE, 13), (BUSFAULT, 14), (SVCALL, 15)):
            if nvic.pending[exc]:
                val |= 1 << bit
        return val

    def write(self, off: int, size: int, value: int) -> None:
        nvic = self.nvic
        if 0x400 <= off < 0x400 + nvic.num_irqs or 0xD18 <= off < 0xD24:
            first = FIRST_IRQ + (off - 0x400) if off < 0xD00 else 4 + (off - 0xD18)
            for i in range(size):
                if first + i < len(nvic.priority):
                    nvic.set_priority(first + i, (value >> (8 * i)) & 0xFF)
            return
        shift = (off & 3) * 8
        self.write32(off & ~3, (value << shift) & 0xFFFFFFFF, ((1 << (size * 8)) - 1) << shift)

    def write32(self, off: int, value: int, lanes: int = 0xFFFFFFFF) -> None:
        nvic, now, f = self.nvic, self.m.now(), self.exc.faults
        if 0x010 <= off < 0x020:
            self.systick.write(off - 0x10, value, now)
            return
        if self.exc.fpu is not None and self.exc.fpu.write(off, value, lanes):
            return
        for base, action in ((0x100, "enable"), (0x180, "disable"), (0x200, "pend"), (0x280, "unpend")):
            if base <= off < base + 0x40:
                first = FIRST_IRQ + 32 * ((off - base) // 4)
                for i in range(32):
                    exc = first + i
                    if value >> i & 1 and exc < len(nvic.pending):
                        {"enable": lambda e: nvic.set_enabled(e, True), "disable": lambda e: nvic.set_enabled(e, False),
                         "pend": nvic.pend, "unpend": nvic.unpend}[action](exc)
                return
        if off == 0xD04:
            if value & (1 << 31):
                nvic.pend(NMI)
            if value & (1 << 28):
                nvic.pend(PENDSV)
            if value & (1 << 27):
                nvic.unpend(PENDSV)
            if value & (1 << 26):
                nvic.pend(SYSTICK)
            if value & (1 << 25):
                nvic.unpend(SYSTICK)
        elif off == 0xD08:
            self.exc.vtor = value & 0xFFFFFF80
        elif off == 0xD0C:
            if value >> 16 == 0x05FA:
                nvic.prigroup = (value >> 8) & 7
                if value & 4:
                    self.m.request_reset("AIRCR.SYSRESETREQ")
                nvic.changed()
        elif off == 0xD10:
            self.scr = value & 0x16
        elif off == 0xD14:
            self.exc.ccr = value & 0x31B  # STKALIGN (bit 9) is read/write on a Cortex-M3 and QEMU
            self.m.ccr_changed()
        elif off == 0xD24:
            nvic.shcsr = value & (0x7 << 16)
            for exc, bit in ((USAGEFAULT, 12), (MEMMANAGE, 13), (BUSFAULT, 14), (SVCALL, 15)):
                nvic.pending[exc] = bool(value & (1 << bit))  # the PENDED bits are read/write (B3.2.13)
            nvic.changed()
        elif off == 0xD28:
            f.cfsr &= ~(value & lanes)  # write-one-to-clear
        elif off == 0xD2C:
            f.hfsr &= ~(value & lanes)
        elif off == 0xD30:
            f.dfsr &= ~(value & lanes)
        elif off == 0xDFC:
            # DEMCR: the DebugMonitor controls (MON_EN, MON_PEND, MON_STEP, MON_REQ), TRCENA, the
            # vector-catch bits (kept; virsim's debugger does not use them).
            self.exc.demcr = (self.exc.demcr & ~lanes) | (value & lanes & 0x010F07F1)
            if self.exc.demcr & (1 << 17):  # MON_PEND
                nvic.pend(DEBUGMON)
        elif off == 0xD34:
            f.mmfar = value
        elif off == 0xD38:
            f.bfar = value
        elif off == 0xF00:
            irq = value & 0x1FF
            if irq < nvic.num_irqs:
                nvic.pend(FIRST_IRQ + irq)
