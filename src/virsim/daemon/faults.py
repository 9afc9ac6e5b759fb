"""The fault service: the Cortex-M faults a session's firmware takes, as the user sees them.

An emulator records each fault in its fault table (virsim.backends.faults: the built-in engine at
exception entry, QEMU's vprobe plugin at the handler's first instruction). Every supervision tick
this service reads what is new, decodes it (CFSR/HFSR bits, the faulting pc from the stacked
frame, its function and file:line from the ELF), keeps the last one on the session (`session
show`: fault, faults) and publishes a `fault` event, which `virsim run` turns into a FAILED verdict
at once. An emulator that dies of a lockup (QEMU aborts, the built-in engine exits) gets the same
treatment from its last words. While virsim's debugger is attached, the table's halt flag makes
the emulator stop at the fault, and the debug service reports that stop as a `fault` stop.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from virsim import protocol as p
from virsim.backends.base import Capability
from virsim.backends.faults import FaultRecord, FaultTable
from virsim.daemon.cortexm import describe_fault, exception_name
from virsim.daemon.store import Store
from virsim.errors import InvalidState, VirsimError

if TYPE_CHECKING:
    from virsim.daemon.analysis import AnalysisService
    from virsim.daemon.sessions import SessionService

log = logging.getLogger("virsim.daemon.faults")
# QEMU: "qemu: fatal: Lockup: can't escalate 3 to HardFault (current priority -1)" then a register
# dump with R15=...; the built-in engine: "Lockup: <why> (pc=0x000000a2)".
_LOCKUP = re.compile(r"Lockup: ([^\n]*?)(?: \(pc=(0x[0-9a-fA-F]+)\))?$", re.MULTILINE)
_R15 = re.compile(r"R15=([0-9a-fA-F]{8})")


@dataclass
class Watched:
    table: FaultTable
    seen: int


class FaultService:
    def __init__(self, sessions: SessionService, store: Store, analysis: AnalysisService) -> None:
        self.sessions = sessions
        self.store = store
        self.analysis = analysis
        self.tables: dict[str, Watched] = {}
        sessions.faults = self

    # ------------------------------------------------------------------- hooks for the session service
    def instance_started(self, session_id: str, fresh: bool) -> None:
        """A live instance for the session (just started, `fresh`, or re-attached): watch its table."""
        self.instance_stopping(session_id)
        live = self.sessions.live.get(session_id)
        path = live.instance.fault_table() if live is not None else None
        if path is None or not path.exists():
            return
        try:
            table = FaultTable.open(path)
        except (OSError, ValueError):
            log.exception("session %s: cannot map its fault table %s", session_id, path)
            return
        if fresh:
            self.store.update_session(session_id, fault_json=None, faults=0)
        self.tables[session_id] = Watched(table, table.count if not fresh else 0)

    def instance_stopping(self, session_id: str) -> None:
        self.poll(session_id)  # what the firmware did last is kept
        watched = self.tables.pop(session_id, None)
        if watched is not None:
            watched.table.close()

    def emulator_died(self, row: dict[str, Any], stderr_tail: str) -> dict[str, Any] | None:
        """An emulator that ended of a CPU lockup: the fault it reported last, recorded and published."""
        m = None
        for m in _LOCKUP.finditer(stderr_tail or ""):
            pass
        if m is None:
            return None
        pc = int(m.group(2), 16) if m.group(2) else None
        if pc is None:
            regs = _R15.search(stderr_tail[m.end():])
            pc = int(regs.group(1), 16) if regs else None
        fault: dict[str, Any] = {"handler": "Lockup", "summary": f"Lockup: {m.group(1)}", "bits": []}
        if pc is not None:
            fault["fault_pc"] = pc
            self._locate(row, fault, pc)
        self._record(row, fault)
        return fault

    # ----------------------------------------------------------------------------------- polling
    def set_halt(self, session_id: str, on: bool) -> bool:
        """Make the emulator stop at the next fault (virsim's debugger attached); False if it cannot."""
        watched = self.tables.get(session_id)
        if watched is None:
            return False
        watched.table.set_halt(on)
        return True

    def count(self, session_id: str) -> int:
        """Faults read from the session's table so far."""
        watched = self.tables.get(session_id)
        return watched.seen if watched is not None else 0

    def last(self, session_id: str) -> dict[str, Any] | None:
        """The session's last decoded fault."""
        row = self.store.get_session(session_id)
        return json.loads(row["fault_json"]) if row.get("fault_json") else None

    def tick(self) -> None:
        for sid in list(self.tables):
            self.poll(sid)

    def poll(self, session_id: str) -> list[dict[str, Any]]:
        """Decode, record and publish the faults recorded since the last look; returns them."""
        watched = self.tables.get(session_id)
        if watched is None:
            return []
        try:
            records, watched.seen = watched.table.since(watched.seen)
        except (ValueError, OSError):
            return []
        if not records:
            return []
        row = self.store.get_session(session_id)
        faults = [self.decode(row, r) for r in records]
        for fault in faults:
            self._record(row, fault)
        return faults

    def decode(self, row: dict[str, Any], r: FaultRecord) -> dict[str, Any]:
        regs = {"CFSR": r.cfsr, "HFSR": r.hfsr, "MMFAR": r.mmfar, "BFAR": r.bfar}
        fault = describe_fault(r.name, regs, r.stacked_pc if r.frame_read else None)
        fault.update(exception=r.exception, handler_pc=r.handler, sp=r.sp, exc_return=r.lr,
                     virtual_ns=r.virtual_ns, instructions=r.instructions)
        if r.frame_read:
            fault["stacked"] = {"pc": r.stacked_pc, "lr": r.stacked_lr, "xpsr": r.stacked_xpsr, "r0": r.stacked_r0}
            self._locate(row, fault, r.stacked_pc)
        elif r.on_process_stack:
            fault["note"] = ("the exception frame is on the process stack (PSP), which this emulator does not "
                             "expose: the faulting pc is unknown")
        return fault

    # ------------------------------------------------------------------------ exceptions taken
    def exceptions(self, req: p.SessionExceptions) -> p.ExceptionList:
        """The last exceptions the session's CPU took (the table's ring), named and located."""
        row = self.sessions.row(req.session)
        self.sessions.need(row, Capability.FAULTS)
        watched = self.tables.get(row["id"])
        if watched is None:
            raise InvalidState(f"session {row['id']} has no running emulator (it is {row['state']}): the exceptions "
                               "it took are known only while it runs", session=row["id"], current=row["state"])
        try:
            entries, total = watched.table.last_taken(req.last), watched.table.taken
        except (ValueError, OSError) as err:
            raise InvalidState(f"session {row['id']}: its fault table cannot be read ({err})", session=row["id"]) from err
        node = self.sessions.board_node(row)
        irq_names = {ph.irq: ph.id for ph in node.peripherals if ph.irq is not None}
        out = []
        for e in entries:
            where: dict[str, Any] = {}
            if e.frame_read:
                self._locate(row, where, e.return_pc)
            handler: dict[str, Any] = {}
            self._locate(row, handler, e.handler)
            out.append(p.ExceptionTaken(
                exception=e.exception, name=exception_name(e.exception, irq_names),
                virtual_ns=e.virtual_ns, instructions=e.instructions, clock_exact=not e.clock_early,
                handler=e.handler, handler_function=handler.get("function"), return_pc=e.return_pc if e.frame_read else None,
                return_location=where.get("fault_location"), exc_return=e.lr, sp=e.sp))
        return p.ExceptionList(session=row["id"], total=total, exceptions=out)

    def _locate(self, row: dict[str, Any], fault: dict[str, Any], pc: int) -> None:
        """fault_location: the function and file:line of `pc`, from the session's ELF."""
        try:
            program, _source = self.analysis.program(row)
        except VirsimError:
            return
        fn = program.function_at(pc)
        line = program.line_at(pc)
        if fn is None and line is None:
            return
        where = fn.name if fn is not None else f"{pc:#010x}"
        if line is not None:
            where += f" ({line.file}:{line.line})"
            fault["file"], fault["line"] = line.file, line.line
        if fn is not None:
            fault["function"] = fn.name
        fault["fault_location"] = where

    def _record(self, row: dict[str, Any], fault: dict[str, Any]) -> None:
        sid = row["id"]
        row = self.store.update_session(sid, fault_json=json.dumps(fault), faults=(row.get("faults") or 0) + 1)
        log.info("session %s: %s%s", sid, fault.get("summary"),
                 f" at {fault['fault_location']}" if fault.get("fault_location") else "")
        self.sessions.publish(p.Event(type="fault", session=sid, time=time.time(), fault=fault), b"")
