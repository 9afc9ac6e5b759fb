"""The Renode nodes of a multi-node board: one Renode emulation, one machine per node, in lockstep.

Every Renode node of a board runs in one Renode process (`RenodeBackend.create_group`), each in a
machine of its own named after the node, with Renode's own synchronisation: serial execution, a
fixed seed, and a global quantum equal to the barrier's (virsim.sync.lockstep). UART links between
two Renode nodes are Renode UART hubs; everything that crosses to or from a node on another
emulator goes through virsim's barrier, which virsim's extension (VirsimRenode.cs `Lockstep`)
joins at each of the emulation's synchronisation points for every Renode node at once: it
publishes what the nodes sent (GPIO edges that raise another node's interrupt, bytes of linked
UARTs), waits for the other nodes, and delivers what they sent in the order every node uses.
Shared memory windows are regions of the files the other nodes map (`Virsim.SharedMemory`).

Like a QEMU node, the emulation always runs once started: a paused system holds it at the
barrier (the segment's PAUSE), and its nodes' clocks are read from their segment slots. The
extension writes each node's console log and console timeline itself, so the output goes on
being recorded while no daemon is attached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from virsim.backends.base import InstanceSpec
from virsim.backends.renode.adapter import _SLOW, PLATFORM_FILE, RENODE_LOG, SEED, RenodeInstance, console_uart
from virsim.backends.renode.platform import UART_TYPES, entry_name, monitor_name, monitor_path, monitor_string, platform
from virsim.errors import EmulatorError, NotSupported

JOINED = "lockstep.joined"  # in the runtime dir once the emulation is set up (a re-attach finds it so)


class RenodeEmulation(RenodeInstance):
    """Every Renode node of a board; `spec` is the first one's (its folders hold Renode's log and sockets)."""

    sockets = ("monitor.sock",)

    def __init__(self, spec: InstanceSpec, members: list[InstanceSpec] | None = None) -> None:
        super().__init__(spec)
        self.members = members or [spec]

    @classmethod
    def attach_members(cls, specs: list[InstanceSpec], handle: dict[str, Any]) -> RenodeEmulation | None:
        inst = cls.reattach(specs[0], handle)
        if inst is not None:
            inst.members = specs
        return inst

    def _command(self) -> list[str]:
        for spec in self.members:
            node = spec.node
            if node.renode and node.renode.platform:
                raise NotSupported(f"node {node.id}: a stock Renode platform (renode.platform) cannot join a "
                                   "multi-node board yet; describe the node's memory and peripherals instead",
                                   field=f"nodes[{node.id}].renode.platform", value=node.renode.platform)
            (spec.workdir / PLATFORM_FILE).write_text(platform(node, spec.shared_memory).repl)
            spec.console_log.parent.mkdir(parents=True, exist_ok=True)
            spec.console_log.touch()
        (self.spec.rundir / JOINED).unlink(missing_ok=True)
        return self._jailed([])

    def _console_path(self) -> Path | None:
        return None  # virsim's extension appends every node's console log itself

    def _configured(self) -> bool:
        return (self.spec.rundir / JOINED).exists()

    def _configure(self) -> None:
        self._cmd(f"logFile {monitor_path(self.spec.workdir / RENODE_LOG)}")
        self._extension()  # before the platforms: they map shared memory with its SharedMemory
        for spec in self.members:
            node = spec.node
            self._cmd(f"mach create {monitor_name(entry_name(node.id), 'node id')}")
            self._cmd(f"machine LoadPlatformDescription {monitor_path(spec.workdir / PLATFORM_FILE)}", timeout=_SLOW)
            self._cmd(f"sysbus.cpu PerformanceInMips {max(1, round(node.processor.frequency / 1e6))}")
            if spec.firmware is not None:
                self._load(spec.firmware, node)
        # Deterministic by construction, as a single node: serial execution, a fixed seed; a sleeping
        # CPU idles through its quantum. The quantum itself is set by the extension from the segment.
        self._cmd("emulation SetGlobalSerialExecution true")
        self._cmd(f"emulation SetSeed {SEED}")
        self._cmd("emulation SetGlobalAdvanceImmediately true")
        self._hubs()
        config = self.spec.rundir / "lockstep.cfg"
        config.write_text(self._lockstep_config())
        self._cmd(f"emulation VirsimLockstep {monitor_string(config)}")
        self._cmd(f"mach set {monitor_name(entry_name(self.spec.node.id), 'node id')}")
        (self.spec.rundir / JOINED).write_text("")

    def _index(self) -> dict[int, InstanceSpec]:
        return {int((spec.lockstep or {})["index"]): spec for spec in self.members}

    def _hubs(self) -> None:
        """UART links between two Renode nodes: a Renode UART hub each (both ends in this emulation)."""
        mine = self._index()
        done: set[tuple[int, int]] = set()
        for spec in self.members:
            me = int((spec.lockstep or {})["index"])
            for uart, target, slot in (spec.lockstep or {}).get("uart_out") or []:
                if int(target) not in mine or (int(target), me) in done:
                    continue
                done.add((me, int(target)))
                other = mine[int(target)]
                hub = f"hub{len(done)}"
                self._cmd(f"emulation CreateUARTHub {monitor_name(hub)}")
                far = other.node.peripherals[int(slot)].id
                for node_id, peripheral in ((spec.node.id, uart), (other.node.id, far)):
                    self._cmd(f"mach set {monitor_name(entry_name(node_id), 'node id')}")
                    self._cmd(f"connector Connect sysbus.{entry_name(peripheral)} {monitor_name(hub)}")

    def _lockstep_config(self) -> str:
        """VirsimLockstep's config (the format is in VirsimRenode.cs)."""
        mine = self._index()
        first = self.members[0].lockstep or {}
        lines = [f"segment {monitor_path(first['segment'])[1:]} {int(first.get('max_quantum') or 0)}"]
        for spec in self.members:
            cfg, node = spec.lockstep or {}, spec.node
            me = int(cfg["index"])
            console = console_uart(node, getattr(spec.board.console_peripheral(node), "id", None))
            lines.append(" ".join([
                "node", str(me), entry_name(node.id), str(int(node.processor.frequency)),
                monitor_path(cfg["timeline"])[1:], monitor_path(spec.console_log)[1:], *([console] if console else [])]))
            lines.append(f"nvic {me} sysbus.nvic")
            for slot, p in enumerate(node.peripherals):
                if p.type in UART_TYPES:
                    lines.append(f"slot {me} {slot} sysbus.{entry_name(p.id)}")
            for gpio, pin, target, line in cfg.get("irq_out") or []:
                lines.append(f"irq {me} sysbus.{entry_name(gpio)} {int(pin)} {int(target)} {int(line)}")
            for uart, target, slot in cfg.get("uart_out") or []:
                if int(target) not in mine:  # the other end is on another emulator: through the barrier
                    lines.append(f"uart {me} sysbus.{entry_name(uart)} {int(target)} {int(slot)}")
        return "\n".join(lines) + "\n"

    # ---------------------------------------------------------------- what a system asks of a node
    def console_write(self, data: bytes) -> int:
        """Console input for the first of these nodes with a console UART, into its receiver."""
        for spec in self.members:
            console = console_uart(spec.node, getattr(spec.board.console_peripheral(spec.node), "id", None))
            if console:
                self._cmd(f'emulation VirsimInput "{entry_name(spec.node.id)}" "{console}" "{data.hex()}"')
                return len(data)
        raise EmulatorError("no Renode node of this board has a console UART")

    def reset(self) -> None:
        raise NotSupported("a multi-node board resets all its nodes together (a new lockstep)")

    def pause(self) -> None:
        raise NotSupported("Renode nodes of a multi-node board are held at the barrier, not paused")

    def gdb_endpoint(self) -> str | None:
        return None

    def stop_at(self, virtual_ns: int | None, after_ns: int | None = None) -> int | None:
        raise NotSupported("the nodes of a multi-node board stop together")

    def clock_info(self) -> dict[str, Any] | None:
        return None
