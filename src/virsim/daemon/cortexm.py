"""ARMv7-M knowledge the debugger needs: system registers in memory and fault decoding.

The memory-mapped System Control Block and SysTick registers are readable through any gdb stub,
so `debug regs --scope system` shows them even where the stub has no msp/psp/primask/control
(QEMU before 8.0). A stop in a fault handler is reported with CFSR/HFSR decoded bit by bit and
the faulting instruction taken from the stacked exception frame.
"""

from __future__ import annotations

from typing import Any

# name -> address of 32-bit memory-mapped system registers shown in the "system" scope.
SYSTEM_REGISTERS = {
    "ICSR": 0xE000ED04, "VTOR": 0xE000ED08, "AIRCR": 0xE000ED0C, "SCR": 0xE000ED10, "CCR": 0xE000ED14,
    "SHCSR": 0xE000ED24, "CFSR": 0xE000ED28, "HFSR": 0xE000ED2C, "MMFAR": 0xE000ED34, "BFAR": 0xE000ED38,
    "SYST_CSR": 0xE000E010, "SYST_RVR": 0xE000E014, "SYST_CVR": 0xE000E018,
}
SCB_BASE, SCB_END = 0xE000E000, 0xE000F000

CFSR_BITS = {
    0: ("IACCVIOL", "instruction fetch from a no-execute or protected region (MemManage)"),
    1: ("DACCVIOL", "data access to a protected region (MemManage)"),
    3: ("MUNSTKERR", "MemManage fault on exception return unstacking"),
    4: ("MSTKERR", "MemManage fault on exception entry stacking"),
    5: ("MLSPERR", "MemManage fault during lazy FP state preservation"),
    7: ("MMARVALID", "MMFAR holds the faulting address"),
    8: ("IBUSERR", "bus error on instruction fetch"),
    9: ("PRECISERR", "precise data bus error (BFAR holds the address)"),
    10: ("IMPRECISERR", "imprecise data bus error"),
    11: ("UNSTKERR", "bus fault on exception return unstacking"),
    12: ("STKERR", "bus fault on exception entry stacking"),
    13: ("LSPERR", "bus fault during lazy FP state preservation"),
    15: ("BFARVALID", "BFAR holds the faulting address"),
    16: ("UNDEFINSTR", "undefined instruction"),
    17: ("INVSTATE", "invalid state: executing with the Thumb bit clear (bad function pointer?)"),
    18: ("INVPC", "invalid EXC_RETURN / PC load on exception return"),
    19: ("NOCP", "coprocessor (FPU) access while disabled"),
    24: ("UNALIGNED", "unaligned access with CCR.UNALIGN_TRP set"),
    25: ("DIVBYZERO", "divide by zero with CCR.DIV_0_TRP set"),
}
HFSR_BITS = {
    1: ("VECTTBL", "bus fault reading the vector table"),
    30: ("FORCED", "a configurable fault escalated to HardFault (its handler is disabled or it faulted)"),
    31: ("DEBUGEVT", "debug event"),
}
# Vector table slots of the fault handlers.
FAULT_VECTORS = {3: "HardFault", 4: "MemManage", 5: "BusFault", 6: "UsageFault"}
SYSTEM_EXCEPTIONS = {1: "Reset", 2: "NMI", **FAULT_VECTORS, 11: "SVCall", 12: "DebugMonitor", 14: "PendSV",
                     15: "SysTick"}


def exception_name(number: int, irq_names: dict[int, str] | None = None) -> str:
    """`15` -> SysTick, `16` -> IRQ 0 (uart0) where the board names the peripheral on that line."""
    if number < 16:
        return SYSTEM_EXCEPTIONS.get(number, f"exception {number}")
    line = number - 16
    owner = (irq_names or {}).get(line)
    return f"IRQ {line}" + (f" ({owner})" if owner else "")


def decode_bits(value: int, table: dict[int, tuple[str, str]]) -> list[dict[str, str]]:
    return [{"bit": name, "meaning": meaning} for bit, (name, meaning) in sorted(table.items()) if value >> bit & 1]


def describe_fault(handler: str, regs: dict[str, int], stacked_pc: int | None) -> dict[str, Any]:
    """A readable fault report from the fault status registers (and the stacked PC)."""
    cfsr, hfsr = regs.get("CFSR", 0), regs.get("HFSR", 0)
    bits = decode_bits(cfsr, CFSR_BITS) + decode_bits(hfsr, HFSR_BITS)
    report: dict[str, Any] = {"handler": handler, "CFSR": cfsr, "HFSR": hfsr, "bits": bits}
    if cfsr >> 7 & 1:
        report["MMFAR"] = regs.get("MMFAR")
    if cfsr >> 15 & 1:
        report["BFAR"] = regs.get("BFAR")
    if stacked_pc is not None:
        report["fault_pc"] = stacked_pc
    causes = [b["bit"] for b in bits if b["bit"] not in ("MMARVALID", "BFARVALID", "FORCED")]
    report["summary"] = f"{handler}: " + (", ".join(causes) if causes else "no fault status bits set")
    return report
