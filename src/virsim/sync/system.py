"""A multi-node system: one emulator process per node, joined by the lockstep barrier;
`ConsoleMerger` turns the nodes' console timelines into one log ordered by virtual time.

`plan()` turns a BoardConfig's interconnect into what each node's instance needs — its shared
memory windows (one file per shared region, mapped by every node that names it), and its
outgoing routes: which GPIO pins raise which interrupt line on which node, which UART's bytes go
to which node's UART — plus the barrier segment (virsim.sync.lockstep). `System` starts the
nodes halted, runs them together, and stops every one of them whatever happens.

Today the nodes run on the built-in engine, which can stop exactly at a quantum boundary
(run-for-N); see docs for what QEMU nodes need.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from virsim.backends import get_backend
from virsim.backends.base import Capability, Instance, InstanceSpec, SharedMapping
from virsim.board import BoardConfig
from virsim.errors import NotSupported
from virsim.firmware import FirmwareImage
from virsim.sync import lockstep

MODES = ("timeslice", "step", "event")
EVENT_MAX_QUANTUM = 1 << 22  # event mode: quanta double up to ~4M cycles while no node sends anything


@dataclass
class NodePlan:
    node: str
    index: int
    spec: InstanceSpec


@dataclass
class Plan:
    segment: Path
    quantum: int  # cycles
    nodes: list[NodePlan] = field(default_factory=list)


def quantum_cycles(board: BoardConfig, mode: str, quantum: str | int) -> int:
    """`--quantum`: step mode counts instructions ("1", "1000"); timeslice mode takes a time
    ("100us", "1ms") converted with the slowest node's clock, or a plain cycle count."""
    if mode not in MODES:
        raise NotSupported(f"sync mode {mode!r}: one of {', '.join(MODES)}", field="sync", value=mode)
    text = str(quantum).strip().lower()
    for unit, seconds in (("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):  # "s" last: "ms" ends in s
        if text.endswith(unit):
            if mode == "step":
                raise NotSupported(f"--quantum {quantum}: step mode counts instructions (e.g. 1 or 1000)",
                                   field="quantum", value=str(quantum))
            hz = min(n.processor.frequency for n in board.nodes)
            return max(1, int(float(text[: -len(unit)]) * seconds * hz))
    return max(1, int(float(text)))


def plan(board: BoardConfig, firmware: dict[str, FirmwareImage | None], workdir: Path, rundir: Path,
         quantum: int, base: InstanceSpec | None = None, mode: str = "timeslice") -> Plan:
    """Per-node instance specs for `board` (every node on the built-in engine)."""
    index = {n.id: i for i, n in enumerate(board.nodes)}
    segment = rundir / "lockstep.seg"
    out = Plan(segment=segment, quantum=quantum)
    ic = board.interconnect
    for i, node in enumerate(board.nodes):
        shared = [SharedMapping(path=str(rundir / f"shm-{sm.id}"), address=sm.mappings[node.id], size=sm.size,
                                name=sm.id) for sm in ic.shared_memory if node.id in sm.mappings]
        irq_out = []
        for route in ic.irq_routes:
            parts = route.source.split(".")
            if parts[0] == node.id:
                source = next(p for p in node.peripherals if p.id == parts[1])
                if source.type != "cmsdk-gpio":
                    raise NotSupported(f"irq route from {route.source}: only GPIO outputs (cmsdk-gpio) can raise "
                                       f"another node's interrupt yet, not a {source.type}", field="interconnect.irq_routes")
                pin = int(parts[2]) if len(parts) > 2 else -1
                irq_out.append([parts[1], pin, index[route.target], route.irq])
        uart_out = []
        for link in ic.uart_links:
            for src, dst in ((link.a, link.b), (link.b, link.a)):
                s_node, _, s_uart = src.partition(".")
                d_node, _, d_uart = dst.partition(".")
                if s_node == node.id:
                    slot = [p.id for p in board.nodes[index[d_node]].peripherals].index(d_uart)
                    uart_out.append([s_uart, index[d_node], slot])
        # mmio_map onto another node's memory: both map the same file (the target's window is carved
        # out of its RAM), so the range is that memory, coherent at once. Onto a peripheral: not yet.
        for j, m in enumerate(ic.mmio_map):
            target_id = m.target.split(".", 1)[0]
            target = board.nodes[index[target_id]]
            if "." in m.target or not any(r.contains(m.target_address, m.size) for r in target.memory):
                raise NotSupported(f"mmio_map[{j}]: forwarding to a peripheral ({m.target} at {m.target_address:#x}) "
                                   "is not implemented yet; forwarding to another node's memory is",
                                   field=f"interconnect.mmio_map[{j}]")
            if m.address % 4096 or m.size % 4096 or m.target_address % 4096:
                raise NotSupported(f"mmio_map[{j}]: address, size and target_address must be multiples of 4K",
                                   field=f"interconnect.mmio_map[{j}]")
            path = str(rundir / f"mmio-{j}")
            if m.node == node.id:
                shared.append(SharedMapping(path=path, address=m.address, size=m.size, name=f"mmio_map[{j}]"))
            if target_id == node.id:
                shared.append(SharedMapping(path=path, address=m.target_address, size=m.size, name=f"mmio_map[{j}]"))
        node_dir = workdir / node.id
        node_run = rundir / node.id
        node_dir.mkdir(parents=True, exist_ok=True)
        node_run.mkdir(parents=True, exist_ok=True)
        spec = InstanceSpec(
            session_id=base.session_id if base else "system", board=board, node=node, workdir=node_dir,
            rundir=node_run, console_log=node_dir / "console.log", stderr_log=node_dir / "emulator.log",
            firmware=firmware.get(node.id), deterministic=True, start_paused=True, shared_memory=shared,
            lockstep={"segment": str(segment), "index": i, "irq_out": irq_out, "uart_out": uart_out,
                      "timeline": str(node_dir / "console.timeline"),
                      "max_quantum": EVENT_MAX_QUANTUM if mode == "event" else 0})
        if base is not None:
            spec = replace(spec, coverage=base.coverage)
        out.nodes.append(NodePlan(node.id, i, spec))
    return out


class System:
    """The running nodes of a plan."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.instances: dict[str, Instance] = {}

    def start(self, run: bool = True) -> None:
        """Power every node on, halted; then (`run`) let them all run (they meet at the first barrier)."""
        lockstep.create(self.plan.segment, len(self.plan.nodes), self.plan.quantum)
        backend = get_backend("builtin")
        try:
            for n in self.plan.nodes:
                if Capability.RUN_FOR not in backend.get_capabilities():
                    raise NotSupported(f"node {n.node}: backend builtin cannot run for an exact count")
                inst = backend.create_instance(n.spec)
                self.instances[n.node] = inst
                inst.power_on()
            if run:
                for inst in self.instances.values():
                    inst.resume()
        except BaseException:
            self.stop()
            raise

    def pause(self) -> None:
        for inst in self.instances.values():
            inst.pause()

    def resume(self) -> None:
        for inst in self.instances.values():
            inst.resume()

    def stop(self) -> None:
        """Stop every node (a node waiting at the barrier gives up at once)."""
        if self.plan.segment.exists():
            lockstep.set_command(self.plan.segment, lockstep.STOP)
        for inst in self.instances.values():
            try:
                inst.destroy()
            except Exception:  # noqa: BLE001 - the others must still be stopped
                pass
        self.instances.clear()


def merged_console(plan: Plan) -> bytes:
    """Every node's console, line by line, ordered by the virtual time of each line's first byte
    (ties: board order), each line prefixed with its node: the same bytes on every rerun."""
    return ConsoleMerger([n.node for n in plan.nodes],
                         [n.spec.workdir / "console.timeline" for n in plan.nodes]).collect(None)


class ConsoleMerger:
    """Appends complete lines from the nodes' console timelines to the session log, in order of
    the virtual time of each line's first byte — but only lines before the time every node has
    reached, so a line that belongs earlier can never arrive after it was written."""

    def __init__(self, names: list[str], timelines: list[Path], out: Path | None = None) -> None:
        self.names = names
        self.timelines = timelines
        self.out = out
        self.offsets = [0] * len(names)
        self.partial: list[tuple[int | None, bytes]] = [(None, b"")] * len(names)
        self.pending: list[tuple[int, int, bytes]] = []

    def pump(self, horizon: int | None) -> None:
        """Append the lines that are ready to the log (see collect)."""
        data = self.collect(horizon)
        if data and self.out is not None:
            with self.out.open("ab") as f:
                f.write(data)

    def collect(self, horizon: int | None) -> bytes:
        """The lines now known to come next, prefixed. `horizon`: cycles every node had completed
        *before* this call (None: everything, the nodes stopped)."""
        for i, path in enumerate(self.timelines):
            try:
                with path.open("rb") as f:
                    f.seek(self.offsets[i])
                    data = f.read()
            except FileNotFoundError:
                continue
            at = 0
            start, line = self.partial[i]
            while at + lockstep.TIMELINE.size <= len(data):
                cycle, length = lockstep.TIMELINE.unpack_from(data, at)
                end = at + lockstep.TIMELINE.size + length
                if end > len(data):
                    break  # a record still being written
                for byte in data[at + lockstep.TIMELINE.size:end]:
                    if start is None:
                        start = cycle
                    line += bytes([byte])
                    if byte == 0x0A:
                        self.pending.append((start, i, line))
                        start, line = None, b""
                at = end
            self.offsets[i] += at
            self.partial[i] = (start, line)
        if horizon is None:
            for i, (start, line) in enumerate(self.partial):
                if line:
                    self.pending.append((start or 0, i, line + b"\n"))
            self.partial = [(None, b"")] * len(self.names)
        self.pending.sort(key=lambda item: (item[0], item[1]))
        if horizon is not None:
            # A line still being printed (no newline yet) holds back every later line.
            unfinished = [start for start, _ in self.partial if start is not None]
            horizon = min([horizon, *unfinished])
        ready = [p for p in self.pending if horizon is None or p[0] < horizon]
        self.pending = self.pending[len(ready):]
        return b"".join(f"[{self.names[i]}] ".encode() + text for _, i, text in ready)

def interconnect_support(board: BoardConfig) -> list[dict[str, str]]:
    """Each interconnect item of `board` and whether a multi-node session can run it, per backend
    of the nodes it joins (`virsim board show`; docs/multinode.md says why)."""
    rows = []
    ic = board.interconnect
    nodes = {n.id: n for n in board.nodes}
    for sm in ic.shared_memory:
        where = ", ".join(f"{n}@{a:#x}" for n, a in sm.mappings.items())
        rows.append({"kind": "shared_memory", "what": f"{sm.id} ({sm.size:#x} bytes): {where}", "builtin": "yes",
                     "qemu": "not yet"})
    for r in ic.irq_routes:
        gpio = next((p for p in nodes[r.source.split(".")[0]].peripherals if p.id == r.source.split(".")[1]), None)
        ok = "yes" if gpio is not None and gpio.type == "cmsdk-gpio" else "not yet (GPIO sources only)"
        rows.append({"kind": "irq_route", "what": f"{r.source} -> {r.target} IRQ {r.irq}", "builtin": ok,
                     "qemu": "not yet"})
    for m in ic.mmio_map:
        onto_memory = "." not in m.target and any(reg.contains(m.target_address, m.size)
                                                  for reg in nodes[m.target.split(".")[0]].memory)
        rows.append({"kind": "mmio_map", "what": f"{m.node}@{m.address:#x} ({m.size:#x} bytes) -> {m.target}@"
                     f"{m.target_address:#x}", "builtin": "yes" if onto_memory else "not yet (peripherals)",
                     "qemu": "not yet"})
    for link in ic.uart_links:
        rows.append({"kind": "uart_link", "what": f"{link.a} <-> {link.b}", "builtin": "yes", "qemu": "not yet"})
    return rows
