"""A board node as a Renode platform description (.repl), and values made safe for its monitor.

`platform(node)` writes the node's CPU, NVIC (with its SysTick), memory and the peripherals
Renode has a model for, with the board's addresses and interrupt lines; what it has no model for
is listed in `Platform.unmodelled` for the adapter to refuse or report (it never stands in
silently). The text is loaded from a file in the session folder (`LoadPlatformDescription @file`):
the FromString form takes one entry per call and mangles quoting (field notes).

Monitor commands are text: a value a user supplies (a path, a name) goes into one only through
`monitor_path` / `monitor_name`, which refuse newlines and the monitor's metacharacters instead of
escaping them, so no board or file name can add a command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from collections.abc import Callable

from virsim.backends.base import SharedMapping
from virsim.board import Node
from virsim.errors import InvalidInput, NotSupported, VirsimError

CORTEX_M = {"cortex-m0": "cortex-m0", "cortex-m0plus": "cortex-m0+", "cortex-m3": "cortex-m3",
            "cortex-m4": "cortex-m4", "cortex-m4f": "cortex-m4f", "cortex-m7": "cortex-m7", "cortex-m33": "cortex-m33"}
NVIC_BASE = 0xE000E000
# Peripheral types built into the NVIC entry rather than declared on their own.
IN_NVIC = {"armv7m-systick", "systick"}


@dataclass
class Platform:
    repl: str
    unmodelled: list[str] = field(default_factory=list)  # ids of peripherals Renode has no model for here


def _uart_cmsdk(node: Node, irq: int | None, options: dict[str, object]) -> tuple[str, list[str]]:
    lines = [f"    frequency: {node.processor.frequency}"]
    if irq is not None:
        tx = int(str(options.get("tx_irq", irq + 1)), 0)  # QEMU's mps2: RX at the board's irq, TX next
        lines += [f"    RxInterrupt -> nvic@{irq}", f"    TxInterrupt -> nvic@{tx}"]
    return "UART.CMSDK_APB_UART", lines


def _sp804(node: Node, irq: int | None, options: dict[str, object]) -> tuple[str, list[str]]:
    hz = int(str(options.get("clock_hz", node.processor.frequency)), 0)
    return "Timers.ARM_SP804_Timer", [f"    frequency: {hz}"] + ([f"    -> nvic@{irq}"] if irq is not None else [])


Build = Callable[[Node, "int | None", "dict[str, object]"], "tuple[str, list[str]]"]


def _single_irq(model: str) -> Build:
    def build(node: Node, irq: int | None, options: dict[str, object]) -> tuple[str, list[str]]:
        return model, ([f"    -> nvic@{irq}"] if irq is not None else [])
    return build


# Board peripheral type -> how Renode models it (type name, attribute lines).
MODELS: dict[str, Build] = {
    "cmsdk-uart": _uart_cmsdk,
    "cmsdk-gpio": _single_irq("GPIOPort.ARM_AHB_GPIO"),  # the CMSDK AHB GPIO; its combined interrupt
    "cmsdk-dualtimer": _sp804,  # the CMSDK dual timer is an SP804
    "pl011": _single_irq("UART.PL011"),
    "stm32f2xx-usart": _single_irq("UART.STM32_UART"),
}


UART_TYPES = frozenset({"cmsdk-uart", "pl011", "stm32f2xx-usart"})  # the MODELS above that are UARTs


def entry_name(peripheral_id: str) -> str:
    """A .repl variable name for a board id (letters, digits, underscores)."""
    name = re.sub(r"\W", "_", peripheral_id)
    return name if name[:1].isalpha() else f"p_{name}"


def describe(node: Node) -> dict[str, object]:
    """What Renode runs for `node`, for `board show`: the stock platform it names, or the models of
    the generated one (peripheral id -> Renode model), what runs without a model (renode.absent) and
    what has none and makes session create fail."""
    if node.renode and node.renode.platform:
        from virsim.backends.renode import stock, stock_path, stock_root

        out: dict[str, object] = {"platform": node.renode.platform, "console": node.renode.uart, "models": {},
                                  "absent": [], "unmodelled": [], "svd": node.renode.svd}
        try:
            plat = stock.read(stock_path(node.renode.platform), stock_root())
        except VirsimError as err:  # no Renode here, or no such platform in it
            out["error"] = err.message
            return out
        out["models"] = {p.id: plat.model_at(p.address) or "not in the platform" for p in node.peripherals
                         if p.type not in IN_NVIC}
        out["dropped_downloads"] = plat.downloads  # ApplySVD lines virsim leaves out (Renode is offline)
        out["files"] = [str(f) for f in plat.files]
        return out
    if CORTEX_M.get(node.processor.type) is None:
        return {"platform": None, "error": f"Renode's backend runs Cortex-M nodes, not {node.processor.type}"}
    absent = list(node.renode.absent) if node.renode else []
    models = {p.id: ("in nvic" if p.type in IN_NVIC else MODELS[p.type](node, p.irq, p.options)[0])
              for p in node.peripherals if p.type in IN_NVIC or p.type in MODELS}
    return {"platform": "generated", "cpu": CORTEX_M[node.processor.type], "models": models, "absent": absent,
            "unmodelled": [pid for pid in platform(node).unmodelled if pid not in absent]}


def _pieces(start: int, size: int, holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[start, start+size) without the holes (start, size): the (start, size) pieces left."""
    out, at, end = [], start, start + size
    for lo, n in sorted(holes):
        if lo + n <= at or lo >= end:
            continue
        if lo > at:
            out.append((at, lo - at))
        at = max(at, lo + n)
    if at < end:
        out.append((at, end - at))
    return out


def platform(node: Node, shared: list[SharedMapping] | None = None) -> Platform:
    """The .repl of `node`; NotSupported for a processor Renode's Cortex-M model does not cover.
    `shared`: windows backed by files other nodes map too (multi-node boards), carved out of the
    node's memory and mapped by virsim's extension (VirsimRenode.cs SharedMemory)."""
    cpu = CORTEX_M.get(node.processor.type)
    if cpu is None:
        raise NotSupported(f"node {node.id!r}: virsim's Renode backend runs Cortex-M nodes, not {node.processor.type}",
                           backend="renode", node=node.id, processor=node.processor.type)
    hz = node.processor.frequency
    out: list[str] = []
    holes = [(m.address, m.size) for m in shared or []]
    for i, region in enumerate(node.memory):
        if region.mirror_of:
            continue  # registered with the region it mirrors: one memory at several addresses
        name = entry_name(region.name or f"mem{i}")
        mirrors = [r.address for r in node.memory if region.name and r.mirror_of == region.name]
        if mirrors:
            at = "; ".join(f"sysbus {a:#x}" for a in [region.address, *mirrors])
            out += [f"{name}: Memory.MappedMemory @ {{ {at} }}", f"    size: {region.size:#x}", ""]
            continue
        pieces = _pieces(region.address, region.size, holes)
        for j, (at, size) in enumerate(pieces):
            out += [f"{name if j == 0 else f'{name}_{j}'}: Memory.MappedMemory @ sysbus {at:#x}", f"    size: {size:#x}", ""]
    if node.processor.bitband:  # Renode's own model of the Cortex-M bit-band aliases
        for alias, base in ((0x22000000, 0x20000000), (0x42000000, 0x40000000)):
            out += [f"bitband_{base:x}: Miscellaneous.BitBanding @ sysbus <{alias:#x}, +0x2000000>",
                    f"    peripheralBase: {base:#x}", ""]
    for m in shared or []:
        out += [f"{entry_name('shared_' + (m.name or hex(m.address)))}: Virsim.SharedMemory @ sysbus {m.address:#x}",
                f'    path: "{monitor_path(m.path, "shared memory")[1:]}"', f"    size: {m.size:#x}",
                f"    offset: {m.offset:#x}", ""]
    # Implemented priority bits: the board's (an armv7m-nvic peripheral's prio_bits), else all 8, as
    # QEMU's NVIC and the built-in engine have them (FreeRTOS's port checks how many there are).
    bits = int(str(next((p.options.get("prio_bits", 8) for p in node.peripherals if p.type == "armv7m-nvic"), 8)))
    out += [f"nvic: IRQControllers.NVIC @ sysbus {NVIC_BASE:#x}", f"    priorityMask: 0x{(0xFF << (8 - bits)) & 0xFF:02X}",
            f"    systickFrequency: {hz}", "    IRQ -> cpu@0", "",
            "cpu: CPU.CortexM @ sysbus", f'    cpuType: "{cpu}"', "    nvic: nvic", ""]
    unmodelled = []
    for p in node.peripherals:
        if p.type in IN_NVIC:
            continue
        build = MODELS.get(p.type)
        if build is None:
            unmodelled.append(p.id)
            continue
        model, lines = build(node, p.irq, p.options)
        out += [f"{entry_name(p.id)}: {model} @ sysbus {p.address:#x}", *lines, ""]
    return Platform(repl="\n".join(out).rstrip() + "\n", unmodelled=unmodelled)


# What may stand in a monitor command as a path or a name: no quotes, no backslash, no `$`
# (variables), `#` (comments), `;`, backticks, nor any control character (a newline ends a command).
_SAFE_PATH = re.compile(r"[A-Za-z0-9_./+=,:~@%-]+")
_SAFE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def monitor_path(path: str | Path, field_name: str = "path") -> str:
    """`@/abs/path` for a monitor command; InvalidInput naming the field for anything else."""
    text = str(Path(path).resolve())
    if not _SAFE_PATH.fullmatch(text):
        bad = next((c for c in text if not _SAFE_PATH.fullmatch(c)), "")
        raise InvalidInput(f"{field_name}: {text!r} cannot go into a Renode monitor command ({bad!r} is not allowed "
                           "in a path there): rename it or link it from a plain path", field=field_name, value=text)
    return f"@{text}"


def monitor_string(path: str | Path, field_name: str = "path") -> str:
    """A path as a quoted string argument of a monitor command (virsim's own extension methods take
    strings), held to the same characters as `monitor_path`."""
    return f'"{monitor_path(path, field_name)[1:]}"'


def monitor_name(name: str, field_name: str = "name") -> str:
    """A machine, terminal or hub name for a monitor command, quoted."""
    if not _SAFE_NAME.fullmatch(name):
        raise InvalidInput(f"{field_name}: {name!r} cannot be a Renode name (letters, digits, '_' and '-', "
                           "starting with a letter, at most 64)", field=field_name, value=name)
    return f'"{name}"'
