"""BoardConfig: the pydantic model of a board (the spec's schema), its loader and the templates.

A board is a system: `system_id`, `name`, `nodes[]` (each with backend, processor, memory[],
peripherals[]) and `interconnect` (shared_memory[], irq_routes[], mmio_map[], uart_links[]). Files may be YAML
or JSON; addresses and sizes accept integers, `0x…` and `64K`/`1M`/`2G`; frequencies `25MHz`.
Errors name the file, the field path (`nodes[0].memory[1].size`), the line, the bad value and
what was expected. Templates ship in the repository's `boards/` (package virsim.board_templates).
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from virsim import limits
from virsim.errors import BoardConfigError, InvalidInput, NotFound
from virsim.yamlmodel import FieldProblem, load_model

_SIZE_RE = re.compile(r"^\s*(0x[0-9a-fA-F_]+|\d[\d_]*)\s*([KMG]i?B?)?\s*$", re.IGNORECASE)
_FREQ_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kMG]?)Hz\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_HZ = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


def parse_size(value: Any) -> int:
    """`4096`, `0x1000`, `4K`, `4KiB`, `1M` -> int (binary units)."""
    if isinstance(value, bool):
        raise ValueError("expected an integer, 0x… hex or a size like 64K/1M")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            number = int(m.group(1).replace("_", ""), 0)
            unit = (m.group(2) or "")[:1].lower()
            return number * _UNITS[unit]
    raise ValueError("expected an integer, 0x… hex or a size like 64K/1M")


def parse_frequency(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        m = _FREQ_RE.match(value)
        if m and int(float(m.group(1)) * _HZ[m.group(2).lower()]) > 0:
            return int(float(m.group(1)) * _HZ[m.group(2).lower()])
    raise ValueError("expected a positive integer in Hz or a frequency like 25MHz")


Size = Annotated[int, BeforeValidator(parse_size)]
Frequency = Annotated[int, BeforeValidator(parse_frequency)]

# Processor families virsim knows: type -> (ELF machine name, profile).
PROCESSORS: dict[str, tuple[str, str]] = {
    "cortex-m0": ("ARM", "m"), "cortex-m0plus": ("ARM", "m"), "cortex-m3": ("ARM", "m"),
    "cortex-m4": ("ARM", "m"), "cortex-m7": ("ARM", "m"), "cortex-m33": ("ARM", "m"),
    "cortex-a7": ("ARM", "a"), "cortex-a9": ("ARM", "a"), "cortex-a15": ("ARM", "a"),
    "cortex-a53": ("AArch64", "a"), "cortex-a57": ("AArch64", "a"), "cortex-a72": ("AArch64", "a"),
    "rv32": ("RISC-V", "rv32"), "rv64": ("RISC-V", "rv64"),
}
BACKENDS = ("qemu", "builtin", "renode", "skyeye")
# The backend of every multi-node session (virsim.sync.instance): one system of nodes, each on its own
# node backend. Board files never name it; sessions, `board list` and JSON show it.
SYSTEM_BACKEND = "system"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Processor(Model):
    type: str = Field(description="processor type, e.g. cortex-m3, cortex-a15")
    cores: int = Field(1, ge=1, le=64)
    frequency: Frequency = Field(description="core clock in Hz, or e.g. 25MHz")
    bitband: bool = Field(False, description="Cortex-M3/M4 bit-band aliases, as the part has them: a word at "
                          "0x22000000 + 32*offset + 4*bit is that bit of the byte at 0x20000000 + offset, and "
                          "0x42000000 the same for 0x40000000 (peripherals)")

    @model_validator(mode="after")
    def _known_type(self) -> Processor:
        if self.type not in PROCESSORS:
            raise ValueError(f"unknown processor type {self.type!r}; known: {', '.join(PROCESSORS)}")
        return self

    @property
    def elf_machine(self) -> str:
        return PROCESSORS[self.type][0]

    @property
    def profile(self) -> str:
        return PROCESSORS[self.type][1]


class MemoryRegion(Model):
    name: str | None = None
    type: Literal["RAM", "ROM", "Flash"]
    address: Size
    size: Size = Field(gt=0)
    access: Literal["RW", "RO", "WO"] = "RW"
    mirror_of: str | None = Field(None, description="the name of another region of the node, of the same size, "
                                  "that this one mirrors: the same memory seen at a second address (a bus alias)")

    @property
    def end(self) -> int:
        return self.address + self.size

    def contains(self, start: int, length: int) -> bool:
        return self.address <= start and start + length <= self.end


class Unmodelled(Model):
    name: str = Field(description="what the real board has there, for the report (e.g. fpgaio, reserved)")
    address: Size
    size: Size = Field(gt=0)

    @property
    def end(self) -> int:
        return self.address + self.size


class Peripheral(Model):
    id: str
    type: str = Field(description="model type, e.g. cmsdk-uart, pl011, systick")
    address: Size
    size: Size = 0x1000
    irq: int | None = Field(None, ge=0)
    console: bool = Field(False, description="this UART is the session's console")
    options: dict[str, Any] = {}


class MachineRam(Model):
    address: Size
    size: Size = Field(gt=0)


class QemuOptions(Model):
    machine: str = Field(description="QEMU machine (-M), e.g. mps2-an385")
    cpu: str | None = Field(None, description="QEMU -cpu, when the machine's default is not wanted")
    binary: str | None = Field(None, description="QEMU binary; derived from the processor when omitted")
    extra_args: list[str] = []
    machine_ram: MachineRam | None = Field(None, description="where the machine puts its main RAM (-m), which "
                                           "QEMU can back with a shared file (-machine memory-backend): "
                                           "shared memory on a QEMU node must lie inside it")
    irq_device: str = Field("/machine/armv7m", description="QOM path of the device whose GPIO inputs are the "
                            "CPU's external interrupt lines (lockstep: other nodes raise them)")


# qemu.extra_args that open the host to the firmware or to other users: refused unless the user
# says --allow-unsafe-qemu-args (a board file passed around must not make QEMU listen on 0.0.0.0).
_UNSAFE_OPTIONS = {
    "-net": "a network backend", "-netdev": "a network backend", "-nic": "a network backend",
    "-semihosting": "semihosting (the firmware reads and writes host files)",
    "-semihosting-config": "semihosting (the firmware reads and writes host files)",
    "-monitor": "a monitor (virsim's control channel is QMP)", "-mon": "a monitor", "-qmp": "a second QMP",
    "-qmp-pretty": "a second QMP", "-gdb": "a second gdb stub", "-s": "a gdb stub on TCP port 1234",
    "-vnc": "a VNC server", "-spice": "a SPICE server", "-incoming": "a migration listener",
    "-virtfs": "host file sharing", "-fsdev": "host file sharing", "-plugin": "a host library loaded into QEMU",
    "-sandbox": "an override of virsim's seccomp sandbox", "-daemonize": "a QEMU virsim cannot supervise",
    "-runas": "a change of user", "-chroot": "a chroot", "-run-with": "a change of user or root",
}
_HOST_CHARDEV = re.compile(r"^(tcp|udp|telnet|websocket|socket)[:,]|[,:](host|port)=", re.I)


def unsafe_qemu_args(args: list[str]) -> list[tuple[int, str, str]]:
    """(index, argument, why) of each QEMU argument that opens the host: network backends,
    semihosting, monitors and gdb stubs of its own, character devices on TCP/UDP, host file
    sharing, plugins."""
    found = []
    for i, arg in enumerate(args):
        option = arg.split("=", 1)[0] if arg.startswith("--") else arg
        option = "-" + option.lstrip("-") if option.startswith("-") else option
        if option in _UNSAFE_OPTIONS:
            found.append((i, arg, _UNSAFE_OPTIONS[option]))
        elif i > 0 and args[i - 1].lstrip("-") in ("chardev", "serial", "parallel", "debugcon") \
                and _HOST_CHARDEV.search(arg):
            found.append((i, arg, "a character device on a network socket"))
    return found


def check_qemu_args(board: BoardConfig, source: str, allow_unsafe: bool) -> None:
    """BoardConfigError naming the first unsafe qemu.extra_args entry, unless `allow_unsafe`."""
    if allow_unsafe:
        return
    for n, node in enumerate(board.nodes):
        if node.qemu is None:
            continue
        for i, arg, why in unsafe_qemu_args(node.qemu.extra_args):
            path = f"nodes[{n}].qemu.extra_args[{i}]"
            raise BoardConfigError(f"{source}: {path}: {arg!r} opens the host to the firmware or other users ({why}); "
                                   "give --allow-unsafe-qemu-args to run it anyway", file=source, problems=[
                                       {"path": path, "value": arg, "message": f"unsafe: {why}"}])


class RenodeOptions(Model):
    platform: str | None = Field(None, description="a stock Renode platform to run instead of the one virsim "
                                 "generates from this node, relative to Renode's folder (e.g. "
                                 "platforms/boards/stm32f4_discovery-kit.repl) or absolute")
    uart: str | None = Field(None, description="the Renode peripheral the console is on (e.g. sysbus.usart2); "
                             "default: the console peripheral's id on sysbus")
    absent: list[str] = Field([], description="peripheral ids Renode has no model for that this node runs "
                              "without on Renode (their registers read as zero; Renode logs the accesses); any "
                              "other unmodelled peripheral makes session create fail naming it")
    svd: str | None = Field(None, description="with `platform`: an absolute path of a local SVD file to apply "
                            "instead of the ones the stock platform downloads at load time (Renode runs offline)")


BackendName = Literal["qemu", "builtin", "renode", "skyeye"]


class Node(Model):
    id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    backend: BackendName = Field(description="the backend a session uses unless --backend overrides it")
    runs_on: list[BackendName] = Field([], description="backends this node is known to run on (default: "
                                       "just `backend`); `session create --backend` may pick any backend "
                                       "whose checks accept the node")
    processor: Processor
    memory: list[MemoryRegion] = Field(min_length=1)
    peripherals: list[Peripheral] = []
    unmodelled: list[Unmodelled] = Field([], description="address ranges the real board decodes (devices virsim "
                                         "has no model for, reserved space) where the built-in engine reads zero "
                                         "and ignores writes, reporting the first access to each address, as QEMU's "
                                         "unimplemented devices do; an access anywhere else is a BusFault. Ranges "
                                         "may span the modelled peripherals, which keep their own windows")
    qemu: QemuOptions | None = None
    renode: RenodeOptions | None = None
    svd: str | None = Field(None, description="a CMSIS-SVD file describing this node's peripherals (absolute, or "
                            "relative to the board file): `virsim tui`'s peripheral view decodes the registers of "
                            "the peripherals at its base addresses from it")
    semihosting: bool = Field(False, description="serve ARM semihosting (BKPT 0xAB): the firmware opens, reads "
                              "and writes files in the session folder (on QEMU: any host file the user can "
                              "reach), its debug console goes to semihosting.log and SYS_EXIT ends it; off by "
                              "default (`session create --semihosting` turns it on for one session)")

    @model_validator(mode="after")
    def _no_overlaps(self) -> Node:
        if not self.runs_on:
            self.runs_on = [self.backend]
        elif self.backend not in self.runs_on:
            raise FieldProblem(f"backend {self.backend!r} is not in runs_on {self.runs_on}", "runs_on")
        regions = sorted(enumerate(self.memory), key=lambda r: r[1].address)
        for (ia, a), (ib, b) in zip(regions, regions[1:]):
            if b.address < a.end:
                raise FieldProblem(f"memory[{ib}] at {b.address:#x} overlaps memory[{ia}] "
                                   f"({a.address:#x}..{a.end:#x})", "memory", ib)
        names = {r.name: (i, r) for i, r in enumerate(self.memory) if r.name}
        for i, r in enumerate(self.memory):
            if r.mirror_of is None:
                continue
            target = names.get(r.mirror_of)
            if target is None:
                raise FieldProblem(f"mirror_of names {r.mirror_of!r}, which is not a memory region of this node "
                                   f"(regions: {', '.join(names) or 'none has a name'})", "memory", i, "mirror_of")
            if target[1].mirror_of is not None or target[1].size != r.size:
                raise FieldProblem(f"mirror_of {r.mirror_of!r}: a mirror has the size of the region it mirrors "
                                   f"({target[1].size:#x}, not {r.size:#x}) and that region mirrors nothing",
                                   "memory", i, "mirror_of")
        for i, u in enumerate(self.unmodelled):
            if u.address % 4096 or u.size % 4096:
                raise FieldProblem(f"unmodelled {u.name!r}: address and size must be multiples of 4K (the engine maps "
                                   "whole pages)", "unmodelled", i)
            clash = next((r for r in self.memory if r.address < u.end and u.address < r.end), None)
            if clash is not None:
                raise FieldProblem(f"unmodelled {u.name!r} ({u.address:#x}..{u.end:#x}) overlaps memory "
                                   f"{clash.name or hex(clash.address)}", "unmodelled", i)
        ids = [p.id for p in self.peripherals]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate peripheral id(s): {', '.join(sorted(dup))}")
        if sum(p.console for p in self.peripherals) > 1:
            raise ValueError("at most one peripheral may be the console")
        for i, pid in enumerate(self.renode.absent if self.renode else []):
            if pid not in ids:
                raise FieldProblem(f"renode.absent names {pid!r}, which is not a peripheral of this node "
                                   f"(peripherals: {', '.join(ids) or 'none'})", "renode", "absent", i)
        return self


class SharedMemory(Model):
    id: str
    size: Size = Field(gt=0)
    mappings: dict[str, Size] = Field(description="node id -> address where that node sees the region")


class IrqRoute(Model):
    source: str = Field(description="node.peripheral (its output, e.g. a doorbell register or a GPIO "
                        "block) or node.peripheral.pin (one GPIO line) raising the line")
    target: str = Field(description="node id receiving the interrupt")
    irq: int = Field(ge=0, description="external interrupt (NVIC IRQ number) raised on the target")


class MmioMap(Model):
    node: str
    address: Size
    size: Size = Field(gt=0)
    target: str = Field(description="node id (or node.peripheral) the range is forwarded to")
    target_address: Size = 0


class UartLink(Model):
    a: str = Field(description="node.uart: what it transmits arrives at b's receiver")
    b: str = Field(description="node.uart: and the other way round")


class Interconnect(Model):
    shared_memory: list[SharedMemory] = []
    irq_routes: list[IrqRoute] = []
    mmio_map: list[MmioMap] = []
    uart_links: list[UartLink] = []


UART_TYPES = ("cmsdk-uart", "pl011")
# The register a UART's firmware writes each byte to transmit, by model: its offset in the block.
UART_TX_REGISTER = {"cmsdk-uart": 0x0, "pl011": 0x0, "stm32f2xx-usart": 0x4}


def nvic_lines(node: Node) -> int:
    """External interrupt lines of a Cortex-M node (options.irqs of its NVIC, else the 32-line
    multiple that covers its peripherals, as the built-in engine sizes it)."""
    opts = next((p.options for p in node.peripherals if p.type == "armv7m-nvic"), {})
    highest = max([p.irq for p in node.peripherals if p.irq is not None] + [31]) + 1
    return int(opts.get("irqs", max(32, -(-highest // 32) * 32)))


def _regions(node: Node) -> list[tuple[int, int, str]]:
    """[start, end) and a name of everything already in a node's address map."""
    out = [(m.address, m.end, f"memory {m.name or m.type} at {m.address:#x}") for m in node.memory]
    out += [(p.address, p.address + p.size, f"peripheral {p.id} at {p.address:#x}") for p in node.peripherals]
    return out


def _except_host_ram(regions: list[tuple[int, int, str]], node: Node, address: int,
                     size: int) -> list[tuple[int, int, str]]:
    """`regions` without the one RAM region that wholly contains [address, +size): a window there is
    carved out of that RAM (that part of the node's RAM is the shared or forwarded memory)."""
    host = next((m for m in node.memory if m.type == "RAM" and m.contains(address, size)), None)
    if host is None:
        return regions
    return [r for r in regions if not (r[0] == host.address and r[2].startswith("memory"))]


def _overlap(regions: list[tuple[int, int, str]], start: int, end: int) -> str | None:
    return next((name for lo, hi, name in regions if start < hi and lo < end), None)


class BoardConfig(Model):
    system_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    name: str
    description: str = ""
    nodes: list[Node] = Field(min_length=1)
    interconnect: Interconnect = Interconnect()

    @model_validator(mode="after")
    def _references(self) -> BoardConfig:
        ids = [n.id for n in self.nodes]
        for i, node_id in enumerate(ids):
            if node_id in ids[:i]:
                raise FieldProblem(f"duplicate node id {node_id!r}", "nodes", i, "id")
        nodes = {n.id: n for n in self.nodes}
        ic = self.interconnect
        taken = {n.id: _regions(n) for n in self.nodes}
        for i, sm in enumerate(ic.shared_memory):
            for node_id, address in sm.mappings.items():
                where = ("interconnect", "shared_memory", i, "mappings", node_id)
                if node_id not in nodes:
                    raise FieldProblem(f"shared_memory {sm.id!r} maps unknown node {node_id!r}", *where)
                if address % 4096 or sm.size % 4096:
                    raise FieldProblem(f"shared_memory {sm.id!r}: address {address:#x} and size {sm.size:#x} on "
                                       f"{node_id} must be multiples of 4K (emulators map whole pages)", *where)
                clash = _overlap(_except_host_ram(taken[node_id], nodes[node_id], address, sm.size), address,
                                 address + sm.size)
                if clash:
                    raise FieldProblem(f"shared_memory {sm.id!r} at {address:#x}..{address + sm.size:#x} on "
                                       f"{node_id} overlaps {clash}", *where)
                taken[node_id].append((address, address + sm.size, f"shared_memory {sm.id} at {address:#x}"))
        for i, route in enumerate(ic.irq_routes):
            parts = route.source.split(".")
            if parts[0] not in nodes:
                raise FieldProblem(f"irq route source names unknown node {parts[0]!r}", "interconnect", "irq_routes",
                                   i, "source")
            if len(parts) < 2 or not any(p.id == parts[1] for p in nodes[parts[0]].peripherals):
                raise FieldProblem(f"irq route source {route.source!r} must be node.peripheral[.pin] with a "
                                   f"peripheral of node {parts[0]}", "interconnect", "irq_routes", i, "source")
            if route.target not in nodes:
                raise FieldProblem(f"irq route names unknown node {route.target!r}", "interconnect", "irq_routes", i,
                                   "target")
            lines = nvic_lines(nodes[route.target])
            if nodes[route.target].processor.profile == "m" and route.irq >= lines:
                raise FieldProblem(f"irq {route.irq} does not exist on {route.target}: its NVIC has lines 0..{lines - 1}",
                                   "interconnect", "irq_routes", i, "irq")
        for i, m in enumerate(ic.mmio_map):
            target_id = m.target.split(".", 1)[0]
            for field, ref in (("node", m.node), ("target", target_id)):
                if ref not in nodes:
                    raise FieldProblem(f"mmio_map names unknown node {ref!r}", "interconnect", "mmio_map", i, field)
            clash = _overlap(_except_host_ram(taken[m.node], nodes[m.node], m.address, m.size), m.address,
                             m.address + m.size)
            if clash:
                raise FieldProblem(f"mmio_map range {m.address:#x}..{m.address + m.size:#x} on {m.node} overlaps {clash}",
                                   "interconnect", "mmio_map", i, "address")
            target = nodes[target_id]
            if not any(r.contains(m.target_address, m.size) for r in target.memory) and not any(
                    p.address <= m.target_address and m.target_address + m.size <= p.address + p.size
                    for p in target.peripherals):
                raise FieldProblem(f"mmio_map forwards {m.size:#x} bytes to {target_id} at {m.target_address:#x}, which "
                                   f"is not inside one of {target_id}'s memory regions or peripherals (size mismatch?)",
                                   "interconnect", "mmio_map", i, "size")
            taken[m.node].append((m.address, m.address + m.size, f"mmio_map[{i}]"))
        linked: dict[str, int] = {}
        for i, link in enumerate(ic.uart_links):
            for field in ("a", "b"):
                ref = getattr(link, field)
                node_id, _, periph = ref.partition(".")
                if node_id not in nodes:
                    raise FieldProblem(f"uart link names unknown node {node_id!r}", "interconnect", "uart_links", i,
                                       field)
                uart = next((p for p in nodes[node_id].peripherals if p.id == periph), None)
                if uart is None or uart.type not in UART_TYPES:
                    raise FieldProblem(f"uart link end {ref!r} is not a UART of {node_id} ({', '.join(UART_TYPES)})",
                                       "interconnect", "uart_links", i, field)
                if ref in linked:
                    raise FieldProblem(f"{ref} is already linked by uart_links[{linked[ref]}]", "interconnect",
                                       "uart_links", i, field)
                linked[ref] = i
        return self

    @property
    def multi_node(self) -> bool:
        return len(self.nodes) > 1

    @property
    def session_backend(self) -> str:
        """The backend a session of this board shows (unless --backend picks another for a
        one-node board): a multi-node board's session is a system whose nodes keep their own."""
        return SYSTEM_BACKEND if self.multi_node else self.nodes[0].backend

    def console_peripheral(self, node: Node) -> Peripheral | None:
        return next((p for p in node.peripherals if p.console), None)

    def console_tx_register(self, node: Node) -> int | None:
        """The address the firmware writes each console byte to (None: no console, or a UART model
        virsim does not know the registers of)."""
        uart = self.console_peripheral(node)
        if uart is None or uart.type not in UART_TX_REGISTER:
            return None
        return uart.address + UART_TX_REGISTER[uart.type]

    def with_node_backends(self, choice: str) -> BoardConfig:
        """This multi-node board with its nodes on other backends: `choice` is one backend for every
        node ("renode") or NODE=BACKEND pairs ("cpu1=renode,cpu2=qemu"); the rest keep theirs."""
        ids = [n.id for n in self.nodes]
        pairs = [part.strip() for part in choice.split(",") if part.strip()]
        everywhere = len(pairs) == 1 and "=" not in pairs[0]
        wanted = {i: pairs[0] for i in ids} if everywhere else dict(part.split("=", 1) for part in pairs if "=" in part)
        if not wanted or (not everywhere and len(wanted) != len(pairs)):
            raise InvalidInput(f"--backend {choice!r}: one backend for every node (e.g. renode) or NODE=BACKEND "
                               "pairs separated by commas (e.g. cpu1=renode)", field="backend", value=choice)
        for node_id, backend in wanted.items():
            if node_id not in ids:
                raise InvalidInput(f"--backend {node_id}={backend}: board {self.system_id} has no node {node_id!r} "
                                   f"(nodes: {', '.join(ids)})", field="backend", value=node_id, nodes=ids)
            if backend not in BACKENDS:
                raise InvalidInput(f"--backend {node_id}={backend}: no backend {backend!r} (one of "
                                   f"{', '.join(BACKENDS)})", field="backend", value=backend)
        nodes = [n.model_copy(update={"backend": wanted[n.id], "runs_on": sorted({*n.runs_on, wanted[n.id]})})
                 if n.id in wanted else n for n in self.nodes]
        return self.model_copy(update={"nodes": nodes})


# --------------------------------------------------------------------------------------------- loading


def parse_board(text: str, source: str) -> BoardConfig:
    """Parse YAML or JSON board text; raise BoardConfigError naming file, field path, line and value."""
    return load_model(text, source, BoardConfig, BoardConfigError, "a board file must be a mapping with "
                      "system_id, name and nodes")


def load_board_file(path: Path) -> BoardConfig:
    board = parse_board(limits.read_text(path, "board file", error=BoardConfigError), str(path))
    # A node's SVD file is named relative to the board file: from here on it is absolute.
    nodes = [n.model_copy(update={"svd": str((path.parent / n.svd).resolve())})
             if n.svd and not Path(n.svd).is_absolute() else n for n in board.nodes]
    return board.model_copy(update={"nodes": nodes})


def _templates() -> dict[str, Path]:
    folder = resources.files("virsim.board_templates")
    out: dict[str, Path] = {}
    for entry in folder.iterdir():
        if entry.name.endswith((".yaml", ".yml", ".json")):
            out[entry.name.rsplit(".", 1)[0]] = Path(str(entry))
    return dict(sorted(out.items()))


def list_templates() -> dict[str, BoardConfig]:
    return {name: load_board_file(path) for name, path in _templates().items()}


def resolve_board(ref: str) -> tuple[BoardConfig, str]:
    """A template name or a file path -> (board, where it came from)."""
    templates = _templates()
    if ref in templates:
        return load_board_file(templates[ref]), str(templates[ref])
    path = Path(ref).expanduser()
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        if not path.exists():
            raise NotFound(f"board file {ref} does not exist", kind="board", id=ref)
        return load_board_file(path), str(path.resolve())
    raise NotFound(f"no board named {ref!r}; known boards: {', '.join(templates)} (or give a .yaml/.json path)",
                   kind="board", id=ref, known=list(templates))


def board_json_schema() -> dict[str, Any]:
    return BoardConfig.model_json_schema()


def board_to_dict(board: BoardConfig) -> dict[str, Any]:
    return json.loads(board.model_dump_json())
