"""The daemon's side of the built-in backend (virsim's own Cortex-M engine).

Needs nothing but pip. Each node runs in its own engine process (`python -m
virsim.backends.builtin`, engine.py), supervised like a QEMU process: crash isolation, one core
per node, re-attach after a daemon restart. This module is the daemon's side: it writes the
engine's spec, starts it, and talks to its control socket (ZeroMQ REQ, JSON) and console socket.

Always deterministic: virtual time is counted in cycles (one per instruction), never read from the
host, so `--deterministic` changes nothing here.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import zmq

from virsim.backends.base import (
    BackendAdapter,
    Capability,
    Instance,
    InstanceSpec,
    RunReport,
    RunStatus,
    ToolCheck,
)
from virsim.backends.faults import FaultTable
from virsim.backends.supervised import SupervisedInstance
from virsim.board import Node, board_to_dict
from virsim.errors import EmulatorError, EmulatorMissing, NotSupported

_CALL_TIMEOUT = 10.0
_STATUS_TIMEOUT = 1.0
UNICORN_VERSION = "2.1.4"


class EngineControl:
    """The engine's control socket: one JSON request, one JSON reply."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.ctx = zmq.Context.instance()
        self.sock: zmq.Socket | None = None
        self._open()

    def _open(self) -> None:
        sock = self.ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.REQ_RELAXED, 1)  # a timed-out request does not wedge the socket
        sock.setsockopt(zmq.REQ_CORRELATE, 1)
        sock.connect(self.endpoint)
        self.sock = sock

    def call(self, op: str, timeout: float = _CALL_TIMEOUT, **fields: Any) -> dict[str, Any]:
        assert self.sock is not None
        self.sock.send_json({"op": op, **fields})
        if not self.sock.poll(int(timeout * 1000)):
            raise EmulatorError(f"the built-in engine did not answer {op!r} within {timeout:g} s")
        reply = self.sock.recv_json()
        assert isinstance(reply, dict)
        if "error" in reply:
            raise EmulatorError(f"built-in engine: {reply['error']}", op=op)
        return reply

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None


FAULT_TABLE = "faults.map"  # where the engine records faults (virsim.backends.faults)


class BuiltinInstance(SupervisedInstance):
    emulator = "the built-in engine"
    sockets = ("engine.sock", "console.sock", "gdbstub.sock")
    start_timeout = 15.0

    def __init__(self, spec: InstanceSpec) -> None:
        super().__init__(spec)
        self.control: EngineControl | None = None

    def _ctl(self) -> EngineControl:
        if self.control is None:
            raise EmulatorError("the built-in engine is not running")
        return self.control

    # ---------------------------------------------------------------- the supervised process
    def _engine_spec(self) -> dict[str, Any]:
        spec = self.spec
        fw = spec.firmware
        return {
            "board": board_to_dict(spec.board), "node": spec.node.id, "rundir": str(spec.rundir),
            "console_log": str(spec.console_log), "firmware": str(fw.path) if fw else None,
            "firmware_format": fw.format if fw else "auto", "load_address": fw.load_address if fw else None,
            # Always start halted (like QEMU's -S): the daemon connects first, then resumes, so a
            # firmware that dies at once still dies in a supervised, connected instance.
            "start_paused": True, "shared": [asdict(s) for s in spec.shared_memory],
            "record": str(spec.record) if spec.record else None, "replay": str(spec.replay) if spec.replay else None,
            "replay_until": spec.replay_until, "coverage": spec.coverage, "lockstep": spec.lockstep,
            "fault_table": str(spec.rundir / FAULT_TABLE) if spec.node.processor.profile == "m" else None,
            "semihosting": str(spec.workdir) if spec.node.semihosting else None,
        }

    def stop_at(self, virtual_ns: int | None, after_ns: int | None = None) -> int | None:
        return int(self._ctl().call("stop_at", ns=int(virtual_ns or 0), after_ns=int(after_ns or 0))["ns"]) or None

    def fault_table(self) -> Path | None:
        return self.spec.rundir / FAULT_TABLE if self.spec.node.processor.profile == "m" else None

    def clock_info(self) -> dict[str, Any] | None:
        hz = self.spec.node.processor.frequency
        return {"board_hz": hz, "instruction_ns": 1e9 / hz,
                "note": f"one instruction per cycle of the board's {hz / 1e6:g} MHz clock; timers at the board's rate"}

    def _command(self) -> list[str]:
        run = self.spec.rundir
        if self.spec.node.processor.profile == "m":
            FaultTable.create(run / FAULT_TABLE).close()
        spec_path = run / "engine.json"
        spec_path.write_text(json.dumps(self._engine_spec()))
        self.spec.console_log.parent.mkdir(parents=True, exist_ok=True)
        self.spec.console_log.touch()
        return [sys.executable, "-m", "virsim.backends.builtin", "--spec", str(spec_path), "--rundir", str(run)]

    def _open_control(self, deadline: float) -> None:
        self.control = EngineControl(f"ipc://{self.spec.rundir / 'engine.sock'}")
        while True:
            try:
                self.control.call("status", timeout=0.2)
                return
            except EmulatorError:
                if self.exit_status() is not None or time.monotonic() > deadline:
                    raise

    def _close_control(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None

    def _control_open(self) -> bool:
        return self.control is not None

    def _start(self) -> None:
        self._ctl().call("resume")

    def _quit(self) -> None:
        self._ctl().call("quit", timeout=2.0)

    def destroy(self) -> None:
        super().destroy()
        (self.spec.rundir / "engine.json").unlink(missing_ok=True)
        try:
            self.spec.rundir.rmdir()
        except OSError:
            pass

    def reset(self) -> None:
        self._ctl().call("reset")

    def pause(self) -> None:
        self._ctl().call("pause")

    def resume(self) -> None:
        self._ctl().call("resume")

    def run_status(self) -> RunStatus:
        st = self._status()
        detail = "running" if st["running"] else ("debug" if st["debugger"] else "paused")
        if st["running"] and st["sleeping"]:
            detail = "sleeping"
        return RunStatus(bool(st["running"]), detail, {k: st[k] for k in ("cycles", "instructions", "pc")})

    def virtual_time_ns(self) -> int | None:
        return int(self._status()["time_ns"])

    def instructions(self) -> int | None:
        return int(self._status()["instructions"])

    def _status(self) -> dict[str, Any]:
        # A short timeout: the engine answers between two slices (well under a second), and a
        # just-killed engine must not hold the daemon for the control channel's full timeout.
        return self._ctl().call("status", timeout=_STATUS_TIMEOUT)

    def coverage(self, action: str) -> list[tuple[int, int, int]] | None:
        reply = self._ctl().call("coverage", timeout=_CALL_TIMEOUT * 6, action=action)
        return [tuple(b) for b in reply["blocks"]] if action == "blocks" else None  # type: ignore[misc]

    def trace(self, action: str, **options: Any) -> dict[str, Any]:
        return dict(self._ctl().call("trace", timeout=_CALL_TIMEOUT * 6, action=action, **options))

    def endpoints(self) -> dict[str, str]:
        return {"control": f"ipc://{self.spec.rundir / 'engine.sock'}"}

    # ---------------------------------------------------------------------- synchroniser primitives
    def run_for(self, cycles: int) -> RunReport:
        if cycles < 0:
            raise ValueError("cycles must be >= 0")
        r = self._ctl().call("run_for", timeout=max(_CALL_TIMEOUT, cycles / 5e6), cycles=cycles)
        detail = {k: v for k, v in r.items() if k not in ("reason", "pc", "cycles", "instructions")}
        return RunReport(r["reason"], r["pc"], r["cycles"], r["instructions"], detail)

    def set_irq(self, line: int, level: bool) -> None:
        self._ctl().call("set_irq", line=line, level=level)

    def uart_channel(self, peripheral: str) -> str:
        return str(self._ctl().call("uart_channel", peripheral=peripheral)["path"])

    def stats(self) -> dict[str, Any]:
        return self._ctl().call("stats")

    def details(self) -> dict[str, Any]:
        """For `session show`: the first access to each unmodelled address (Node.unmodelled)."""
        try:
            seen = self.stats().get("unmodelled") or []
        except EmulatorError:  # the engine just ended (supervision says how): nothing to add
            return {}
        return {"unmodelled_accesses": seen} if seen else {}

    # ---------------------------------------------------------------------- snapshots
    def create_snapshot(self, path: Path, meta: dict[str, Any]) -> dict[str, Any]:
        return self._ctl().call("snapshot_save", path=str(path), meta=meta, timeout=60)

    def restore_snapshot(self, path: Path, marker: bytes = b"") -> dict[str, Any]:
        return self._ctl().call("snapshot_load", path=str(path), marker=marker.decode("latin-1"), timeout=60)


class BuiltinBackend(BackendAdapter):
    name = "builtin"
    capabilities = frozenset({
        Capability.POWER, Capability.RESET, Capability.PAUSE, Capability.PROGRAM_ELF, Capability.PROGRAM_BIN,
        Capability.PROGRAM_HEX, Capability.CONSOLE, Capability.DETERMINISTIC, Capability.VIRTUAL_TIME,
        Capability.REATTACH, Capability.DEBUG, Capability.RUN_FOR, Capability.IRQ_LINES,
        Capability.SHARED_MEMORY, Capability.UART_CHANNEL, Capability.SNAPSHOT,
        Capability.REVERSE, Capability.RECORD, Capability.COVERAGE, Capability.TRACE, Capability.LOCKSTEP,
        Capability.FAULTS,
    })
    always_deterministic = True
    replay_stops_at_time = True  # its clock is its cycle count: --until 250ms is an exact cycle

    def check_node(self, node: Node) -> None:
        try:
            from virsim.backends.builtin.machine import MachineError, check_node
        except ImportError as err:
            raise EmulatorMissing(f"the built-in engine needs the unicorn package: {err}",
                                  install=f"pip install unicorn=={UNICORN_VERSION}") from err
        try:
            check_node(node)
        except MachineError as err:
            raise NotSupported(f"node {node.id!r}: {err}", backend=self.name, node=node.id,
                               field=f"nodes[{node.id}].{err.field}" if err.field else None) from err

    def create_instance(self, spec: InstanceSpec) -> Instance:
        return BuiltinInstance(spec)

    def attach(self, spec: InstanceSpec, handle: dict[str, Any]) -> Instance | None:
        return BuiltinInstance.reattach(spec, handle)

    def doctor(self) -> list[ToolCheck]:
        try:
            version = metadata.version("unicorn")
        except metadata.PackageNotFoundError:
            version = None
        ok = version is not None
        note = "the built-in Cortex-M engine (no system packages needed)"
        if ok:
            try:
                from virsim.backends.builtin.counter import InstructionCounter

                InstructionCounter.calibrate()
            except Exception as err:  # noqa: BLE001 - reported, not raised
                ok, note = False, f"unicorn {version} is installed but unusable: {err}"
        return [ToolCheck("unicorn (Python)", ok, version=version, path=None,
                          install=None if ok else f"pip install unicorn=={UNICORN_VERSION}", note=note)]
