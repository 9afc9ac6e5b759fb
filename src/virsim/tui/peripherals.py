"""Register maps of the peripheral models virsim's boards use, for the TUI's peripheral view:
each register's offset, name and bit fields, from the models' reference manuals (CMSDK: ARM
DDI 0479; PL011: ARM DDI 0183; STM32F2 USART: RM0033; SysTick and NVIC: ARMv7-M ARM B3.3-B3.4).
Registers whose read has a side effect (a UART data register pops a received byte) are listed
but never read. A board node that names a CMSIS-SVD file gets its registers from there instead
(`from_svd`; the SVD's readAction marks the reads with side effects)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int = 1


@dataclass(frozen=True)
class Register:
    offset: int
    name: str
    fields: tuple[Field, ...] = ()
    read: bool = True  # False: reading it changes the device
    irq_bits: bool = False  # each bit is an interrupt line (NVIC)


def _bits(*names: str) -> tuple[Field, ...]:
    return tuple(Field(n, i) for i, n in enumerate(names) if n)


MAPS: dict[str, tuple[Register, ...]] = {
    "cmsdk-uart": (
        Register(0x00, "DATA", read=False),
        Register(0x04, "STATE", _bits("TXFULL", "RXFULL", "TXOVR", "RXOVR")),
        Register(0x08, "CTRL", _bits("TXEN", "RXEN", "TXINTEN", "RXINTEN", "TXOVRINTEN", "RXOVRINTEN", "HSTEST")),
        Register(0x0C, "INTSTATUS", _bits("TXINT", "RXINT", "TXOVRINT", "RXOVRINT")),
        Register(0x10, "BAUDDIV", (Field("BAUDDIV", 0, 20),)),
    ),
    "cmsdk-timer": (
        Register(0x00, "CTRL", _bits("EN", "EXTEN", "EXTCLK", "INTEN")),
        Register(0x04, "VALUE"),
        Register(0x08, "RELOAD"),
        Register(0x0C, "INTSTATUS", _bits("INT")),
    ),
    "cmsdk-dualtimer": tuple(
        r for base, n in ((0x00, 1), (0x20, 2)) for r in (
            Register(base + 0x00, f"TIMER{n}LOAD"),
            Register(base + 0x04, f"TIMER{n}VALUE"),
            Register(base + 0x08, f"TIMER{n}CONTROL", (Field("ONESHOT", 0), Field("SIZE32", 1),
                                                       Field("PRESCALE", 2, 2), Field("INTEN", 5),
                                                       Field("PERIODIC", 6), Field("EN", 7))),
            Register(base + 0x10, f"TIMER{n}RIS", _bits("INT")),
            Register(base + 0x14, f"TIMER{n}MIS", _bits("INT")),
            Register(base + 0x18, f"TIMER{n}BGLOAD"),
        )),
    "cmsdk-gpio": (
        Register(0x00, "DATA", (Field("DATA", 0, 16),)),
        Register(0x04, "DATAOUT", (Field("DATAOUT", 0, 16),)),
        Register(0x10, "OUTENSET", (Field("OUTEN", 0, 16),)),
        Register(0x20, "INTENSET", (Field("INTEN", 0, 16),)),
        Register(0x38, "INTSTATUS", (Field("INT", 0, 16),)),
    ),
    "armv7m-systick": (
        Register(0x00, "CSR", (Field("ENABLE", 0), Field("TICKINT", 1), Field("CLKSOURCE", 2),
                               Field("COUNTFLAG", 16))),
        Register(0x04, "RVR", (Field("RELOAD", 0, 24),)),
        Register(0x08, "CVR", (Field("CURRENT", 0, 24),)),
        Register(0x0C, "CALIB", (Field("TENMS", 0, 24), Field("SKEW", 30), Field("NOREF", 31))),
    ),
    "pl011": (
        Register(0x00, "DR", read=False),
        Register(0x18, "FR", (Field("CTS", 0), Field("BUSY", 3), Field("RXFE", 4), Field("TXFF", 5),
                              Field("RXFF", 6), Field("TXFE", 7))),
        Register(0x24, "IBRD", (Field("BAUDDIVINT", 0, 16),)),
        Register(0x28, "FBRD", (Field("BAUDDIVFRAC", 0, 6),)),
        Register(0x2C, "LCR_H", (Field("BRK", 0), Field("PEN", 1), Field("STP2", 3), Field("FEN", 4),
                                 Field("WLEN", 5, 2))),
        Register(0x30, "CR", (Field("UARTEN", 0), Field("LBE", 7), Field("TXE", 8), Field("RXE", 9))),
        Register(0x38, "IMSC", (Field("RXIM", 4), Field("TXIM", 5), Field("RTIM", 6))),
        Register(0x3C, "RIS", (Field("RXRIS", 4), Field("TXRIS", 5), Field("RTRIS", 6))),
    ),
    "stm32f2xx-usart": (
        Register(0x00, "SR", _bits("PE", "FE", "NF", "ORE", "IDLE", "RXNE", "TC", "TXE", "LBD", "CTS")),
        Register(0x04, "DR", read=False),
        Register(0x08, "BRR", (Field("DIV_Fraction", 0, 4), Field("DIV_Mantissa", 4, 12))),
        Register(0x0C, "CR1", (Field("SBK", 0), Field("RWU", 1), Field("RE", 2), Field("TE", 3), Field("IDLEIE", 4),
                               Field("RXNEIE", 5), Field("TCIE", 6), Field("TXEIE", 7), Field("UE", 13))),
        Register(0x10, "CR2", (Field("STOP", 12, 2),)),
        Register(0x14, "CR3", (Field("DMAR", 6), Field("DMAT", 7))),
    ),
    "armv7m-nvic": (
        Register(0x000, "ISER0", irq_bits=True), Register(0x004, "ISER1", irq_bits=True),
        Register(0x100, "ISPR0", irq_bits=True), Register(0x104, "ISPR1", irq_bits=True),
        Register(0x200, "IABR0", irq_bits=True), Register(0x204, "IABR1", irq_bits=True),
        *(Register(0x300 + 4 * i, f"IPR{i}", tuple(Field(f"PRI_{4 * i + b}", 8 * b, 8) for b in range(4)))
          for i in range(8)),
    ),
}


def blocks(registers: tuple[Register, ...]) -> list[tuple[int, int]]:
    """(offset, size) of the runs of contiguous readable registers: one memory read each."""
    out: list[tuple[int, int]] = []
    for reg in sorted((r for r in registers if r.read), key=lambda r: r.offset):
        if out and out[-1][0] + out[-1][1] == reg.offset:
            out[-1] = (out[-1][0], out[-1][1] + 4)
        else:
            out.append((reg.offset, 4))
    return out


def decode(reg: Register, value: int, irq_names: dict[int, str]) -> str:
    """The fields of `value`: set flags by name, wider fields as NAME=value."""
    if reg.irq_bits:
        base = 32 * (reg.offset % 0x100 // 4)
        lines = [base + b for b in range(32) if value >> b & 1]
        return ", ".join(f"IRQ {n}" + (f" ({irq_names[n]})" if n in irq_names else "") for n in lines)
    parts = []
    for f in reg.fields:
        v = value >> f.lsb & ((1 << f.width) - 1)
        if f.width == 1:
            if v:
                parts.append(f.name)
        else:
            parts.append(f"{f.name}={v:#x}" if v > 9 else f"{f.name}={v}")
    return " ".join(parts)


def from_svd(registers: list[dict[str, Any]]) -> tuple[Register, ...]:
    """The registers `session show` sends for a peripheral its board's SVD file describes."""
    return tuple(Register(r["offset"], r["name"], tuple(Field(f["name"], f["lsb"], f["width"]) for f in r["fields"]),
                          read=r["read"]) for r in registers)
