"""A multi-node board as one session: the "system" backend.

The session service drives every session through one Instance; for a board with several nodes
that instance is a `SystemInstance`: it starts one emulator process per node in lockstep
(virsim.sync.system), acts on all of them together (pause, resume, reset, power), fails as a
whole when one node dies (naming the node and why; the others are stopped), and writes the
session's console log as every node's output merged line by line in virtual-time order, each line
prefixed `[node]` (virsim.sync.system.ConsoleMerger). Each node's own log stays in `<session dir>/<node>/console.log`.

`InstanceSpec.system` carries what the session asked for: {"firmware": {node: path}, "sync": mode,
"quantum": cycles}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from virsim.backends import get_backend
from virsim.backends.base import BackendAdapter, Capability, Instance, InstanceSpec, RunStatus, ToolCheck
from virsim.backends.process import ExitStatus
from virsim.board import SYSTEM_BACKEND, Node
from virsim.errors import NotSupported
from virsim.firmware import inspect
from virsim.sync import lockstep
from virsim.sync.system import NODE_BACKENDS, ConsoleMerger, System, plan, unique



class SystemInstance(Instance):
    def __init__(self, spec: InstanceSpec) -> None:
        super().__init__(spec)
        cfg = spec.system or {}
        images = {node: inspect(Path(path)) for node, path in (cfg.get("firmware") or {}).items()}
        self.mode = str(cfg.get("sync", "timeslice"))
        self.plan = plan(spec.board, images, spec.workdir, spec.rundir, int(cfg.get("quantum", 2500)), mode=self.mode)
        self.system: System | None = None
        self.view: lockstep.Lockstep | None = None  # the running system's segment, read for show and the merger
        self.paused = bool(spec.start_paused)
        self.backends = {n.node: n.backend for n in self.plan.nodes}
        self.merger = self._merger()
        self._fds: dict[int, Instance] = {}

    def _merger(self) -> ConsoleMerger:
        return ConsoleMerger([n.node for n in self.plan.nodes],
                             [n.spec.workdir / "console.timeline" for n in self.plan.nodes], self.spec.console_log)

    @classmethod
    def reattach(cls, spec: InstanceSpec, handle: dict[str, Any]) -> SystemInstance | None:
        """The system still running from before a daemon restart: every node re-attached (they kept
        meeting at their barriers meanwhile), the merged console continued where it stopped. If
        any node cannot be re-attached, the others are stopped and the session is lost."""
        inst = cls(spec)
        nodes = handle.get("nodes") or {}
        if not inst.plan.segment.exists() or set(nodes) != {n.node for n in inst.plan.nodes}:
            return None
        system = System(inst.plan)
        for backend, members in system.groups():
            if backend.one_emulation_per_board:
                group = backend.attach_group([n.spec for n in members], nodes[members[0].node])
                attached = [(n.node, group) for n in members]
            else:
                attached = [(n.node, backend.attach(n.spec, nodes[n.node])) for n in members]
            for name, node in attached:
                if node is None:
                    system.stop()  # a system missing a node cannot go on: stop the rest (the STOP command first)
                    return None
                system.instances[name] = node
        inst.system = system
        inst.view = lockstep.Lockstep(inst.plan.segment, 0)
        inst.paused = inst.view.command() == lockstep.PAUSE
        inst.merger.resume_after(spec.console_log)
        return inst

    @property
    def nodes(self) -> dict[str, Instance]:
        return self.system.instances if self.system is not None else {}

    # ------------------------------------------------------------------------------ supervision
    @property
    def pid(self) -> int | None:
        return next((inst.pid for inst in self.nodes.values()), None)

    def pids(self) -> list[int]:
        return [pid for inst in unique(self.nodes.values()) for pid in inst.pids()]

    def handle(self) -> dict[str, Any]:
        return {"nodes": {name: inst.handle() for name, inst in self.nodes.items()}}

    def exit_status(self) -> ExitStatus | None:
        for name, inst in self.nodes.items():
            status = inst.exit_status()
            if status is not None:
                return ExitStatus(status.returncode, f"node {name}: {status.reason}", status.stderr_tail)
        return None

    def poll_fds(self) -> list[int]:
        self._fds = {fd: inst for inst in self.nodes.values() for fd in inst.poll_fds()}
        return list(self._fds)

    def on_readable(self, fd: int) -> None:
        inst = self._fds.get(fd)
        if inst is not None:
            inst.on_readable(fd)

    def tick(self) -> None:
        for inst in unique(self.nodes.values()):
            inst.tick()
        # The horizon first, the timelines after: a node writes a byte's record before it publishes
        # that it got past it, so every line that starts before the horizon is then in the files.
        self.merger.pump(self._horizon())

    def _horizon(self) -> int:
        view = self.view
        return min(view.reached(i) for i in range(view.nodes)) if view is not None else 0

    # ----------------------------------------------------------------------------------- power
    def power_on(self) -> None:
        for n in self.plan.nodes:  # a fresh run: the timelines start again with the node clocks
            (n.spec.workdir / "console.timeline").unlink(missing_ok=True)
        self.merger = self._merger()
        self.system = System(self.plan)
        self.system.start(run=not self.spec.start_paused)
        self.view = lockstep.Lockstep(self.plan.segment, 0)

    def power_off(self) -> None:
        if self.view is not None:
            self.view.close()
            self.view = None
        if self.system is not None:
            self.system.stop()
            self.system = None
            self.merger.pump(None)  # the nodes stopped: every line left is final

    def destroy(self) -> None:
        self.power_off()

    def reset(self) -> None:
        # Every node back to its first instruction at virtual time 0, together: a fresh lockstep.
        paused = not self.run_status().running
        self.power_off()
        self.spec.start_paused = paused
        self.power_on()

    def pause(self) -> None:
        if self.system is not None:
            self.system.pause()
            self.paused = True

    def resume(self) -> None:
        if self.system is not None:
            self.system.resume()
            self.paused = False

    def _held(self, name: str) -> bool:
        return get_backend(self.backends[name]).held_at_barrier

    def _node_status(self, name: str, inst: Instance) -> RunStatus:
        if self._held(name):
            # Never its control channel: QEMU does not answer QMP while vsync waits at the barrier.
            return RunStatus(not self.paused, "paused (held at the barrier)" if self.paused else "running")
        return inst.run_status()

    def run_status(self) -> RunStatus:
        statuses = {name: self._node_status(name, inst) for name, inst in self.nodes.items()}
        return RunStatus(bool(statuses) and all(s.running for s in statuses.values()),
                         ", ".join(f"{n}: {s.detail}" for n, s in statuses.items()))

    def _clock(self, name: str, inst: Instance) -> tuple[int | None, int | None]:
        """(virtual ns, instructions) of a node; a QEMU or Renode node's from its slot in the segment."""
        if not self._held(name):
            return inst.virtual_time_ns(), inst.instructions()
        if self.view is None:
            return None, None
        index = next(n.index for n in self.plan.nodes if n.node == name)
        ns = self.view.reached(index) * 1_000_000_000 // inst.spec.node.processor.frequency
        return ns, self.view.stats(index)["instructions"]

    def virtual_time_ns(self) -> int | None:
        times = [self._clock(name, inst)[0] for name, inst in self.nodes.items()]
        return min(t for t in times if t is not None) if times and None not in times else None

    def instructions(self) -> int | None:
        counts = [self._clock(name, inst)[1] for name, inst in self.nodes.items()]
        return sum(c for c in counts if c is not None) if counts else None

    # --------------------------------------------------------------------------------- console
    def console_write(self, data: bytes) -> int:
        first = next((n for n in self.plan.nodes if self.spec.board.console_peripheral(n.spec.node)), None)
        if first is None or first.node not in self.nodes:
            raise NotSupported("no node of this board has a console UART", capability=str(Capability.CONSOLE))
        return self.nodes[first.node].console_write(data)

    def release_undebugged(self, run: bool) -> None:
        if self.system is not None:
            self.system.hold(run, keep=self.spec.node.id)
            self.paused = not run

    def gdb_endpoint(self) -> str | None:
        """The gdb stub of the node being debugged (`spec.node`: the session row's node, which the
        debug service moves with `debug … --node`). Built-in nodes only (see DebugService)."""
        inst = self.nodes.get(self.spec.node.id)
        return inst.gdb_endpoint() if inst is not None and self.backends[self.spec.node.id] == "builtin" else None

    def details(self) -> dict[str, Any]:
        """Per node and for the synchroniser, for `session show`."""
        nodes = []
        for n in self.plan.nodes:
            inst = self.nodes.get(n.node)
            info: dict[str, Any] = {"node": n.node, "backend": n.backend, "state": "stopped"}
            if inst is not None and inst.exit_status() is None:
                status = self._node_status(n.node, inst)
                ns, insns = self._clock(n.node, inst)
                info.update(state="running" if status.running else "paused", pid=inst.pid, virtual_ns=ns,
                            instructions=insns)
                if self.view is not None:
                    stats = self.view.stats(n.index)
                    info["barrier_wait_s"] = round(stats["wait_ns"] / 1e9, 6)  # host time spent waiting for others
                    if n.backend == "qemu":
                        info["skew_max_ns"] = stats["skew_max_ns"]  # how late past a quantum's end it met a barrier
            nodes.append(info)
        sync: dict[str, Any] = {"mode": self.mode, "quantum_cycles": self.plan.quantum, "quanta": 0}
        view = self.view
        if view is not None:
            sync["quanta"] = min(view.arrived(i) for i in range(view.nodes))
            sync["barrier_wait_s"] = round(sum(view.stats(i)["wait_ns"] for i in range(view.nodes)) / 1e9, 6)
        return {"nodes": nodes, "sync": sync}

    def endpoints(self) -> dict[str, str]:
        out = {}
        for name, inst in self.nodes.items():
            if self.backends[name] == "qemu":
                out[f"{name} control"] = str(inst.spec.rundir / "qmp.sock")
            elif self.backends[name] == "renode":
                out[f"{name} control"] = inst.endpoints()["monitor"] + " (Renode's monitor, every Renode node)"
            else:
                out[f"{name} control"] = f"ipc://{inst.spec.rundir / 'engine.sock'}"
        return out


class SystemBackend(BackendAdapter):
    """Boards with more than one node (chosen by the session service, not by --backend)."""

    name = SYSTEM_BACKEND
    capabilities = frozenset({
        # No program-*: each node's program is fixed at `session create --firmware NODE=IMAGE`.
        # DEBUG: one built-in node at a time (`debug … --node`); a stop there holds the others at the barrier.
        Capability.POWER, Capability.RESET, Capability.PAUSE, Capability.CONSOLE, Capability.DETERMINISTIC,
        Capability.VIRTUAL_TIME, Capability.DEBUG, Capability.REATTACH,
    })
    always_deterministic = True

    def check_node(self, node: Node) -> None:
        if node.backend not in NODE_BACKENDS:
            raise NotSupported(f"node {node.id!r} runs on {node.backend}: nodes of multi-node boards run on "
                               f"{' or '.join(NODE_BACKENDS)}", node=node.id, backend=node.backend, field="backend")

    def create_instance(self, spec: InstanceSpec) -> Instance:
        return SystemInstance(spec)

    def attach(self, spec: InstanceSpec, handle: dict[str, Any]) -> Instance | None:
        return SystemInstance.reattach(spec, handle)

    def doctor(self) -> list[ToolCheck]:
        return []
