"""The debug service: breakpoints, watchpoints, run control, registers, memory, expressions.

Model (docs/debugging.md): each session with the DEBUG capability gets, on its first debug
command, a virsim debugger (daemon/debugger.py: gdb-multiarch over MI) attached to the backend's
gdb stub; it stays attached, so later commands cost one MI round trip. While it is attached,
session pause/resume go through it. Breakpoints live in the store and are re-applied whenever a
debugger attaches (after a reset, power cycle, new program or daemon restart). Each session also
has a user-facing gdb endpoint (gdbproxy.py): an external debugger that connects there takes the
stub over — virsim's debugger detaches, and debug commands answer DEBUGGER_BUSY until it leaves.

On M-profile boards the debugger also catches faults: while it is attached, the emulator halts at
a fault (the fault table's halt flag, daemon/faults.py) and the stop is reported as a `fault` stop
with CFSR/HFSR decoded. An emulator without a fault table (QEMU without vprobe) gets breakpoints on
the HardFault, MemManage, BusFault and UsageFault handlers instead, which slow the code that shares
their page.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virsim import protocol as p
from virsim.analysis.symbols import relative_comp_dirs, source_dir
from virsim.backends.base import Capability
from virsim.daemon.cortexm import FAULT_VECTORS, SCB_BASE, SCB_END, SYSTEM_REGISTERS, describe_fault
from virsim.daemon.debugger import GDB, Debugger, GdbError, mi_quote
from virsim.daemon.gdbproxy import GdbProxy
from virsim.daemon.pending import Deferred, PendingReplies
from virsim.daemon.sessions import SessionService
from virsim.daemon.states import LIVE, SessionState
from virsim.daemon.store import Store
from virsim.errors import DebuggerBusy, InvalidInput, InvalidState, NotFound, NotSupported, VirsimError

log = logging.getLogger("virsim.daemon.debug")
S = SessionState

GENERAL_M = ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "sp", "lr", "pc",
             "xpsr"]
GENERAL_A = GENERAL_M[:-1] + ["cpsr"]
SYSTEM_GDB = ["msp", "psp", "primask", "basepri", "faultmask", "control", "msp_s", "psp_s", "msp_ns", "psp_ns",
              "msplim_s", "psplim_s", "control_s", "primask_s", "basepri_s", "faultmask_s"]
_FP_RE = re.compile(r"^(d\d+|s\d+|q\d+|fpscr|fpsid|fpexc|vpr|p0)$")
_ADDR_IN_VALUE = re.compile(r"0x[0-9a-fA-F]+")
BY_NAME = "by-name"  # <runtime>/by-name/<session name>.gdb.sock: the session's stable gdb socket
_SOCKET_NAME = re.compile(r"[A-Za-z0-9_@+-][A-Za-z0-9._@+-]*")
_MAX_SOCKET_PATH = 107  # sockaddr_un.sun_path is 108 bytes with its NUL
STOP_REASONS = {
    "breakpoint-hit": "breakpoint", "watchpoint-trigger": "watchpoint", "read-watchpoint-trigger": "watchpoint",
    "access-watchpoint-trigger": "watchpoint", "end-stepping-range": "step", "function-finished": "finish",
    "location-reached": "step", "signal-received": "signal", "exited": "exited", "exited-normally": "exited",
    "exited-signalled": "exited", "no-history": "history-start",  # reverse execution reached its beginning
}


@dataclass
class StepPlan:
    command: str
    remaining: int


@dataclass
class SessionDebug:
    debugger: Debugger | None = None
    proxy: GdbProxy | None = None
    stop: p.StopInfo | None = None
    seq: int = 0
    gdb_ids: dict[int, int] = field(default_factory=dict)  # gdb breakpoint number -> the session's number
    fault_bps: dict[int, str] = field(default_factory=dict)  # gdb breakpoint number -> handler
    step: StepPlan | None = None
    regs_seq: int = -1  # the stop at which registers were last read
    regs_seen: dict[str, int] = field(default_factory=dict)  # values read at that stop
    regs_base: dict[str, int] = field(default_factory=dict)  # values read at earlier stops
    fault_mark: int = 0  # faults recorded by the last stop (a stop with more is a fault stop)


class DebugService:
    def __init__(self, sessions: SessionService, store: Store, pending: PendingReplies) -> None:
        self.sessions = sessions
        self.store = store
        self.pending = pending
        self.state: dict[str, SessionDebug] = {}
        sessions.debug = self
        # Per-name sockets a daemon that died left behind: the sessions that still run get theirs
        # back when they are re-attached; the others must not look connectable.
        for stale in (sessions.paths.runtime / BY_NAME).glob("*.gdb.sock"):
            stale.unlink(missing_ok=True)

    # ------------------------------------------------------------------- hooks for the session service

    def controller(self, session_id: str) -> Debugger | None:
        """The attached virsim debugger, which then owns pause/resume of the session."""
        st = self.state.get(session_id)
        if st is None or st.debugger is None or not st.debugger.alive():
            return None
        return st.debugger

    def instance_started(self, row: dict[str, Any]) -> bool:
        """A new emulator runs for this session (halted): open its gdb endpoint, and if the session
        has breakpoints attach the debugger now so they are in place before the first instruction.
        Returns True if the debugger attached (it then owns resuming the target)."""
        sid = row["id"]
        st = self.state.setdefault(sid, SessionDebug())
        self._open_proxy(row, st)
        if not self.store.breakpoints(sid) or not self._can_debug(row):
            return False
        try:
            self._attach(row, st)
        except VirsimError:
            log.exception("re-applying breakpoints of session %s", sid)
            return False
        return True

    def instance_stopping(self, session_id: str) -> None:
        """The emulator is going away: end the debugger and the proxy, answer waiting requests."""
        st = self.state.pop(session_id, None)
        if st is None:
            return
        if st.debugger is not None:
            st.debugger.kill()
        if st.proxy is not None:
            st.proxy.close()
        self.pending.resolve(session_id, InvalidState(f"session {session_id} stopped running while waiting",
                                                      session=session_id))

    def info(self, session_id: str) -> tuple[str | None, p.StopInfo | None]:
        st = self.state.get(session_id)
        if st is None:
            return None, None
        held = "external" if st.proxy is not None and st.proxy.held else None
        return held or ("virsim" if self.controller(session_id) else None), st.stop

    def flush(self) -> None:
        """Report stops that gdb printed while a command was being answered: they were read with
        the command's result, and gdb's fd will not wake the loop for them again."""
        for sid, st in list(self.state.items()):
            if st.debugger is not None and st.debugger.alive():
                try:
                    st.debugger.dispatch()
                except VirsimError:
                    log.exception("session %s: reporting a stop", sid)

    def watched(self) -> dict[int, Any]:
        out: dict[int, Any] = {}
        for sid, st in list(self.state.items()):
            if st.debugger is not None and st.debugger.alive():
                dbg = st.debugger
                out[dbg.fileno()] = lambda sid=sid, dbg=dbg: self._pump(sid, dbg)
            if st.proxy is not None:
                out.update(st.proxy.watched())
        return out

    # ----------------------------------------------------------------------------------- attaching

    def _can_debug(self, row: dict[str, Any]) -> bool:
        return Capability.DEBUG in self.sessions.adapter(row).get_capabilities()

    def _open_proxy(self, row: dict[str, Any], st: SessionDebug) -> None:
        if st.proxy is not None or not self._can_debug(row):
            return
        live = self.sessions.live.get(row["id"])
        endpoint = live.instance.gdb_endpoint() if live else None
        if endpoint is None:
            return
        sid = row["id"]
        path = self.sessions.paths.session_runtime(sid) / "gdb.sock"
        st.proxy = GdbProxy(path, endpoint, on_attach=lambda: self._external_attached(sid),
                            on_detach=lambda: self._external_detached(sid), session=row["name"])
        by_name = self._by_name_path(row)
        if by_name is not None:
            try:
                by_name.parent.mkdir(mode=0o700, exist_ok=True)
                st.proxy.listen_unix(by_name)
            except OSError:
                log.exception("session %s: opening its per-name gdb socket %s", sid, by_name)

    def _by_name_path(self, row: dict[str, Any]) -> Path | None:
        """The session's stable gdb socket, `<runtime>/by-name/<name>.gdb.sock`: the same path for
        every session of that name, so an IDE's configuration need not change per session. None
        for a name that cannot be one (a path separator, ':' which gdb reads as host:port,
        whitespace) or would make the path longer than a Unix socket address allows."""
        name = row["name"]
        path = self.sessions.paths.runtime / BY_NAME / f"{name}.gdb.sock"
        if not _SOCKET_NAME.fullmatch(name) or len(os.fsencode(path)) > _MAX_SOCKET_PATH:
            return None
        return path

    def _external_attached(self, sid: str) -> None:
        st = self.state.get(sid)
        if st is not None and st.debugger is not None:
            log.info("session %s: external debugger connecting; detaching virsim's", sid)
            st.debugger.close()
            st.debugger = None
            self._halt_at_faults(sid, False)
            st.gdb_ids.clear()
            st.fault_bps.clear()
        self.pending.resolve(sid, DebuggerBusy(f"an external debugger attached to session {sid}", session=sid))

    def _external_detached(self, sid: str) -> None:
        row = self.store.get_session(sid)
        live = self.sessions.live.get(sid)
        if live is None or self.sessions.state_of(row) not in LIVE:
            return
        try:
            running = live.instance.run_status().running
        except VirsimError:
            return
        row = self.sessions.set_state(row, S.RUNNING if running else S.PAUSED, "external debugger detached")
        st = self.state.get(sid)
        if st is not None and self.store.breakpoints(sid):
            try:  # the stored breakpoints go back in at once, not at the next debug command
                self._attach(row, st)
            except VirsimError:
                log.exception("session %s: re-attaching after the external debugger", sid)

    def state_replaced(self, session_id: str, gdb_replaced: bool = False) -> None:
        """A snapshot was restored under the debugger: its cached registers and last stop are stale.
        `gdb_replaced`: the restore made a new gdb endpoint (Renode): the debugger reconnects, with
        the session's breakpoints inserted again."""
        self.forget_stop(session_id)
        st = self.state.get(session_id)
        if gdb_replaced and st is not None and st.debugger is not None:
            st.debugger.close()
            st.debugger = None
            self._attach(self.sessions.row(session_id), st)
            return
        dbg = self.controller(session_id)
        if dbg is not None and not dbg.running:
            dbg.command('-interpreter-exec console "maintenance flush register-cache"')

    def forget_stop(self, session_id: str) -> None:
        """The CPU was reset: the last stop no longer describes it."""
        st = self.state.get(session_id)
        if st is not None:
            st.stop = None

    def _session(self, ref: str, *, node: str | None = None, halted: bool = False,
                 peek: bool = False) -> tuple[dict[str, Any], Debugger]:
        """Resolve the session and its attached debugger (attaching it if needed); on a multi-node
        board, to `node`."""
        row = self.sessions.row(ref)
        state = self.sessions.state_of(row)
        if state not in LIVE:
            raise InvalidState(f"cannot debug session {row['id']}: it is {state.value}; debugging needs a running "
                               "emulator (created, running or paused)", session=row["id"], current=state.value,
                               required=sorted(s.value for s in LIVE))
        self.sessions.need(row, Capability.DEBUG)
        st = self.state.setdefault(row["id"], SessionDebug())
        row = self._debug_node(row, st, node)
        if st.proxy is not None and st.proxy.held:
            raise DebuggerBusy(f"session {row['id']} is held by an external debugger (on {st.proxy.path}); "
                               "detach it to use virsim's debug commands", session=row["id"], held_by="external")
        dbg = st.debugger if st.debugger is not None and st.debugger.alive() else self._attach(row, st)
        if halted and dbg.running and not peek:
            raise InvalidState(f"session {row['id']} is running: pause it first (virsim session pause) or use "
                               "--peek to halt, read and resume", session=row["id"], current="running",
                               required=["paused"])
        return row, dbg

    def _debug_node(self, row: dict[str, Any], st: SessionDebug, node: str | None) -> dict[str, Any]:
        """A multi-node session debugs one node at a time: the session row's `node`. A stop there
        halts the system, since the other nodes wait for it at their next barrier (one quantum at
        most). Switching nodes moves the debugger; breakpoints belong to the node they were set on,
        so the switch is refused while there are any."""
        sid = row["id"]
        if row["backend"] != "system":
            if node is not None and node != row["node"]:
                raise InvalidInput(f"--node {node}: session {sid} runs one node ({row['node']}); --node is for "
                                   "multi-node boards", field="node", value=node)
            return row
        board = self.sessions._board(row)
        names = [n.id for n in board.nodes]
        if node is None or node == row["node"]:
            node = row["node"]
        elif node not in names:
            raise NotFound(f"session {sid} has no node {node!r}; its nodes: {', '.join(names)}", field="node",
                           value=node)
        target = next(n for n in board.nodes if n.id == node)
        if target.backend != "builtin":
            raise NotSupported(f"debugging node {node} ({target.backend}) of a multi-node board is not implemented: "
                               "QEMU's gdb stub would stop QEMU while its lockstep plugin holds the barrier; built-in "
                               "nodes can be debugged", node=node, backend=target.backend, capability="debug")
        if node == row["node"]:
            return row
        if self.store.breakpoints(sid):
            raise InvalidState(f"the debugger is on node {row['node']} of session {sid}, with breakpoints set: delete "
                               f"them (virsim debug delete {sid} --all) before debugging node {node}", session=sid,
                               node=row["node"], current=row["node"], required=[node])
        if st.debugger is not None:
            if st.debugger.running is False:
                st.debugger.resume()  # the node it leaves runs on with the others
            st.debugger.close()
            st.debugger = None
            self._halt_at_faults(sid, False)
        if st.proxy is not None:
            st.proxy.close()
            st.proxy = None
        st.stop = None
        row = self.store.update_session(sid, node=node)
        live = self.sessions.live.get(sid)
        if live is not None:
            live.instance.spec.node = target  # its gdb endpoint is now that node's
        self._open_proxy(row, st)
        return row

    def _attach(self, row: dict[str, Any], st: SessionDebug) -> Debugger:
        sid = row["id"]
        live = self.sessions.live.get(sid)
        endpoint = live.instance.gdb_endpoint() if live else None
        if live is None or endpoint is None:
            raise NotSupported(f"session {sid} has no gdb endpoint", session=sid, capability="debug")
        if st.debugger is not None:
            st.debugger.close()
        elf = self._elf(row)
        log_path = self.sessions.paths.session_dir(sid) / "gdb.log"
        dbg = Debugger(elf, endpoint, on_stop=lambda payload: self._on_stop(sid, payload), log=log_path,
                       cwd=self.sessions.paths.session_runtime(sid))
        st.debugger, st.gdb_ids, st.fault_bps = dbg, {}, {}
        for bp in self.store.breakpoints(sid):
            try:
                st.gdb_ids[self._insert(dbg, bp)] = bp["number"]
            except VirsimError as err:
                log.warning("session %s: breakpoint %s (%s) not re-applied: %s", sid, bp["number"], bp["location"],
                            err)
        faults = self.sessions.faults
        if faults is not None and faults.set_halt(sid, True):
            st.fault_mark = faults.count(sid)
        elif self.sessions.board_node(row).processor.profile == "m":
            self._catch_faults(dbg, st)
        # Attaching halted the CPU; a running session keeps running.
        if self.sessions.state_of(row) == S.RUNNING:
            dbg.resume()
        return dbg

    def _program(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """The store row of the program the debugger sees."""
        program = row.get("program")
        if row.get("system_json"):  # a multi-node session: the debugged node's program
            program = json.loads(row["system_json"])["programs"].get(row["node"])
        return self.store.get_program(row["id"], program) if program else None

    def _elf(self, row: dict[str, Any]) -> Path | None:
        prog = self._program(row)
        return Path(prog["path"]) if prog and prog["format"] == "elf" else None

    def _catch_faults(self, dbg: Debugger, st: SessionDebug) -> None:
        try:
            vtor = int.from_bytes(dbg.read_memory(SYSTEM_REGISTERS["VTOR"], 4), "little")
            table = dbg.read_memory(vtor, 7 * 4)
        except VirsimError:
            return
        seen: dict[int, str] = {}
        for slot, name in FAULT_VECTORS.items():
            handler = int.from_bytes(table[slot * 4:slot * 4 + 4], "little") & ~1
            if handler and handler not in seen:
                seen[handler] = name
        for address, name in seen.items():
            try:
                rec = dbg.command(f"-break-insert *{address:#x}")
                st.fault_bps[int(rec["payload"]["bkpt"]["number"])] = name
            except VirsimError:
                continue

    # ---------------------------------------------------------------------------------- breakpoints

    @staticmethod
    def _insert(dbg: Debugger, bp: dict[str, Any]) -> int:
        if bp["kind"] == "watchpoint":
            flag = {"write": "", "read": "-r ", "access": "-a "}[bp["access"]]
            rec = dbg.command(f"-break-watch {flag}{mi_quote(bp['location'])}")
            payload = rec["payload"]
            wpt = payload.get("wpt") or payload.get("hw-rwpt") or payload.get("hw-awpt") or {}
            if bp["ignore_count"]:
                dbg.command(f"-break-after {int(wpt['number'])} {int(bp['ignore_count'])}")
            if not bp.get("enabled", 1):
                dbg.command(f"-break-disable {int(wpt['number'])}")
            return int(wpt["number"])
        opts = []
        if bp["temporary"]:
            opts.append("-t")
        if bp["condition"]:
            opts.append(f"-c {mi_quote(bp['condition'])}")
        if bp["ignore_count"]:
            opts.append(f"-i {int(bp['ignore_count'])}")
        if not bp.get("enabled", 1):
            opts.append("-d")
        rec = dbg.command(f"-break-insert {' '.join(opts)} {mi_quote(bp['location'])}")
        return int(rec["payload"]["bkpt"]["number"])

    def _bp_info(self, bp: dict[str, Any], resolved: str | None = None) -> p.BreakpointInfo:
        return p.BreakpointInfo(
            id=bp["number"], session=bp["session"], kind=bp["kind"], location=bp["location"],
            condition=bp["condition"], temporary=bool(bp["temporary"]), ignore_count=bp["ignore_count"] or 0,
            access=bp["access"], size=bp["size"], address=bp["address"], hits=bp["hits"] or 0, resolved=resolved,
            enabled=bool(bp.get("enabled", 1)), file=bp.get("file"), line=bp.get("line"))

    def _check_address(self, row: dict[str, Any], address: int, size: int, what: str) -> None:
        node = self.sessions.board_node(row)
        end = address + size
        if any(r.address <= address and end <= r.end for r in node.memory):
            return
        if any(ph.address <= address and end <= ph.address + ph.size for ph in node.peripherals):
            return
        if node.processor.profile == "m" and SCB_BASE <= address and end <= SCB_END:
            return
        regions = ", ".join(f"{r.name or r.type} {r.address:#x}..{r.end:#x}" for r in node.memory)
        raise InvalidInput(f"{what} {address:#010x}..{end:#010x} is outside every memory region and peripheral of "
                           f"node {node.id!r} ({regions})", address=address, size=size)

    def _gdb_failure(self, err: GdbError, what: str) -> VirsimError:
        msg = str(err.details.get("gdb_message", err))
        if "not defined" in msg or "No symbol" in msg or "No source file" in msg or "No line" in msg:
            return NotFound(f"{what}: {msg}", kind="symbol", gdb_message=msg)
        return GdbError(f"{what}: {msg}", gdb_message=msg)

    def break_(self, req: p.DebugBreak) -> p.BreakpointInfo:
        row, dbg = self._session(req.session, node=req.node)
        if req.location.startswith("*"):
            try:
                self._check_address(row, int(req.location[1:], 0), 2, "breakpoint address")
            except ValueError:
                pass  # an expression after '*': gdb evaluates it
        bp = {"session": row["id"], "kind": "breakpoint", "location": req.location, "condition": req.condition,
              "temporary": int(req.temporary), "ignore_count": req.ignore_count, "access": None, "size": None,
              "address": None}
        st = self.state[row["id"]]
        with dbg.halted():
            try:
                number = self._insert(dbg, bp)
            except GdbError as err:
                raise self._gdb_failure(err, f"cannot break at {req.location!r}") from err
            where, address, file, line = self._describe_bp(dbg, number)
        saved = self.store.add_breakpoint({**bp, "address": address, "file": file, "line": line})
        st.gdb_ids[number] = saved["number"]
        return self._bp_info(saved, where)

    def _describe_bp(self, dbg: Debugger, number: int) -> tuple[str | None, int | None, str | None, int | None]:
        """Where gdb placed breakpoint `number`: a description, the address, the file and line."""
        rec = dbg.command(f"-break-info {number}")
        body = rec["payload"]["BreakpointTable"]["body"]
        if not body:
            return None, None, None, None
        b = body[0]
        addr = int(b["addr"], 16) if str(b.get("addr", "")).startswith("0x") else None
        where = f"{b.get('func', '?')} at {b['file']}:{b['line']}" if b.get("file") else b.get("what") or b.get("addr")
        line = int(b["line"]) if str(b.get("line", "")).isdigit() else None
        return where, addr, b.get("file"), line

    def enable(self, req: p.DebugEnable) -> p.BreakpointInfo:
        """Keep a breakpoint or watchpoint but (do not) stop there; the store keeps the choice, so a
        debugger attached later inserts it as it was left."""
        row = self.sessions.row(req.session)
        self.store.get_breakpoint(row["id"], req.breakpoint)  # NOT_FOUND before anything changes
        st = self.state.get(row["id"])
        dbg = self.controller(row["id"])
        if dbg is not None and st is not None:
            numbers = [n for n, bid in st.gdb_ids.items() if bid == req.breakpoint]
            if numbers:
                with dbg.halted():
                    dbg.command(f"-break-{'enable' if req.enabled else 'disable'} {' '.join(map(str, numbers))}")
        return self._bp_info(self.store.set_breakpoint_enabled(row["id"], req.breakpoint, req.enabled))

    def watch(self, req: p.DebugWatch) -> p.BreakpointInfo:
        row, dbg = self._session(req.session, node=req.node)
        target = req.target.strip()
        address: int | None = None
        size = req.size
        try:
            address = int(target, 0)
        except ValueError:
            pass
        if address is not None:
            size = size or 4
            if size not in (1, 2, 4, 8):
                raise InvalidInput(f"watch size must be 1, 2, 4 or 8 bytes, got {size}", field="size", value=size)
            if address % size:
                raise InvalidInput(f"watch address {address:#x} is not aligned to its size ({size} bytes): "
                                   f"use an address that is a multiple of {size}", address=address, size=size)
            self._check_address(row, address, size, "watch range")
            ctype = {1: "unsigned char", 2: "unsigned short", 4: "unsigned int", 8: "unsigned long long"}[size]
            expression = f"*({ctype} *){address:#x}"
        else:
            expression = target
        bp = {"session": row["id"], "kind": "watchpoint", "location": expression, "condition": None, "temporary": 0,
              "ignore_count": req.ignore_count, "access": req.access, "size": size, "address": address}
        st = self.state[row["id"]]
        with dbg.halted():
            try:
                number = self._insert(dbg, bp)
            except GdbError as err:
                raise self._gdb_failure(err, f"cannot watch {target!r}") from err
            if address is None:
                try:
                    value = dbg.evaluate(f"&({expression})")
                    m = _ADDR_IN_VALUE.search(value)
                    bp["address"] = int(m.group(0), 16) if m else None
                    bp["size"] = int(dbg.evaluate(f"sizeof({expression})"))
                except VirsimError:
                    pass
        saved = self.store.add_breakpoint(bp)
        st.gdb_ids[number] = saved["number"]
        return self._bp_info(saved, expression)

    def list_(self, req: p.SessionRef) -> p.BreakpointList:
        row = self.sessions.row(req.session)
        return p.BreakpointList(session=row["id"], breakpoints=[self._bp_info(b) for b in self.store.breakpoints(row["id"])])

    def delete(self, req: p.DebugDelete) -> p.DeletedBreakpoints:
        row = self.sessions.row(req.session)
        if req.breakpoint is None and not req.all:
            raise InvalidInput("give a breakpoint id or --all", field="breakpoint")
        targets = self.store.breakpoints(row["id"]) if req.all else \
            [self.store.get_breakpoint(row["id"], req.breakpoint)]  # type: ignore[arg-type]
        st = self.state.get(row["id"])
        dbg = self.controller(row["id"])
        if dbg is not None and st is not None:
            numbers = [n for n, bid in st.gdb_ids.items() if bid in {t["number"] for t in targets}]
            if numbers:
                with dbg.halted():
                    dbg.command(f"-break-delete {' '.join(map(str, numbers))}")
            for n in numbers:
                st.gdb_ids.pop(n, None)
        for t in targets:
            self.store.delete_breakpoint(row["id"], t["number"])
        return p.DeletedBreakpoints(session=row["id"], deleted=[t["number"] for t in targets])

    # ---------------------------------------------------------------------------------- run control

    def _running_reply(self, sid: str) -> p.DebugRunReply:
        return p.DebugRunReply(session=sid, state="running", stop=None, timed_out=True)

    def continue_(self, req: p.DebugContinue) -> p.DebugRunReply | Deferred:
        row, dbg = self._session(req.session, node=req.node)
        sid = row["id"]
        if not row.get("program"):
            raise InvalidState(f"session {sid} has no program to run", session=sid, current=row["state"])
        if not dbg.running:
            self.state[sid].step = None
            self._release_undebugged(sid, True)
            dbg.command("-exec-continue")
            self.sessions.set_state(row, S.RUNNING, "continued by debugger")
        if not req.wait:
            return p.DebugRunReply(session=sid, state="running")
        return Deferred(sid, time.monotonic() + req.timeout, lambda: self._running_reply(sid))

    def step(self, req: p.DebugStep) -> p.DebugRunReply | Deferred:
        row, dbg = self._session(req.session, node=req.node)
        sid = row["id"]
        if dbg.running:
            raise InvalidState(f"session {sid} is running: stepping needs it stopped (virsim session pause)",
                               session=sid, current="running", required=["paused"])
        if req.kind.startswith("reverse-"):
            self.sessions.need(row, Capability.REVERSE)
        command = {"step": "-exec-step", "next": "-exec-next", "finish": "-exec-finish",
                   "stepi": "-exec-step-instruction", "nexti": "-exec-next-instruction",
                   "reverse-step": "-exec-step --reverse", "reverse-next": "-exec-next --reverse",
                   "reverse-stepi": "-exec-step-instruction --reverse", "reverse-finish": "-exec-finish --reverse",
                   "reverse-continue": "-exec-continue --reverse"}[req.kind]
        self.state[sid].step = StepPlan(command, req.count)
        self._release_undebugged(sid, True)
        try:
            self._step_command(sid, dbg, command)
        except GdbError as err:
            self.state[sid].step = None
            raise self._gdb_failure(err, f"cannot {req.kind}") from err
        self.sessions.set_state(row, S.RUNNING, f"{req.kind} by debugger")
        return Deferred(sid, time.monotonic() + req.timeout, lambda: self._running_reply(sid))

    def _step_command(self, sid: str, dbg: Debugger, command: str) -> None:
        live = self.sessions.live.get(sid) if "--reverse" in command else None
        if live is not None:
            live.instance.reverse_begin()  # paired with reverse_end() in _on_stop
        try:
            dbg.command(command)
        except GdbError:
            if live is not None:
                live.instance.reverse_end()
            raise

    def _release_undebugged(self, sid: str, run: bool) -> None:
        live = self.sessions.live.get(sid)
        if live is not None:
            live.instance.release_undebugged(run)

    def interrupt(self, session_id: str) -> None:
        dbg = self.controller(session_id)
        self._release_undebugged(session_id, False)
        if dbg is not None:
            dbg.interrupt()
            dbg.dispatch()

    def resume(self, session_id: str) -> None:
        dbg = self.controller(session_id)
        self._release_undebugged(session_id, True)
        if dbg is not None:
            self.state[session_id].step = None
            dbg.resume()

    def _pump(self, sid: str, dbg: Debugger) -> None:
        try:
            dbg.pump()
        except VirsimError:
            log.exception("session %s: debugger failed", sid)
            st = self.state.get(sid)
            if st is not None and st.debugger is dbg:
                dbg.close()
                st.debugger = None
                self._halt_at_faults(sid, False)

    def _halt_at_faults(self, sid: str, on: bool) -> None:
        if self.sessions.faults is not None:
            self.sessions.faults.set_halt(sid, on)

    def _on_stop(self, sid: str, payload: dict[str, Any]) -> None:
        st = self.state.get(sid)
        if st is None or st.debugger is None:
            return
        dbg = st.debugger
        reason = STOP_REASONS.get(str(payload.get("reason", "")), str(payload.get("reason") or "interrupted"))
        if not payload.get("reason") and st.step is not None and "--reverse" in st.step.command:
            reason = "history-start"  # gdb 13 reports "No more reverse-execution history" with no reason
        if reason == "signal":
            reason = "interrupted" if payload.get("signal-name") in ("SIGINT", "0") else "signal"
        frame = payload.get("frame") or {}
        info: dict[str, Any] = {}
        number = payload.get("bkptno") or (payload.get("wpt") or payload.get("hw-rwpt") or payload.get("hw-awpt")
                                           or {}).get("number")
        faults = self.sessions.faults
        if faults is not None and reason in ("signal", "interrupted"):
            faults.poll(sid)  # the emulator halted itself at a fault: it is in the table by now
            if faults.count(sid) > st.fault_mark:
                reason = "fault"
                info["fault"] = faults.last(sid)
        if faults is not None:
            st.fault_mark = faults.count(sid)
        if number is not None and int(number) in st.fault_bps:
            reason = "fault"
            info["fault"] = self._fault_report(dbg, st.fault_bps[int(number)])
        elif number is not None and int(number) in st.gdb_ids:
            bp_id = st.gdb_ids[int(number)]
            info["breakpoint"] = bp_id
            self.store.count_hit(sid, bp_id)
            if payload.get("disp") == "del":  # a temporary breakpoint: gdb deleted it
                self.store.delete_breakpoint(sid, bp_id)
                st.gdb_ids.pop(int(number), None)
        if reason == "watchpoint":
            value = payload.get("value") or {}
            info["watch"] = {"expression": (payload.get("wpt") or payload.get("hw-rwpt") or payload.get("hw-awpt")
                                            or {}).get("exp"), "old": value.get("old"), "new": value.get("new"),
                             "value": value.get("value")}
        plan = st.step
        if plan is not None and "--reverse" in plan.command and (live := self.sessions.live.get(sid)) is not None:
            live.instance.reverse_end()
        if plan is not None and reason == "step" and plan.remaining > 1:
            plan.remaining -= 1
            try:
                self._step_command(sid, dbg, plan.command)
                return
            except VirsimError:
                pass  # report this stop instead
        st.step = None
        st.seq += 1
        stop = p.StopInfo(
            session=sid, seq=st.seq, reason=reason, pc=_int(frame.get("addr")), function=frame.get("func"),
            file=frame.get("file"), line=_int(frame.get("line")), time=time.time(), **info)
        st.stop = stop
        row = self.store.get_session(sid)
        where = f" at {stop.function}" if stop.function else (f" at {stop.pc:#x}" if stop.pc is not None else "")
        self.sessions.set_state(row, S.PAUSED, f"{reason}{where}")
        self.sessions.publish(p.Event(type="stop", session=sid, time=stop.time, stop=stop), b"")
        self.pending.resolve(sid, p.DebugRunReply(session=sid, state="stopped", stop=stop))

    def _fault_report(self, dbg: Debugger, handler: str) -> dict[str, Any]:
        regs = {}
        for name in ("CFSR", "HFSR", "MMFAR", "BFAR"):
            try:
                regs[name] = int.from_bytes(dbg.read_memory(SYSTEM_REGISTERS[name], 4), "little")
            except VirsimError:
                pass
        stacked_pc = None
        try:
            names = dbg.register_names()
            by_name = {names[i]: v for i, v in dbg.register_values().items() if i < len(names)}
            # The active exception (IPSR) names the fault even when all handlers share one address.
            ipsr = by_name.get("xpsr", 0) & 0x1FF
            handler = FAULT_VECTORS.get(ipsr, f"exception {ipsr} (no handler of its own)" if ipsr else handler)
            exc_return = by_name.get("lr", 0)
            # EXC_RETURN bit 2 clear: the frame is on the main stack, which is the current sp here.
            if exc_return >> 28 == 0xF and not exc_return & 4:
                frame = dbg.read_memory(by_name["sp"], 32)
                stacked_pc = int.from_bytes(frame[24:28], "little")
        except (VirsimError, KeyError):
            pass
        report = describe_fault(handler, regs, stacked_pc)
        if stacked_pc is not None:
            try:
                symbol = dbg.cli(f"info symbol {stacked_pc:#x}").split(" in section")[0].strip()
                line = re.search(r'Line (\d+) of "(.+?)"', dbg.cli(f"info line *{stacked_pc:#x}"))
                if not symbol.startswith("No symbol"):
                    report["fault_location"] = symbol + (f" ({line.group(2)}:{line.group(1)})" if line else "")
            except VirsimError:
                pass
        return report

    # ---------------------------------------------------------------------------------------- state

    def where(self, req: p.DebugPeek) -> p.StopInfo:
        row, dbg = self._session(req.session, node=req.node, halted=True, peek=req.peek)
        st = self.state[row["id"]]
        with dbg.halted() as was_running:
            frames = dbg.backtrace()
        trace = []
        for f in frames:
            f = f.get("frame", f) if isinstance(f, dict) else f
            trace.append({"level": _int(f.get("level")), "pc": _int(f.get("addr")), "function": f.get("func"),
                          "file": f.get("file"), "line": _int(f.get("line"))})
        top = trace[0] if trace else {}
        # A peek at a running target: the last stop is history (the target ran on from it), so its
        # reason and breakpoint would describe a pc it has long left.
        base = None if was_running else st.stop
        reason = "running" if was_running else base.reason if base else "interrupted"
        return p.StopInfo(
            session=row["id"], seq=st.seq, reason=reason, pc=top.get("pc"),
            function=top.get("function"), file=top.get("file"), line=top.get("line"),
            breakpoint=base.breakpoint if base else None, watch=base.watch if base else None,
            fault=base.fault if base else None, backtrace=trace, time=time.time())

    def regs(self, req: p.DebugRegs) -> p.RegisterList:
        row, dbg = self._session(req.session, node=req.node, halted=True, peek=req.peek)
        st = self.state[row["id"]]
        node = self.sessions.board_node(row)
        profile = node.processor.profile
        general = GENERAL_M if profile == "m" else GENERAL_A
        with dbg.halted():
            names = dbg.register_names()
            number = {n: i for i, n in enumerate(names) if n}
            if req.scope == "general":
                wanted = [(n, "general") for n in general]
            elif req.scope == "fp":
                wanted = [(n, "fp") for n in number if _FP_RE.match(n)]
            elif req.scope == "system":
                wanted = [(n, "system") for n in SYSTEM_GDB if n in number]
            else:
                wanted = [(n, "general" if n in general else "fp" if _FP_RE.match(n) else
                           "system" if n in SYSTEM_GDB else "other") for n in number]
            values = dbg.register_values([number[n] for n, _ in wanted if n in number])
            extra: dict[str, int] = {}
            if profile == "m" and req.scope in ("system", "all"):
                for name, address in SYSTEM_REGISTERS.items():
                    extra[name] = int.from_bytes(dbg.read_memory(address, 4), "little")
        current = {names[i]: v for i, v in values.items() if i < len(names)} | extra
        changed = self._changed_since_last_stop(st, current)
        out: list[p.Register] = []
        unavailable: list[str] = []
        note = None
        for name, group in wanted:
            if name in current:
                out.append(p.Register(name=name, value=current[name], changed=name in changed, group=group))
            else:
                unavailable.append(name)
        for name, value in extra.items():
            out.append(p.Register(name=name, value=value, changed=name in changed, group="system-mmio"))
        if req.scope == "fp" and not wanted:
            note = f"{node.processor.type} has no floating-point registers here"
        if profile == "m" and req.scope == "system":
            missing = [n for n in ("msp", "psp", "primask", "basepri", "faultmask", "control") if n not in number]
            if missing:
                unavailable += missing
                note = ("this gdb stub does not expose the core system registers (QEMU exports them from 8.0 "
                        "on); the memory-mapped SCB and SysTick registers are shown instead")
        return p.RegisterList(session=row["id"], scope=req.scope, registers=out, unavailable=unavailable, note=note)

    @staticmethod
    def _changed_since_last_stop(st: SessionDebug, current: dict[str, int]) -> set[str]:
        """Registers whose value differs from what was read at an earlier stop (what to highlight)."""
        if st.regs_seq != st.seq:  # first read at this stop: what we read before is the baseline
            st.regs_base = {**st.regs_base, **st.regs_seen}
            st.regs_seen = {}
            st.regs_seq = st.seq
        st.regs_seen.update(current)
        return {n for n, v in current.items() if n in st.regs_base and st.regs_base[n] != v}

    def reg_set(self, req: p.DebugRegSet) -> p.Register:
        row, dbg = self._session(req.session, node=req.node, halted=True)
        names = dbg.register_names()
        if req.name not in names:
            raise NotFound(f"no register {req.name!r}; registers: {', '.join(n for n in names if n)}",
                           kind="register", id=req.name)
        try:
            dbg.command(f"-data-evaluate-expression {mi_quote(f'${req.name} = {req.value}')}")
        except GdbError as err:
            raise self._gdb_failure(err, f"cannot set {req.name}") from err
        value = dbg.register_values([names.index(req.name)]).get(names.index(req.name), req.value)
        return p.Register(name=req.name, value=value, changed=True)

    def _resolve_address(self, dbg: Debugger, text: str) -> tuple[int, str | None, int | None]:
        """(address, symbol, its size) for `0x…`/decimal or a symbol/expression."""
        try:
            return int(text, 0), None, None
        except ValueError:
            pass
        try:
            value = dbg.evaluate(f"&({text})")
        except GdbError as err:
            raise self._gdb_failure(err, f"cannot resolve {text!r}") from err
        m = _ADDR_IN_VALUE.search(value)
        if not m:
            raise InvalidInput(f"{text!r} has no address (gdb says {value})")
        size = None
        try:
            size = int(dbg.evaluate(f"sizeof({text})"))
        except (GdbError, ValueError):
            pass
        return int(m.group(0), 16), text, size

    def mem(self, req: p.DebugMem) -> p.MemoryChunk:
        row, dbg = self._session(req.session, node=req.node, halted=True, peek=req.peek)
        with dbg.halted():
            address, symbol, sym_size = self._resolve_address(dbg, req.address)
            size = req.size or sym_size or 64
            self._check_address(row, address, size, "memory range")
            data = dbg.read_memory(address, size)
        return p.MemoryChunk(session=row["id"], address=address, size=size, data=data.hex(), symbol=symbol)

    def mem_write(self, req: p.DebugMemWrite) -> p.MemoryChunk:
        row, dbg = self._session(req.session, node=req.node, halted=True)
        try:
            data = bytes.fromhex(req.data)
        except ValueError as err:
            raise InvalidInput(f"data must be hex bytes, got {req.data[:40]!r}", field="data") from err
        if not data:
            raise InvalidInput("nothing to write", field="data")
        address, symbol, _ = self._resolve_address(dbg, req.address)
        self._check_address(row, address, len(data), "memory range")
        dbg.write_memory(address, data)
        return p.MemoryChunk(session=row["id"], address=address, size=len(data),
                             data=dbg.read_memory(address, len(data)).hex(), symbol=symbol)

    def eval(self, req: p.DebugEval) -> p.EvalReply:
        row, dbg = self._session(req.session, node=req.node, halted=True, peek=req.peek)
        with dbg.halted():
            try:
                value = dbg.evaluate(req.expression)
            except GdbError as err:
                raise self._gdb_failure(err, f"cannot evaluate {req.expression!r}") from err
        return p.EvalReply(session=row["id"], expression=req.expression, value=value)

    def disasm(self, req: p.DebugDisasm) -> p.Disassembly:
        row, dbg = self._session(req.session, node=req.node, halted=True, peek=req.peek)
        with dbg.halted():
            if req.at is None:
                start = int(_ADDR_IN_VALUE.search(dbg.evaluate("$pc")).group(0), 16)  # type: ignore[union-attr]
            else:
                start = self._resolve_address(dbg, req.at.lstrip("*"))[0]
            self._check_address(row, start, 2, "disassembly address")
            rec = dbg.command(f"-data-disassemble -s {start:#x} -e {start + req.count * 4:#x} -- 0")
        out = []
        for ins in rec["payload"]["asm_insns"][:req.count]:
            out.append(p.Instruction(address=int(ins["address"], 16), function=ins.get("func-name"),
                                     offset=_int(ins.get("offset")), text=ins.get("inst", "")))
        return p.Disassembly(session=row["id"], instructions=out)

    def gdb(self, req: p.DebugGdb) -> p.GdbEndpoint:
        row = self.sessions.row(req.session)
        state = self.sessions.state_of(row)
        if state not in LIVE:
            raise InvalidState(f"session {row['id']} is {state.value}: its emulator is not running",
                               session=row["id"], current=state.value, required=sorted(s.value for s in LIVE))
        self.sessions.need(row, Capability.DEBUG)
        st = self.state.setdefault(row["id"], SessionDebug())
        self._open_proxy(row, st)
        if st.proxy is None:
            raise NotSupported(f"session {row['id']} has no gdb endpoint", capability="debug")
        tcp = self._listen_tcp(row, st.proxy, req.port) if req.tcp or req.port else st.proxy.tcp_address()
        address = tcp or str(st.proxy.path)
        parts = [GDB, "-q", *self._gdb_program_args(row), "-ex", f"target remote {address}"]
        by_name = self._by_name_path(row)
        return p.GdbEndpoint(session=row["id"], address=address, command=shlex.join(parts), tcp=tcp,
                             by_name=str(by_name) if by_name is not None and by_name.exists() else None,
                             held_by="external" if st.proxy.held else None)

    @staticmethod
    def _listen_tcp(row: dict[str, Any], proxy: GdbProxy, port: int | None) -> str:
        sid = row["id"]
        current = proxy.tcp_address()
        if current is not None and port is not None and not current.endswith(f":{port}"):
            raise InvalidState(f"session {sid} already listens for gdb on {current} (until its emulator stops): "
                               "connect there", session=sid, listening=current, port=port)
        try:
            return proxy.listen_tcp(port or 0)
        except OSError as err:
            why = ("another program or session listens there" if err.errno == errno.EADDRINUSE else
                   "ports below 1024 need root" if err.errno == errno.EACCES else err.strerror or str(err))
            raise InvalidInput(f"cannot listen for gdb on 127.0.0.1:{port}: {why}; choose another --port",
                               field="port", value=port) from err

    def _gdb_program_args(self, row: dict[str, Any]) -> list[str]:
        """The ELF, and where gdb finds its sources: the store's rule (analysis/symbols.py) that a
        relative DWARF path is relative to the directory the program was uploaded from. gdb would
        resolve a relative compilation dir against its own working directory instead, so each one
        is mapped there (`set substitute-path`, not `directory`: that one splits paths at ':')."""
        prog = self._program(row)
        if prog is None or prog["format"] != "elf":
            return []
        elf = Path(prog["path"])
        args = [str(elf)]
        src = source_dir(prog.get("source"))
        for comp_dir in relative_comp_dirs(elf) if src is not None else []:
            args += ["-ex", f"set substitute-path {_gdb_word(comp_dir)} {_gdb_word(str(src / comp_dir))}"]
        return args


def _gdb_word(text: str) -> str:
    """One argument of a gdb command that gdb splits like a shell (buildargv: quotes, backslashes)."""
    if text and not any(c.isspace() or c in "'\"\\" for c in text):
        return text
    return mi_quote(text)  # the same escapes: backslash and double quote inside double quotes


def _int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value), 0)
    except ValueError:
        return None
