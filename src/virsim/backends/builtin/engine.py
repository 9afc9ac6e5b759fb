"""The built-in engine process: one machine, its sockets, and the loop that runs it.

Started by the daemon as `python -m virsim.backends.builtin --spec <rundir>/engine.json`. Like a
QEMU process it owns everything in the session's runtime dir that talks to it:

- `engine.sock` (ZeroMQ REP, JSON): status, pause, resume, reset, run_for, set_irq, gpio,
  uart_channel, stats, quit — the control channel (QMP's role) and the synchroniser's primitives;
- `console.sock`: the console UART's bytes out, input bytes in (one client, the daemon);
- `gdbstub.sock`: the GDB remote protocol (gdbstub.py);
- `uart-<id>.sock`: a UART connected to an external byte channel, created on request.

Console output is appended to the session's console log by the engine itself, so it survives a
daemon restart. The loop runs the machine in budgets of virtual time and checks its sockets
between them (every ~1 ms of host time at full speed); a sleeping CPU with nothing scheduled
blocks in poll() instead of spinning.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import zmq

from unicorn import UcError
from unicorn.arm_const import UC_ARM_REG_LR, UC_ARM_REG_MSP, UC_ARM_REG_PSP, UC_ARM_REG_XPSR

from virsim.backends.builtin.gdbstub import GdbStub, StopInfo
from virsim.backends.builtin.history import History
from virsim.backends.builtin.machine import Machine, SharedRegion, Stop
from virsim.backends.builtin.peripherals import CmsdkGpio, Uart
from virsim.backends.builtin.semihosting import Exit, Memory, Semihosting
from virsim import snapshot
from virsim.backends.faults import FLAG_FRAME, FLAG_PSP, FLAG_STATUS, FaultRecord, FaultTable
from virsim.firmware import inspect
from virsim.sync.lockstep import (
    KIND_IRQ,
    KIND_MMIO_READ,
    KIND_MMIO_VALUE,
    KIND_MMIO_WRITE,
    KIND_UART,
    TIMELINE,
    BarrierStopped,
    Lockstep,
)

BUDGET = 100_000  # cycles per machine.run() between socket checks at most (~1 ms at full speed)
POLL_S = 0.002  # host seconds between socket checks at most, however slowly the firmware runs
MIN_BUDGET = 1_000
_TAKEN_REGS = (UC_ARM_REG_LR, UC_ARM_REG_MSP, UC_ARM_REG_PSP)


@dataclass
class EngineSpec:
    board: dict[str, Any]
    node: str
    rundir: str
    console_log: str
    firmware: str | None = None
    firmware_format: str = "auto"
    load_address: int | None = None
    start_paused: bool = False
    shared: list[dict[str, Any]] | None = None
    record: str | None = None  # append every input (cycle, kind, args) here, one JSON line each
    replay: str | None = None  # feed the inputs logged there at their cycles instead of live ones
    replay_until: str | None = None  # halt at "<n>" instructions or "<n>ns" of virtual time
    coverage: bool = False  # count executed blocks from the first instruction
    fault_table: str | None = None  # record the faults the firmware takes here (virsim.backends.faults)
    semihosting: str | None = None  # serve BKPT 0xAB semihosting, files confined to this folder
    # Multi-node boards (virsim.sync): {"segment": path, "index": i, "irq_out": [[gpio, pin (-1: any),
    # target, line]], "uart_out": [[uart, target, target uart id]]}. The engine then runs quantum by
    # quantum and meets the other nodes at the segment's barrier (virsim.sync.lockstep).
    lockstep: dict[str, Any] | None = None

    @classmethod
    def load(cls, path: Path) -> EngineSpec:
        return cls(**json.loads(path.read_text()))


def _view(value: Any) -> Any:
    """The board as plain attribute objects: the engine reads a board the daemon already
    validated, so it needs neither pydantic nor its import time."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: (v if k == "options" else _view(v)) for k, v in value.items()})
    if isinstance(value, list):
        return [_view(v) for v in value]
    return value


class Channel:
    """A listening Unix socket with at most one client; bytes in go to `on_data`."""

    def __init__(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.listener.setblocking(False)
        self.conn: socket.socket | None = None

    def fds(self) -> list[int]:
        return [self.listener.fileno()] + ([self.conn.fileno()] if self.conn else [])

    def on_readable(self, fd: int) -> bytes:
        if fd == self.listener.fileno():
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return b""
            if self.conn is not None:
                self.conn.close()  # the newest client wins (a restarted daemon reconnects)
            self.conn = conn
            conn.setblocking(False)
            return b""
        assert self.conn is not None
        try:
            data = self.conn.recv(65536)
        except BlockingIOError:
            return b""
        except OSError:
            data = b""
        if not data:
            self.conn.close()
            self.conn = None
        return data

    def send(self, data: bytes) -> None:
        if self.conn is None:
            return
        try:
            self.conn.send(data)
        except (BlockingIOError, OSError):
            pass  # a slow or gone reader loses live bytes, never the log (the record)

    def close(self) -> None:
        if self.conn:
            self.conn.close()
        self.listener.close()
        self.path.unlink(missing_ok=True)


class Engine:
    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        board = _view(spec.board)
        node = next(n for n in board.nodes if n.id == spec.node)
        self.node = node
        shared = [SharedRegion(**s) for s in spec.shared or []]
        self.machine = Machine(board, node, shared)
        self.machine.program(inspect(Path(spec.firmware), spec.firmware_format, spec.load_address)
                             if spec.firmware else None)
        if spec.coverage:
            self.machine.probes.coverage_start()
        self.faults = FaultTable.open(Path(spec.fault_table)) if spec.fault_table else None
        if self.faults is not None:
            self.machine.on_fault = self._on_fault
            self.machine.on_taken = self._on_taken
        self.semihosting = Semihosting(Path(spec.semihosting), self.machine.time_ns, node.processor.frequency) \
            if spec.semihosting else None
        self.exited: int | None = None  # the status of a SYS_EXIT
        if self.semihosting is not None:
            self.machine.on_semihost = self._on_semihost
        self.rundir = Path(spec.rundir)
        self.running = not spec.start_paused
        self.idle = False
        self.quit = False
        self.stepping = False
        self.log = open(spec.console_log, "ab", buffering=0)  # noqa: SIM115 - lives as long as the engine
        self._out = bytearray()
        self.console = Channel(self.rundir / "console.sock")
        gdb_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        (self.rundir / "gdbstub.sock").unlink(missing_ok=True)
        gdb_listener.bind(str(self.rundir / "gdbstub.sock"))
        gdb_listener.listen(1)
        self.gdb = GdbStub(self, gdb_listener)
        self.history = History(self.machine)
        self.recording = open(spec.record, "w") if spec.record else None  # noqa: SIM115 - engine lifetime
        self.replaying: list[tuple[int, str, tuple[Any, ...]]] = []
        if spec.replay:
            self.replaying = [_decode(json.loads(line)) for line in Path(spec.replay).read_text().splitlines() if line]
        self.until: tuple[str, int] | None = None
        if spec.replay_until:
            u = spec.replay_until
            self.until = ("ns", int(u[:-2])) if u.endswith("ns") else ("instructions", int(u))
        self.channels: dict[str, Channel] = {}
        self.lockstep: Lockstep | None = None
        self.timeline = None  # console.timeline of a lockstep node (virsim.sync.system.merged_console)
        self.outgoing: list[tuple[int, int, int, int, int]] = []  # this quantum's cross-node events
        if spec.lockstep:
            self._join_lockstep(spec.lockstep)
        self._polled: tuple[zmq.Poller, dict[int, Any], set[int]] | None = None
        # The session's log (the engine's stderr), once per address: firmware touching what the board
        # has but virsim does not model reads zero there, as on QEMU, and the user sees where.
        self.machine.on_unmodelled = lambda address, name, kind: print(
            f"virsim engine: {kind} of {address:#010x} ({name}: not modelled; reads zero, writes are ignored; "
            "reported once per address)", file=sys.stderr, flush=True)
        self._rate = BUDGET / POLL_S  # cycles per host second lately (_budget); optimistic at first
        uart = self.machine.console_uart()
        if uart is not None:
            uart.sinks.append(self._console_out)
        self.ctx = zmq.Context()
        self.control = self.ctx.socket(zmq.REP)
        self.control.setsockopt(zmq.LINGER, 0)
        (self.rundir / "engine.sock").unlink(missing_ok=True)
        self.control.bind(f"ipc://{self.rundir / 'engine.sock'}")

    def _on_fault(self, exc: int) -> bool:
        """At the entry of a fault handler: record the fault; True: halt here (a debugger is attached
        and asked for it)."""
        assert self.faults is not None
        if self.history.seen():  # re-executed history (reverse debugging) recorded it the first time
            return False
        m = self.machine
        uc = m.uc
        status = m.exc.faults
        lr = uc.reg_read(UC_ARM_REG_LR)
        sp = uc.reg_read(UC_ARM_REG_MSP)  # handler mode runs on the main stack
        on_psp = lr >> 28 == 0xF and bool(lr & 4)
        flags = FLAG_STATUS | (FLAG_PSP if on_psp else 0)
        frame = (0,) * 8
        try:
            frame = struct.unpack("<8I", uc.mem_read(uc.reg_read(UC_ARM_REG_PSP) if on_psp else sp, 32))
            flags |= FLAG_FRAME
        except UcError:
            pass  # a frame that could not be stacked (STKERR) cannot be read either
        self.faults.append(FaultRecord(
            exception=exc, flags=flags, virtual_ns=m.time_ns(), instructions=m.current_instructions(),
            handler=m.pc(), sp=sp, lr=lr, xpsr=uc.reg_read(UC_ARM_REG_XPSR), cfsr=status.cfsr, hfsr=status.hfsr,
            mmfar=status.mmfar, bfar=status.bfar, stacked_pc=frame[6], stacked_lr=frame[5], stacked_xpsr=frame[7],
            stacked_r0=frame[0]))
        return self.faults.halt and self.gdb.conn is not None

    def _on_taken(self, exc: int) -> None:
        """At every exception entry: the table's ring of the last exceptions taken (session exceptions)."""
        assert self.faults is not None
        if self.history.seen():
            return
        m = self.machine
        lr, msp, psp = m.exc.regs.read_many(_TAKEN_REGS)
        frame_at = psp if lr >> 28 == 0xF and lr & 4 else msp
        try:
            return_pc, flags = int.from_bytes(m.uc.mem_read(frame_at + 24, 4), "little"), FLAG_FRAME
        except UcError:
            return_pc, flags = 0, 0
        self.faults.record_taken(exc, flags, m.time_ns(), m.current_instructions(), m.pc(), msp, lr, return_pc)

    def _on_semihost(self, op: int, arg: int) -> int | None:
        assert self.semihosting is not None
        uc = self.machine.uc
        result = self.semihosting.call(op, arg, Memory(lambda a, n: bytes(uc.mem_read(a, n)), uc.mem_write))
        if isinstance(result, Exit):
            self.exited = result.status
            return None
        return result

    # ----------------------------------------------------------------- Target (for the gdb stub)
    def halt(self, reason: str) -> None:
        self.running = False
        self.stepping = False

    def resume(self, step: bool = False) -> None:
        self.running = True
        self.stepping = step
        self.idle = False

    def is_running(self) -> bool:
        return self.running

    def debugger_attached(self, attached: bool) -> None:
        """History (for reverse execution) is kept while a debugger is attached; a BKPT halts
        for it then (without one it is a HardFault, as on hardware)."""
        self.machine.debugger = attached
        if attached:
            self.history.start()
        else:
            self.history.stop()

    def state_written(self) -> None:
        """The debugger changed memory or registers: history from here on includes the change."""
        if self.history.active:
            self.history.checkpoint()

    def reverse(self, step: bool) -> StopInfo:
        if not self.history.active:
            return StopInfo(5, "replaylog:begin;")
        if step:
            where = self.history.reverse_step()
            return StopInfo(5, "replaylog:begin;" if where == "begin" else "")
        kind, info = self.history.reverse_continue()
        if kind == "begin":
            return StopInfo(5, "replaylog:begin;")
        if kind == "watchpoint":
            return StopInfo(5, f"watch:{info['address']:x};")
        return StopInfo(5, "swbreak:;")

    def _input(self, kind: str, *args: Any) -> None:
        """Everything from outside reaches the machine here, logged for re-execution and recording.
        A replaying engine takes its inputs from the recording only."""
        if self.spec.replay:
            return
        self.history.record(kind, *args)
        if self.recording is not None:
            self.recording.write(json.dumps(_encode(self.machine.cycles, kind, args)) + "\n")
            self.recording.flush()
        self.history.apply(kind, args)
        self.idle = False

    def _budget(self) -> int | None:
        """Cycles to run before the next replayed input or the --until point (None: stop now), and
        at most what the engine runs in POLL_S of host time lately: slow firmware (interrupt storms,
        coverage) must not keep the control socket waiting (session show would miss its clock)."""
        m = self.machine
        budget = max(MIN_BUDGET, min(BUDGET, int(self._rate * POLL_S)))
        while self.replaying and self.replaying[0][0] <= m.cycles:
            _, kind, args = self.replaying.pop(0)
            self.history.apply(kind, args)
            self.idle = False
        if self.replaying:
            budget = min(budget, self.replaying[0][0] - m.cycles)
        if self.until is not None:
            unit, value = self.until
            if unit == "instructions":
                left = value - m.instructions
            else:
                left = -(-(value - m.time_ns()) * m.frequency // 1_000_000_000)
            if left <= 0:
                self.until = None
                return None
            budget = min(budget, left)
        return max(budget, 1)

    def reset(self) -> None:
        self._input("reset")

    def monitor(self, command: str) -> str | None:
        """Monitor commands about the engine itself; the stub answers run control (gdbstub.py)."""
        if command.split()[:1] in (["info"], ["stats"]):
            return json.dumps(self.machine.stats(), indent=1) + "\n"
        return None

    # ----------------------------------------------------------------- control channel
    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        m = self.machine
        if op == "status":
            return {"running": self.running, "sleeping": m.sleeping, "cycles": m.cycles,
                    "instructions": m.instructions, "time_ns": m.time_ns(), "pc": m.pc(),
                    "debugger": self.gdb.conn is not None, "pid": os.getpid()}
        if op == "pause":
            if self.running:
                self.halt("paused")
                self.gdb.report_stop(StopInfo(2))
            return {}
        if op == "resume":
            self.resume()
            return {}
        if op == "stop_at":  # halt when the virtual clock reaches ns, or after_ns from now (0: cancel)
            after = int(req.get("after_ns") or 0)
            ns = m.time_ns() + after if after > 0 else int(req.get("ns") or 0)
            self.until = ("ns", ns) if ns > 0 else None
            self.idle = False  # a sleeping CPU's clock must run on to it
            return {"ns": max(ns, 0)}
        if op == "reset":
            self._input("reset")
            if self.spec.replay:
                return {"error": "a replaying session takes its resets from the recording"}
            return {}
        if op == "run_for":
            if self.running:
                return {"error": "the CPU is running; pause it before run_for"}
            stop = m.run(int(req["cycles"]), idle_to_end=True)
            self.history.advanced()
            self._flush()
            self._report(stop, to_gdb=False)
            return {"reason": stop.reason, "pc": stop.pc, "cycles": m.cycles, "instructions": m.instructions,
                    **stop.detail}
        if op == "set_irq":
            self._input("irq", int(req["line"]), bool(req["level"]))
            return {}
        if op == "gpio":
            dev = m.device(str(req["peripheral"]))
            if not isinstance(dev, CmsdkGpio):
                return {"error": f"{req['peripheral']} is not a GPIO block"}
            self._input("gpio", dev.id, int(req["pin"]), bool(req["level"]))
            return {"pins": dev.pins()}
        if op == "uart_channel":
            return {"path": str(self._channel(str(req["peripheral"])).path)}
        if op == "console_write":
            self._feed_console(str(req["data"]).encode("latin-1"))
            return {}
        if op == "stats":
            return m.stats()
        if op == "snapshot_save":
            state, memory = m.save_state()
            meta = dict(req.get("meta") or {}, backend="builtin", node=self.spec.node,
                        virtual_ns=m.time_ns(), instructions=m.instructions, cycles=m.cycles)
            size = snapshot.write(Path(req["path"]), meta, {
                "state": json.dumps(state).encode(), "memory": zlib.compress(memory, 1)})
            return {"virtual_ns": m.time_ns(), "instructions": m.instructions, "size": size}
        if op == "snapshot_load":
            meta, sections = snapshot.read(Path(req["path"]))
            if meta.get("backend") != "builtin" or meta.get("node") != self.spec.node:
                return {"error": f"snapshot is for backend {meta.get('backend')} node {meta.get('node')}"}
            self._flush()
            m.load_state(json.loads(sections["state"]), zlib.decompress(sections["memory"]))
            # A restored state starts a new history (and its output is new output, not re-execution).
            self.history.stop()
            if self.gdb.conn is not None:
                self.history.start()
            self.idle = False
            if req.get("marker"):
                self.log.write(str(req["marker"]).encode("latin-1"))
            return {"virtual_ns": m.time_ns(), "instructions": m.instructions}
        if op == "coverage":
            return self._coverage(str(req.get("action")))
        if op == "trace":
            return self._trace(req)
        if op == "quit":
            self.quit = True
            return {}
        return {"error": f"unknown op {op!r}"}

    def _coverage(self, action: str) -> dict[str, Any]:
        probes = self.machine.probes
        if action == "start":
            probes.coverage_start()
        elif action == "stop":
            probes.coverage_stop()
        elif action == "reset":
            probes.coverage_reset()
        elif action != "blocks":
            return {"error": f"unknown coverage action {action!r}"}
        return {"active": probes.counting, "blocks": probes.coverage_blocks() if action == "blocks" else None}

    def _trace(self, req: dict[str, Any]) -> dict[str, Any]:
        probes = self.machine.probes
        action = req.get("action")
        try:
            if action == "start":
                probes.trace_start(str(req.get("level", "block")), [tuple(r) for r in req.get("ranges") or []],
                                   int(req.get("limit", 1_000_000)), req.get("functions"))
                return probes.trace_info()
            if action == "stop":
                return probes.trace_stop()
            if action == "dump":
                return probes.trace_dump(Path(req["path"]))
            if action == "info":
                return probes.trace_info()
        except (ValueError, OSError) as err:
            return {"error": str(err)}
        return {"error": f"unknown trace action {action!r}"}

    # ----------------------------------------------------------------- multi-node lockstep
    def _join_lockstep(self, cfg: dict[str, Any]) -> None:
        m = self.machine
        self.lockstep = Lockstep(Path(cfg["segment"]), int(cfg["index"]), idle=lambda: self._poll(0))
        self.quantum_end = self.lockstep.quantum
        self.max_quantum = int(cfg.get("max_quantum") or 0)  # event mode: quanta grow up to this
        self.current_quantum = self.lockstep.quantum
        for gpio_id, pin, target, line in cfg.get("irq_out") or []:
            dev = m.device(gpio_id)
            assert isinstance(dev, CmsdkGpio), f"{gpio_id} is not a GPIO block"
            levels: dict[int, bool] = {}

            def watch(_id: str, pins: int, dev: CmsdkGpio = dev, pin: int = pin, target: int = target,
                      line: int = line, levels: dict[int, bool] = levels) -> None:
                level = bool(pins & dev.outen & (1 << pin)) if pin >= 0 else bool(pins & dev.outen)
                if levels.get(line) != level and not self.history.seen():
                    levels[line] = level
                    self.outgoing.append((m.now(), target, KIND_IRQ, line, int(level)))
            dev.watchers.append(watch)
        for uart_id, target, target_uart in cfg.get("uart_out") or []:
            dev = m.device(uart_id)
            assert isinstance(dev, Uart), f"{uart_id} is not a UART"
            dev.sinks.append(lambda data, target=target, slot=target_uart: None if self.history.seen() else
                             self.outgoing.extend((m.now(), target, KIND_UART, slot, b) for b in data))
        for address, size, target, target_address in cfg.get("mmio_out") or []:
            m.forward(address, size,
                      lambda off, n, t=target, at=target_address: self._forwarded_read(t, at + off, n),
                      lambda off, n, value, t=target, at=target_address: self.outgoing.append(
                          (m.now(), t, KIND_MMIO_WRITE | n << 8, at + off, value & 0xFFFFFFFF)))
        self._mmio_values: dict[int, int] = {}
        self._uart_slots = [p.id for p in self.node.peripherals]  # uart events name the target's UART by slot
        self.timeline = open(Path(cfg["timeline"]), "ab", buffering=0) if cfg.get("timeline") else None  # noqa: SIM115

    def _lockstep_step(self) -> None:
        """Run to the end of this quantum (sleeping through it if the CPU sleeps), then meet the
        other nodes and take the events they sent here."""
        m = self.machine
        lock = self.lockstep
        assert lock is not None
        try:
            if m.cycles < self.quantum_end:
                stop = m.run(self.quantum_end - m.cycles, idle_to_end=True)
                self.history.advanced()
                if stop.reason != "budget":
                    self._flush()
                    self._report(stop)  # a breakpoint halts this node; the others wait at the barrier
                    return
                if m.cycles < self.quantum_end:
                    return  # a forwarded read took it through barriers (_forwarded_read): run on
            self._meet()
        except BarrierStopped:
            self.halt("system stopped")

    def _meet(self) -> None:
        """The barrier at the end of this quantum: send what this node produced, apply what the
        others sent it, plan the next quantum."""
        lock = self.lockstep
        assert lock is not None
        events, self.outgoing = self.outgoing, []
        inbox = lock.barrier(events, self.quantum_end)
        m = self.machine
        for ev in inbox:
            kind, size = ev.kind & 0xFF, ev.kind >> 8
            if kind == KIND_IRQ:
                self._input("irq", ev.a, bool(ev.b))
            elif kind == KIND_UART:
                self._input("uart", self._uart_slots[ev.a], bytes([ev.b]))
            elif kind == KIND_MMIO_WRITE:
                m.bus_write(ev.a, size, ev.b)
            elif kind == KIND_MMIO_READ:  # answered at the next barrier, sampled now
                self.outgoing.append((m.now(), ev.source, KIND_MMIO_VALUE | size << 8, ev.a,
                                      m.bus_read(ev.a, size) & 0xFFFFFFFF))
            elif kind == KIND_MMIO_VALUE:
                self._mmio_values[ev.a] = ev.b
        self.quantum_end += self._next_quantum(lock.traffic)

    def _forwarded_read(self, target: int, address: int, size: int) -> int:
        """A read through mmio_map of another node's peripheral, inside the reading instruction:
        the request goes out at this quantum's barrier, the other node reads its register there
        and its answer comes back at the next one. The instruction takes that long (the node
        stalls to the second barrier): deterministic, and at most two quanta."""
        m = self.machine
        at = m.now()
        self.outgoing.append((at, target, KIND_MMIO_READ | size << 8, address, 0))
        self._mmio_values.pop(address, None)
        for _ in range(4):  # the answer takes two barriers; a target that never answers reads as 0
            if address in self._mmio_values:
                break
            reached = self.quantum_end
            self._meet()
        m.stall(reached - at - 1)  # the instruction ends at the barrier that brought the value
        return self._mmio_values.pop(address, 0)

    def _next_quantum(self, traffic: int) -> int:
        """Timeslice/step: always the quantum. Event mode: double it while no node sends anything
        (up to `max_quantum`), back to the quantum as soon as one does. Every node computes the same
        from the same barrier, so the schedule is deterministic."""
        base = self.lockstep.quantum if self.lockstep is not None else 1
        if not self.max_quantum:
            return base
        self.current_quantum = base if traffic else min(self.current_quantum * 2, self.max_quantum)
        return self.current_quantum

    def _channel(self, ident: str) -> Channel:
        if ident not in self.channels:
            dev = self.machine.device(ident)
            if not isinstance(dev, Uart):
                raise KeyError(f"{ident} is not a UART")
            chan = Channel(self.rundir / f"uart-{ident}.sock")
            dev.sinks.append(lambda data, c=chan: None if self.history.seen() else c.send(data))
            self.channels[ident] = chan
        return self.channels[ident]

    def _feed_console(self, data: bytes) -> None:
        uart = self.machine.console_uart()
        if uart is not None and data:
            self._input("uart", uart.id, data)

    # ----------------------------------------------------------------- running
    def _console_out(self, data: bytes) -> None:
        if not self.history.seen():  # re-executed history already wrote these bytes once
            self._out.extend(data)
            if self.timeline is not None:  # multi-node: when each byte appeared, to merge the nodes' consoles
                self.timeline.write(TIMELINE.pack(self.machine.now(), len(data)) + data)

    def _flush(self) -> None:
        if self._out:
            data = bytes(self._out)
            self._out.clear()
            self.log.write(data)
            self.console.send(data)

    def _report(self, stop: Stop, to_gdb: bool = True) -> None:
        if stop.reason == "exit":  # semihosting SYS_EXIT: the firmware is done, as QEMU ends
            print(f"semihosting: the firmware exited (SYS_EXIT) with status {self.exited}", file=sys.stderr, flush=True)
            self.quit = True
            self.exit_code = self.exited or 0
            return
        if stop.reason == "lockup":
            message = f"Lockup: {stop.detail.get('message', 'CPU lockup')} (pc={stop.pc:#010x})"
            print(message, file=sys.stderr, flush=True)
            if self.gdb.conn is None:
                self.quit = True
                self.exit_code = 1
                return
            self.halt("lockup")
            self.gdb.report_stop(StopInfo(11))
            return
        if stop.reason in ("breakpoint", "bkpt"):
            self.halt(stop.reason)
            if to_gdb:
                self.gdb.report_stop(StopInfo(5, "swbreak:;"))
        elif stop.reason == "fault":  # halted at a fault handler for the debugger (virsim.backends.faults)
            self.halt(stop.reason)
            if to_gdb:
                self.gdb.report_stop(StopInfo(5))
        elif stop.reason == "watchpoint":
            self.halt(stop.reason)
            if to_gdb:
                self.gdb.report_stop(StopInfo(5, f"{stop.detail['kind']}:{stop.detail['address']:x};"))

    def _step(self) -> None:
        stop = self.machine.run(1)
        self.history.advanced()
        self.running = self.stepping = False
        if stop.reason in ("lockup",):
            self._report(stop)
            return
        self.gdb.report_stop(StopInfo(5))

    def _fds(self) -> dict[int, Any]:
        fds: dict[int, Any] = {}
        for fd in self.console.fds():
            fds[fd] = self._on_console
        for fd in self.gdb.fds():
            fds[fd] = self.gdb.on_readable
        for chan_id, chan in self.channels.items():
            for fd in chan.fds():
                fds[fd] = lambda fd, c=chan_id: self._on_channel(c, fd)
        return fds

    def _on_console(self, fd: int) -> None:
        self._feed_console(self.console.on_readable(fd))

    def _on_channel(self, ident: str, fd: int) -> None:
        data = self.channels[ident].on_readable(fd)
        if data:
            self._input("uart", ident, data)

    def _poller(self) -> tuple[zmq.Poller, dict[int, Any]]:
        """The poller over the control socket and every fd, rebuilt only when the fd set changed
        (this runs about every millisecond while the CPU runs)."""
        handlers = self._fds()
        if self._polled is None or set(handlers) != self._polled[2]:
            poller = zmq.Poller()
            poller.register(self.control, zmq.POLLIN)
            for fd in handlers:
                poller.register(fd, zmq.POLLIN)
            self._polled = (poller, handlers, set(handlers))
        return self._polled[0], handlers

    def _poll(self, timeout_ms: int | None) -> None:
        poller, handlers = self._poller()
        for key, _ in poller.poll(timeout_ms):
            if key is self.control:
                try:
                    req = self.control.recv_json(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                try:
                    reply = self.handle(req)  # type: ignore[arg-type]
                except Exception as err:  # noqa: BLE001 - report to the caller, keep running
                    reply = {"error": f"{type(err).__name__}: {err}"}
                self.control.send_json(reply)
            else:
                handlers[key](key)

    def loop(self) -> int:
        self.exit_code = 0
        last_poll = 0.0
        while not self.quit:
            if self.running and self.stepping:
                self._step()
            elif self.running and self.lockstep is not None:
                self._lockstep_step()
                now = time.monotonic()
                if now - last_poll >= 0.001:
                    last_poll = now
                    self._flush()
                    self._poll(0)
                continue
            elif self.running and not self.idle:
                budget = self._budget()
                if budget is None:
                    self.halt("reached the stop time (--until, stop_at)")
                    # A debugger waiting for a stop gets one, as from QEMU (a VM stopped by QMP: SIGINT).
                    self.gdb.report_stop(StopInfo(2))
                    continue
                started, at = time.perf_counter(), self.machine.cycles
                stop = self.machine.run(budget)
                spent = time.perf_counter() - started
                if spent > 0 and stop.reason == "budget":  # cycles per host second, smoothed
                    self._rate = 0.7 * self._rate + 0.3 * (self.machine.cycles - at) / spent
                self.history.advanced()
                self.history.maybe_checkpoint()
                self._flush()
                if stop.reason == "idle" and not self.replaying and self.until is None:
                    self.idle = True
                elif stop.reason == "idle":
                    # Asleep, but a replayed input or the --until point lies ahead: time goes on to it.
                    self.machine.run(self._budget() or 1, idle_to_end=True)
                else:
                    self._report(stop)
                now = time.monotonic()
                if now - last_poll < 0.001 and self.running and not self.idle:
                    continue
                last_poll = now
                self._poll(0)
                continue
            self._flush()
            self._poll(None if not self.running or self.idle else 0)
        self._flush()
        return self.exit_code

    def close(self) -> None:
        self._flush()
        self.gdb.close()
        self.console.close()
        for chan in self.channels.values():
            chan.close()
        self.control.close(0)
        self.ctx.term()
        for name in ("engine.sock", "gdbstub.sock"):
            (self.rundir / name).unlink(missing_ok=True)
        self.log.close()
        if self.semihosting is not None:
            self.semihosting.close()


def _encode(cycle: int, kind: str, args: tuple[Any, ...]) -> list[Any]:
    return [cycle, kind, [a.hex() if isinstance(a, bytes) else a for a in args]]


def _decode(item: list[Any]) -> tuple[int, str, tuple[Any, ...]]:
    cycle, kind, args = item
    if kind == "uart":
        args = [args[0], bytes.fromhex(args[1])]
    return int(cycle), str(kind), tuple(args)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m virsim.backends.builtin",
                                     description="virsim's built-in Cortex-M engine (started by the daemon)")
    parser.add_argument("--spec", required=True, type=Path, help="engine.json written by the daemon")
    parser.add_argument("--rundir", required=True, help="the session runtime dir (names the process for sweeps)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        spec = EngineSpec.load(args.spec)
        engine = Engine(spec)
    except Exception as err:  # noqa: BLE001 - the daemon shows this line as the failure reason
        print(f"virsim engine: cannot start: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        return 2
    try:
        return engine.loop()
    finally:
        engine.close()
