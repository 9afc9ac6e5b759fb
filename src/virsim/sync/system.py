"""A multi-node system: one emulator process per node, joined by the lockstep barrier;
`ConsoleMerger` turns the nodes' console timelines into one log ordered by virtual time.

`plan()` turns a BoardConfig's interconnect into what each node's instance needs — its shared
memory windows (one file per shared region, mapped by every node that names it), and its
outgoing routes: which GPIO pins raise which interrupt line on which node, which UART's bytes go
to which node's UART — plus the barrier segment (virsim.sync.lockstep). `System` starts the
nodes halted, runs them together, and stops every one of them whatever happens.

Nodes run on the built-in engine (it stops exactly at a quantum boundary), on QEMU, held to the
barrier by the vsync TCG plugin (backends/qemu/plugins/vsync.c), or on Renode: every Renode node of
a board in one Renode emulation whose quantum is the barrier's, joined to it by virsim's extension
(backends/renode/VirsimRenode.cs). docs/multinode.md says what each supports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from virsim.backends import get_backend
from virsim.backends.base import BackendAdapter, Capability, Instance, InstanceSpec, SharedMapping
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
    backend: str = "builtin"


@dataclass
class Plan:
    segment: Path
    quantum: int  # cycles
    nodes: list[NodePlan] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)  # shared-memory files and their sizes


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


NODE_BACKENDS = ("builtin", "qemu", "renode")  # backends a node of a multi-node system can run on (LOCKSTEP)


def _qemu_ram_files(board: BoardConfig, rundir: Path) -> dict[str, tuple[str, int, int]]:
    """QEMU nodes that share memory: QEMU can only back its machine RAM as a whole with a file, so
    that file is what they share. Nodes joined by shared regions (directly or through another QEMU
    node) get one file; every region a QEMU node is in lives in it, at the offset of its window in
    that node's machine RAM. Returns {shared region id: (file, offset, file size)}."""
    nodes = {n.id: n for n in board.nodes}
    group: dict[str, str] = {}  # QEMU node -> its group's file (union of nodes sharing a region)

    def find(node_id: str) -> str:
        while group.setdefault(node_id, node_id) != node_id:
            node_id = group[node_id]
        return node_id

    out: dict[str, tuple[str, int, int]] = {}
    for i, sm in enumerate(board.interconnect.shared_memory):
        qemu_nodes = [n for n in sm.mappings if nodes[n].backend == "qemu"]
        offsets = set()
        for n in qemu_nodes:
            ram = nodes[n].qemu.machine_ram if nodes[n].qemu else None
            where = f"interconnect.shared_memory[{i}].mappings.{n}"
            if ram is None:
                raise NotSupported(f"shared_memory {sm.id!r}: QEMU node {n} has no qemu.machine_ram (the RAM QEMU "
                                   "can back with a file), so it cannot share memory", field=where)
            at = sm.mappings[n]
            if not (ram.address <= at and at + sm.size <= ram.address + ram.size):
                raise NotSupported(f"shared_memory {sm.id!r} at {at:#x} on QEMU node {n} must lie inside its machine "
                                   f"RAM {ram.address:#x}..{ram.address + ram.size:#x} (QEMU shares that RAM as a "
                                   "whole)", field=where, value=hex(at))
            offsets.add((at - ram.address, ram.size))
        if len(offsets) > 1:
            raise NotSupported(f"shared_memory {sm.id!r}: QEMU nodes {', '.join(qemu_nodes)} share their whole machine "
                               "RAM, so the region must sit at the same offset in each",
                               field=f"interconnect.shared_memory[{i}].mappings")
        for n in qemu_nodes[1:]:
            group[find(n)] = find(qemu_nodes[0])
        if offsets:
            offset, size = offsets.pop()
            out[sm.id] = (qemu_nodes[0], offset, size)
    return {sid: (str(rundir / f"ram-{find(n)}"), offset, size) for sid, (n, offset, size) in out.items()}


def plan(board: BoardConfig, firmware: dict[str, FirmwareImage | None], workdir: Path, rundir: Path,
         quantum: int, base: InstanceSpec | None = None, mode: str = "timeslice") -> Plan:
    """Per-node instance specs for `board`: each node on its board backend (built-in or QEMU)."""
    index = {n.id: i for i, n in enumerate(board.nodes)}
    segment = rundir / "lockstep.seg"
    out = Plan(segment=segment, quantum=quantum)
    ic = board.interconnect
    for i, node in enumerate(board.nodes):
        if node.backend not in NODE_BACKENDS:
            raise NotSupported(f"node {node.id!r} runs on {node.backend}: nodes of a multi-node board run on "
                               f"{' or '.join(NODE_BACKENDS)}", field=f"nodes[{i}].backend", value=node.backend)
    qemu_files = _qemu_ram_files(board, rundir)
    qemu = {n.id for n in board.nodes if n.backend == "qemu"}
    emulated = {n.id: n.backend for n in board.nodes if n.backend in ("qemu", "renode")}
    for j, route in enumerate(ic.irq_routes):
        if route.source.split(".")[0] in qemu:
            raise NotSupported(f"irq route from {route.source}: a QEMU node cannot raise another node's interrupt "
                               "(QEMU 7.2 models no AN385 GPIO, and virsim cannot see its pins)",
                               field=f"interconnect.irq_routes[{j}].source")
    for j, m in enumerate(ic.mmio_map):
        for end in (m.node, m.target.split(".", 1)[0]):
            if end in emulated:
                raise NotSupported(f"mmio_map[{j}]: forwarding to or from a {emulated[end]} node ({end}) is not "
                                   "implemented (share memory instead)", field=f"interconnect.mmio_map[{j}]")
    for i, node in enumerate(board.nodes):
        shared = []
        for sm in ic.shared_memory:
            if node.id in sm.mappings:
                path, offset = (qemu_files[sm.id][0], qemu_files[sm.id][1]) if sm.id in qemu_files else (
                    str(rundir / f"shm-{sm.id}"), 0)
                shared.append(SharedMapping(path=path, address=sm.mappings[node.id], size=sm.size, name=sm.id,
                                            offset=offset))
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
        # out of its RAM), so the range is that memory, coherent at once. Onto a peripheral: each
        # access is a bus transaction through the barrier (engine: _forwarded_read; docs/multinode.md).
        mmio_out = []
        for j, m in enumerate(ic.mmio_map):
            target_id = m.target.split(".", 1)[0]
            target = board.nodes[index[target_id]]
            if m.address % 4096 or m.size % 4096:
                raise NotSupported(f"mmio_map[{j}]: address and size must be multiples of 4K (the window is mapped "
                                   "in whole pages)", field=f"interconnect.mmio_map[{j}]")
            if "." in m.target or not any(r.contains(m.target_address, m.size) for r in target.memory):
                if m.node == node.id:
                    mmio_out.append([m.address, m.size, index[target_id], m.target_address])
                continue
            if m.target_address % 4096:
                raise NotSupported(f"mmio_map[{j}]: target_address must be a multiple of 4K for forwarding to "
                                   "memory", field=f"interconnect.mmio_map[{j}]")
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
            lockstep={"segment": str(segment), "index": i, "irq_out": irq_out, "uart_out": uart_out, "mmio_out": mmio_out,
                      "timeline": str(node_dir / "console.timeline"),
                      "max_quantum": EVENT_MAX_QUANTUM if mode == "event" else 0})
        if base is not None:
            spec = replace(spec, coverage=base.coverage)
        out.nodes.append(NodePlan(node.id, i, spec, node.backend))
        for sm in shared:  # sized before any node maps it (QEMU's RAM file must be whole)
            out.files[sm.path] = max(out.files.get(sm.path, 0), sm.offset + sm.size,
                                     next((f[2] for f in qemu_files.values() if f[0] == sm.path), 0))
    return out


class System:
    """The running nodes of a plan."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.instances: dict[str, Instance] = {}

    def start(self, run: bool = True) -> None:
        """Power every node on, halted; then (`run`) let them all run (they meet at the first barrier)."""
        lockstep.create(self.plan.segment, len(self.plan.nodes), self.plan.quantum)
        for path, size in self.plan.files.items():
            with open(path, "ab") as f:
                if f.tell() < size:
                    f.truncate(size)
        try:
            for n in self.plan.nodes:
                backend = get_backend(n.backend)
                if Capability.LOCKSTEP not in backend.get_capabilities():
                    raise NotSupported(f"node {n.node}: backend {n.backend} cannot join a lockstep")
                backend.check_node(n.spec.node)
            for backend, members in self.groups():
                if backend.one_emulation_per_board:
                    inst = backend.create_group([n.spec for n in members])
                    self.instances.update((n.node, inst) for n in members)
                    inst.power_on()
                    continue
                for n in members:
                    self.instances[n.node] = backend.create_instance(n.spec)
                    self.instances[n.node].power_on()
            if not run:
                lockstep.set_command(self.plan.segment, lockstep.PAUSE)
            for backend, members in self.groups():
                if run or backend.held_at_barrier:  # they always run: a paused system holds them at the barrier
                    for inst in unique(self.instances[n.node] for n in members):
                        inst.resume()
        except BaseException:
            self.stop()
            raise

    def groups(self) -> list[tuple[BackendAdapter, list[NodePlan]]]:
        """The plan's nodes by backend, in board order."""
        out: dict[str, list[NodePlan]] = {}
        for n in self.plan.nodes:
            out.setdefault(n.backend, []).append(n)
        return [(get_backend(name), members) for name, members in out.items()]

    def pause(self) -> None:
        self.hold(False)

    def resume(self) -> None:
        self.hold(True)

    def hold(self, run: bool, keep: str | None = None) -> None:
        """Hold every node (`run` False) or let every node run again, except `keep` (the node a
        debugger runs and halts itself). Built-in engines are paused over their control socket;
        QEMU nodes hold at their next barrier through the segment's PAUSE command (a QMP stop would
        wait for a vCPU that waits at the barrier)."""
        if not run:
            lockstep.set_command(self.plan.segment, lockstep.PAUSE)
        for n in self.plan.nodes:
            if not get_backend(n.backend).held_at_barrier and n.node != keep and n.node in self.instances:
                if run:
                    self.instances[n.node].resume()
                else:
                    self.instances[n.node].pause()
        if run:
            lockstep.set_command(self.plan.segment, lockstep.RUN)

    def stop(self) -> None:
        """Stop every node (a node waiting at the barrier gives up at once)."""
        if self.plan.segment.exists():
            lockstep.set_command(self.plan.segment, lockstep.STOP)
        for inst in unique(self.instances.values()):
            try:
                inst.destroy()
            except Exception:  # noqa: BLE001 - the others must still be stopped
                pass
        self.instances.clear()


def unique(instances: Iterable[Instance]) -> list[Instance]:
    """Each instance once (the nodes of a one-emulation backend share one)."""
    return list({id(inst): inst for inst in instances}.values())


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
        self.skip = [0] * len(names)  # lines of each node already in `out` (resume_after)

    def resume_after(self, log: Path) -> None:
        """Continue a log a previous merger wrote (the daemon restarted): each node's lines there
        are the first ones of its timeline, so as many are read again but not written twice."""
        prefixes = [f"[{name}] ".encode() for name in self.names]
        try:
            lines = log.read_bytes().split(b"\n")[:-1]  # complete lines only: the merger writes no other
        except FileNotFoundError:
            return
        for line in lines:
            for i, prefix in enumerate(prefixes):
                if line.startswith(prefix):
                    self.skip[i] += 1
                    break

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
                        if self.skip[i]:
                            self.skip[i] -= 1  # written before a daemon restart
                        else:
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
                     "qemu": "inside qemu.machine_ram (shared as a whole)", "renode": "yes (a file-backed window)"})
    for r in ic.irq_routes:
        gpio = next((p for p in nodes[r.source.split(".")[0]].peripherals if p.id == r.source.split(".")[1]), None)
        ok = "yes" if gpio is not None and gpio.type == "cmsdk-gpio" else "not yet (GPIO sources only)"
        rows.append({"kind": "irq_route", "what": f"{r.source} -> {r.target} IRQ {r.irq}", "builtin": ok,
                     "qemu": "as target (from a built-in GPIO); not as source", "renode": ok})
    for m in ic.mmio_map:
        onto_memory = "." not in m.target and any(reg.contains(m.target_address, m.size)
                                                  for reg in nodes[m.target.split(".")[0]].memory)
        rows.append({"kind": "mmio_map", "what": f"{m.node}@{m.address:#x} ({m.size:#x} bytes) -> {m.target}@"
                     f"{m.target_address:#x}", "builtin": "yes" if onto_memory else "yes (writes land at the barrier, "
                     "reads stall to the next)",
                     "qemu": "not yet (use shared_memory)", "renode": "not yet (use shared_memory)"})
    for link in ic.uart_links:
        rows.append({"kind": "uart_link", "what": f"{link.a} <-> {link.b}", "builtin": "yes",
                     "qemu": "yes (a byte per quantum into QEMU's receiver)",
                     "renode": "yes (between Renode nodes: a Renode UART hub)"})
    return rows
