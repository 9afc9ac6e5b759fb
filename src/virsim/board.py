"""BoardConfig: the pydantic model of a board (the spec's schema), its loader and the templates.

A board is a system: `system_id`, `name`, `nodes[]` (each with backend, processor, memory[],
peripherals[]) and `interconnect` (shared_memory[], irq_routes[], mmio_map[]). Files may be YAML
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

from virsim.errors import BoardConfigError, NotFound
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


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Processor(Model):
    type: str = Field(description="processor type, e.g. cortex-m3, cortex-a15")
    cores: int = Field(1, ge=1, le=64)
    frequency: Frequency = Field(description="core clock in Hz, or e.g. 25MHz")

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

    @property
    def end(self) -> int:
        return self.address + self.size

    def contains(self, start: int, length: int) -> bool:
        return self.address <= start and start + length <= self.end


class Peripheral(Model):
    id: str
    type: str = Field(description="model type, e.g. cmsdk-uart, pl011, systick")
    address: Size
    size: Size = 0x1000
    irq: int | None = Field(None, ge=0)
    console: bool = Field(False, description="this UART is the session's console")
    options: dict[str, Any] = {}


class QemuOptions(Model):
    machine: str = Field(description="QEMU machine (-M), e.g. mps2-an385")
    cpu: str | None = Field(None, description="QEMU -cpu, when the machine's default is not wanted")
    binary: str | None = Field(None, description="QEMU binary; derived from the processor when omitted")
    extra_args: list[str] = []


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
    qemu: QemuOptions | None = None

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
        ids = [p.id for p in self.peripherals]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate peripheral id(s): {', '.join(sorted(dup))}")
        if sum(p.console for p in self.peripherals) > 1:
            raise ValueError("at most one peripheral may be the console")
        return self


class SharedMemory(Model):
    id: str
    size: Size = Field(gt=0)
    mappings: dict[str, Size] = Field(description="node id -> address where that node sees the region")


class IrqRoute(Model):
    source: str = Field(description="node.peripheral or node.signal raising the line")
    target: str = Field(description="node id receiving the interrupt")
    irq: int = Field(ge=0)


class MmioMap(Model):
    node: str
    address: Size
    size: Size = Field(gt=0)
    target: str = Field(description="node id (or node.peripheral) the range is forwarded to")
    target_address: Size = 0


class Interconnect(Model):
    shared_memory: list[SharedMemory] = []
    irq_routes: list[IrqRoute] = []
    mmio_map: list[MmioMap] = []


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
        known = set(ids)
        ic = self.interconnect
        for i, sm in enumerate(ic.shared_memory):
            for node in sm.mappings:
                if node not in known:
                    raise FieldProblem(f"shared_memory {sm.id!r} maps unknown node {node!r}",
                                       "interconnect", "shared_memory", i, "mappings", node)
        for i, route in enumerate(ic.irq_routes):
            for field, ref in (("source", route.source.split(".", 1)[0]), ("target", route.target)):
                if ref not in known:
                    raise FieldProblem(f"irq route names unknown node {ref!r}", "interconnect", "irq_routes", i, field)
        for i, m in enumerate(ic.mmio_map):
            for field, ref in (("node", m.node), ("target", m.target.split(".", 1)[0])):
                if ref not in known:
                    raise FieldProblem(f"mmio_map names unknown node {ref!r}", "interconnect", "mmio_map", i, field)
        return self

    @property
    def multi_node(self) -> bool:
        return len(self.nodes) > 1

    def console_peripheral(self, node: Node) -> Peripheral | None:
        return next((p for p in node.peripherals if p.console), None)


# --------------------------------------------------------------------------------------------- loading


def parse_board(text: str, source: str) -> BoardConfig:
    """Parse YAML or JSON board text; raise BoardConfigError naming file, field path, line and value."""
    return load_model(text, source, BoardConfig, BoardConfigError, "a board file must be a mapping with "
                      "system_id, name and nodes")


def load_board_file(path: Path) -> BoardConfig:
    try:
        text = path.read_text()
    except OSError as err:
        raise BoardConfigError(f"{path}: cannot read board file: {err.strerror}", file=str(path)) from err
    return parse_board(text, str(path))


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
