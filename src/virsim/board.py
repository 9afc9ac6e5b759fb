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

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from virsim.errors import BoardConfigError, NotFound

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


class BoardProblem(ValueError):
    """A validator's error about a field below the validated model (loc relative to that model)."""

    def __init__(self, message: str, *loc: Any) -> None:
        super().__init__(message)
        self.loc = loc


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


class Node(Model):
    id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    backend: Literal["qemu", "builtin", "renode", "skyeye"]
    processor: Processor
    memory: list[MemoryRegion] = Field(min_length=1)
    peripherals: list[Peripheral] = []
    qemu: QemuOptions | None = None

    @model_validator(mode="after")
    def _no_overlaps(self) -> Node:
        regions = sorted(enumerate(self.memory), key=lambda r: r[1].address)
        for (ia, a), (ib, b) in zip(regions, regions[1:]):
            if b.address < a.end:
                raise BoardProblem(f"memory[{ib}] at {b.address:#x} overlaps memory[{ia}] "
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
                raise BoardProblem(f"duplicate node id {node_id!r}", "nodes", i, "id")
        known = set(ids)
        ic = self.interconnect
        for i, sm in enumerate(ic.shared_memory):
            for node in sm.mappings:
                if node not in known:
                    raise BoardProblem(f"shared_memory {sm.id!r} maps unknown node {node!r}",
                                       "interconnect", "shared_memory", i, "mappings", node)
        for i, route in enumerate(ic.irq_routes):
            for field, ref in (("source", route.source.split(".", 1)[0]), ("target", route.target)):
                if ref not in known:
                    raise BoardProblem(f"irq route names unknown node {ref!r}", "interconnect", "irq_routes", i, field)
        for i, m in enumerate(ic.mmio_map):
            for field, ref in (("node", m.node), ("target", m.target.split(".", 1)[0])):
                if ref not in known:
                    raise BoardProblem(f"mmio_map names unknown node {ref!r}", "interconnect", "mmio_map", i, field)
        return self

    @property
    def multi_node(self) -> bool:
        return len(self.nodes) > 1

    def console_peripheral(self, node: Node) -> Peripheral | None:
        return next((p for p in node.peripherals if p.console), None)


# --------------------------------------------------------------------------------------------- loading


def _line_of(root: yaml.Node | None, path: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at `path`, or of its nearest existing parent."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for key in path:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            nxt = node.value[key]
        else:
            nxt = None
        if nxt is None:
            break
        node = nxt
        line = node.start_mark.line + 1
    return line


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _value_at(data: Any, loc: tuple[Any, ...]) -> Any:
    for key in loc:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def parse_board(text: str, source: str) -> BoardConfig:
    """Parse YAML or JSON board text; raise BoardConfigError naming file, field path, line and value."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise BoardConfigError(f"{source}:{line or '?'}: not valid YAML/JSON: {getattr(err, 'problem', err)}",
                               file=source, problems=[{"path": "", "line": line, "message": str(err)}]) from err
    if not isinstance(data, dict):
        raise BoardConfigError(f"{source}: a board file must be a mapping with system_id, name and nodes",
                               file=source, problems=[{"path": "", "message": "expected a mapping"}])
    try:
        return BoardConfig.model_validate(data)
    except ValidationError as err:
        problems = []
        # A misspelled key (extra field) explains a missing one: report it first.
        for e in sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden"):
            loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            loc += getattr((e.get("ctx") or {}).get("error"), "loc", ())
            value = _value_at(data, loc) if loc else None
            problems.append({"path": _dotted(loc), "line": _line_of(root, loc), "value": value,
                             "message": e["msg"].removeprefix("Value error, ")})
        first = problems[0]
        where = f"{source}:{first['line']}" if first["line"] else source
        shown = f" (got {first['value']!r})" if first["value"] is not None and not isinstance(
            first["value"], (dict, list)) else ""
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BoardConfigError(f"{where}: {first['path']}: {first['message']}{shown}{more}",
                               file=source, problems=problems) from err


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
