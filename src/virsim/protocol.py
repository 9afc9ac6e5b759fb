"""The wire protocol between virsim clients and the daemon: the one place messages are defined.

Transport (see docs/architecture.md): the daemon binds a ZeroMQ ROUTER on `ipc://<runtime>/control.sock`
and a PUB on `ipc://<runtime>/events.sock`. Every frame on the control socket is one JSON envelope:

    request  {"v": "1.0", "id": "<request id>", "type": "session.create", "payload": {...}}
    reply    {"v": "1.0", "id": "<same id>", "type": "result", "payload": {...}}
          or {"v": "1.0", "id": "<same id>", "type": "error",
              "payload": {"error": "message", "code": "ERROR_CODE", "details": {...}}}

A connection opens with a `hello` request; the daemon refuses a different major version with
PROTOCOL_VERSION_MISMATCH (and checks `v` on every later frame too). Frames are capped at
MAX_FRAME bytes. Events on the PUB socket are multipart: [topic, header JSON, raw bytes], with
topic `session.<id>` so a client subscribes to one session or (prefix `session.`) to all.

Compatibility rule: never rename or retype a field; add optional ones and bump the minor version.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from virsim import limits
from virsim.errors import InvalidInput, ProtocolError, VersionMismatch, clip

PROTOCOL_VERSION = "1.13"  # 1.1: debug.* requests, stop events, SessionInfo.debugger/stop; 1.2: session.clock;
# 1.3: snapshot.* requests, SessionCreate.from_snapshot; 1.4: Clock/SessionInfo.instructions, SessionInfo.virtual_ns;
# 1.5: coverage.*, trace.*, job.show, SessionCreate.coverage; 1.6: debug.* `node` (multi-node boards);
# 1.7: Hello/HelloReply/DaemonInfo version and install (a daemon of another install is restarted), `fault` events
# and SessionInfo.fault, SessionInfo.clock; coverage.stop, CoverageRow.inlined; 1.8: DebugGdb.port,
# GdbEndpoint.by_name; breakpoint ids are numbered per session; session.stop_at; 1.9: the envelope's
# `deadline` (until when the client waits); hello first; bounded fields (PathStr, Ref, Hello); 1.10:
# SessionCreate.backend on multi-node boards (one backend for every node, or NODE=BACKEND pairs); 1.11:
# SessionInfo.unmodelled_accesses; 1.12: session.exceptions, DebugWatch.ignore_count; 1.13: `clock` events (every
# second per live session: virtual time, instructions, speed), debug.enable and BreakpointInfo.enabled/file/line,
# program.source, SessionInfo.peripherals
MAX_FRAME = 1024 * 1024


def _path(value: str) -> str:
    problem = limits.path_problem(value)
    if problem:
        raise ValueError(problem)
    return value


# A file on the daemon's machine named in a request: refused here, naming the field, when it
# cannot be a path (NUL, not encodable, too long), before any handler opens it.
PathStr = Annotated[str, AfterValidator(_path)]
# A session, snapshot, program or breakpoint reference, or a name: short, matched literally.
Ref = Annotated[str, Field(max_length=256)]


def major(version: str) -> str:
    return version.split(".", 1)[0]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------- requests


class Hello(Message):
    protocol: str = Field(PROTOCOL_VERSION, max_length=32)
    client: str = Field("virsim", max_length=64)
    pid: int = Field(0, ge=0, le=2**31 - 1)
    user: str = Field("", max_length=64, description="informational: on the ipc socket the daemon takes the user "
                      "from the kernel (SO_PEERCRED)")
    version: str | None = Field(None, max_length=64, description="the client's virsim package version")
    install: str | None = Field(None, max_length=4096, description="where the client's virsim package is installed")


class Empty(Message):
    pass


class SessionCreate(Message):
    board: PathStr = Field("", description="board template name or absolute path of a board file "
                           "(not needed with from_snapshot)")
    firmware: PathStr | None = Field(None, description="absolute path of the firmware image")
    firmware_format: Literal["auto", "elf", "bin", "hex"] = "auto"
    load_address: int | None = Field(None, description="load address for raw binaries")
    backend: str | None = Field(None, description="override the board node's backend; multi-node boards: one "
                                "backend for every node, or NODE=BACKEND pairs separated by commas")
    from_snapshot: PathStr | None = Field(None, description="absolute path of an exported .vsnap: board, backend, "
                                      "program and state all come from it")
    record: bool = Field(False, description="record the execution (deterministic) to <session dir>/recording.vrec")
    coverage: bool = Field(False, description="collect block coverage from the first instruction")
    node_firmware: dict[Ref, PathStr] = Field({}, description="multi-node boards: node id -> absolute path of its "
                                          "firmware (--firmware NODE=IMAGE)")
    sync: Literal["timeslice", "step", "event"] = Field("timeslice", description="multi-node boards: how nodes keep "
                                                       "in step")
    quantum: str = Field("100us", description="multi-node: timeslice quantum (time like 100us, or cycles); step: "
                         "instructions")
    name: Ref | None = None
    paused: bool = False
    deterministic: bool = False
    allow_unsafe_qemu_args: bool = Field(False, description="run qemu.extra_args that open the host (network, "
                                         "semihosting, monitors, TCP character devices)")
    semihosting: bool = Field(False, description="serve ARM semihosting for this session (the board node's "
                              "`semihosting: true`): the firmware reaches files in the session folder")


class SessionList(Message):
    all: bool = Field(False, description="include deleted sessions")


class SessionRef(Message):
    session: Ref = Field(description="session id, unique id prefix or name")


class SessionStopAt(SessionRef):
    virtual_ns: int | None = Field(None, ge=0, description="stop the CPU when the virtual clock reaches this (ns "
                                   "since power-on); null or 0 (and no after_ns) cancels")
    after_ns: int | None = Field(None, ge=0, description="instead: stop it this long after now, 'now' read exactly "
                                 "(the CPU held meanwhile)")


class SessionExceptions(SessionRef):
    last: int = Field(16, ge=1, le=256, description="how many of the last exceptions taken")


class ExceptionTaken(Message):
    exception: int = Field(description="the exception number (IPSR): 2 NMI .. 15 SysTick, 16+n IRQ n")
    name: str = Field(description="e.g. SysTick, PendSV, HardFault, IRQ 0 (uart0)")
    virtual_ns: int = Field(description="when it was taken (virtual time)")
    instructions: int = Field(description="instructions executed before it")
    clock_exact: bool = Field(True, description="false: the clock fields are a lower bound (QEMU: its instruction "
                              "count at the start of the vCPU's icount budget, exact for a timer's interrupt)")
    handler: int = Field(description="the handler's address")
    handler_function: str | None = None
    return_pc: int | None = Field(None, description="where the interrupted code goes on (the stacked pc), if read")
    return_location: str | None = Field(None, description="the function (file:line) of return_pc")
    exc_return: int = Field(description="LR at entry: the EXC_RETURN value")
    sp: int = Field(description="the main stack pointer in the handler")


class ExceptionList(Message):
    session: str
    total: int = Field(description="exceptions taken since the emulator started (counted by it)")
    exceptions: list[ExceptionTaken] = Field(description="the last ones, oldest first")


class SessionReplay(Message):
    recording: PathStr = Field(description="absolute path of a recording.vrec")
    until: str | None = Field(None, description="stop there: an instruction count (e.g. 5000000) or a virtual "
                              "time (e.g. 250ms)")
    name: Ref | None = None
    paused: bool = False


class SnapshotCreate(SessionRef):
    name: Ref | None = Field(None, description="a name unique in the session (default snap-N)")


class SnapshotRef(SessionRef):
    snapshot: Ref = Field(description="snapshot name or id")


class SnapshotExport(SnapshotRef):
    out: PathStr = Field(description="absolute path of the .vsnap file to write")


class SessionDelete(SessionRef):
    purge: bool = Field(False, description="also delete the session's artifacts")


class ConsoleRead(SessionRef):
    offset: int = Field(0, ge=0, description="byte offset in the console log to read from")
    limit: int = Field(256 * 1024, ge=0, le=512 * 1024, description="at most this many bytes")
    tail: int | None = Field(None, ge=0, description="read only the last N bytes (overrides offset)")


class ConsoleSend(SessionRef):
    data: str = Field(description="bytes to send, latin-1 encoded into a string")


class ProgramUpload(SessionRef):
    path: PathStr = Field(description="absolute path of the image on the daemon's machine")
    format: Literal["auto", "elf", "bin", "hex"] = "auto"
    load_address: int | None = None


class ProgramStart(SessionRef):
    program: str = Field(description="program id returned by program.upload")


class DebugRef(SessionRef):
    node: str | None = Field(None, description="multi-node boards: the node to debug (default: the node debugged "
                             "last, at first the board's first node)")


class DebugBreak(DebugRef):
    location: str = Field(description="symbol, file:line, or *0xADDRESS")
    condition: str | None = Field(None, description="stop only when this expression is true")
    temporary: bool = False
    ignore_count: int = Field(0, ge=0, description="pass the breakpoint this many times before stopping")


class DebugWatch(DebugRef):
    target: str = Field(description="a symbol (expression) or an address, e.g. counter or 0x20000054")
    size: int | None = Field(None, description="bytes watched at an address: 1, 2, 4 or 8")
    access: Literal["write", "read", "access"] = "write"
    ignore_count: int = Field(0, ge=0, description="let the first N hits pass; stop at the next")


class DebugDelete(DebugRef):
    breakpoint: int | None = Field(None, description="the breakpoint's number in the session (see debug list)")
    all: bool = False


class DebugEnable(DebugRef):
    breakpoint: int = Field(description="the breakpoint's number in the session (see debug list)")
    enabled: bool = Field(True, description="false: keep it, but do not stop there")


class SourceRef(SessionRef):
    file: str | None = Field(None, max_length=4096, description="a source file of the session's program, as its "
                             "debug info names it or just its base name; default: where the debugger stopped, else "
                             "the file of the entry function")


class DebugContinue(DebugRef):
    wait: bool = Field(False, description="reply only when the target stops (or at timeout)")
    timeout: float = Field(10.0, gt=0, le=3600)


class DebugStep(DebugRef):
    kind: Literal["step", "next", "finish", "stepi", "nexti",
                  "reverse-step", "reverse-next", "reverse-stepi", "reverse-finish", "reverse-continue"] = "step"
    count: int = Field(1, ge=1, le=100_000)
    timeout: float = Field(10.0, gt=0, le=3600)


class DebugPeek(DebugRef):
    peek: bool = Field(False, description="on a running session: halt, read, resume")


class DebugRegs(DebugPeek):
    scope: Literal["general", "all", "fp", "system"] = "general"


class DebugRegSet(DebugRef):
    name: str = Field(description="register name, e.g. r0, pc")
    value: int


class DebugMem(DebugPeek):
    address: str = Field(description="an address (0x…) or a symbol")
    size: int | None = Field(None, ge=1, le=256 * 1024, description="bytes; default: the symbol's size or 64")


class DebugMemWrite(DebugRef):
    address: str = Field(description="an address (0x…) or a symbol")
    data: str = Field(description="bytes as hex")


class DebugEval(DebugPeek):
    expression: str


class DebugDisasm(DebugPeek):
    at: str | None = Field(None, description="address or symbol; default: the pc")
    count: int = Field(16, ge=1, le=4096)


class DebugGdb(SessionRef):
    tcp: bool = Field(False, description="also listen on 127.0.0.1 (for IDEs that only speak TCP)")
    port: int | None = Field(None, ge=1, le=65535, description="listen on this 127.0.0.1 port (implies tcp; "
                             "default: a free one)")


# ----------------------------------------------------------------------------------------------- results


class HelloReply(Message):
    protocol: str
    daemon_version: str
    pid: int
    install: str | None = Field(None, description="where the daemon's virsim package is installed (it imports "
                                "from there for as long as it runs)")
    sessions_active: int | None = Field(None, description="sessions with a live emulator")


class DaemonInfo(Message):
    pid: int
    version: str
    protocol: str
    started_at: float
    uptime_s: float
    control_socket: str
    events_socket: str
    data_dir: str
    sessions_active: int
    sessions_total: int
    install: str | None = Field(None, description="where the daemon's virsim package is installed")


class ProgramInfo(Message):
    id: str
    session: str
    format: str
    size: int
    sha256: str
    entry: int | None
    load_address: int | None
    machine: str | None = Field(None, description="ELF machine, e.g. ARM")
    source: str
    created_at: float


class SessionInfo(Message):
    id: str
    name: str
    board: str
    backend: str
    state: str
    created_at: float
    started_at: float | None
    uptime_s: float | None
    deterministic: bool
    recording: str | None = Field(None, description="the recording this session writes (created with --record)")
    replaying: str | None = Field(None, description="the recording this session replays")
    program: str | None = Field(None, description="id of the program the emulator runs")
    pid: int | None = None
    console_log: str
    console_bytes: int
    error: str | None = None
    stderr_tail: str | None = None
    capabilities: list[str] = []
    endpoints: dict[str, str] = Field({}, description="backend endpoints, e.g. gdb, qmp socket paths")
    debugger: str | None = Field(None, description="virsim or external while a debugger is attached")
    stop: StopInfo | None = Field(None, description="why the debugger last stopped the target")
    virtual_ns: int | None = Field(None, description="session show: virtual time now (deterministic sessions)")
    nodes: list[dict[str, Any]] = Field([], description="session show, multi-node boards: node, backend, state, pid, "
                                        "virtual_ns, instructions")
    sync: dict[str, Any] | None = Field(None, description="session show, multi-node boards: mode, quantum_cycles, "
                                        "quanta")
    instructions: int | None = Field(None, description="session show: instructions executed, where counted exactly")
    fault: dict[str, Any] | None = Field(None, description="the last fault the firmware took since power-on: handler, "
                                         "summary, CFSR/HFSR bits, fault_pc, fault_location, virtual_ns")
    faults: int = Field(0, description="faults taken since power-on")
    clock: dict[str, Any] | None = Field(None, description="session show: what virtual time means here: board_hz, "
                                         "instruction_ns, how it differs from the board's clock")
    instructions_per_s: float | None = Field(None, description="session show: the emulator's speed lately")
    peripherals: list[dict[str, Any]] = Field([], description="session show: the board's peripherals (node, id, type, "
                                              "address, size, irq, console) and, on Cortex-M nodes, the NVIC")
    unmodelled_accesses: list[dict[str, Any]] = Field([], description="session show, built-in engine: the first access "
                                                      "to each unmodelled address (address, range, access), "
                                                      "reading zero and ignored, as QEMU's unimplemented devices")


class BreakpointInfo(Message):
    id: int = Field(description="numbered per session (1, 2, ...), never given out twice in a session")
    session: str
    kind: Literal["breakpoint", "watchpoint"]
    location: str
    condition: str | None = None
    temporary: bool = False
    ignore_count: int = 0
    access: str | None = None
    size: int | None = None
    address: int | None = None
    hits: int = 0
    resolved: str | None = Field(None, description="where gdb placed it, e.g. on_tick at hello.c:24")
    enabled: bool = True
    file: str | None = Field(None, description="breakpoints: the source file it resolved to, as the debug info names it")
    line: int | None = Field(None, description="breakpoints: the source line it resolved to")


class BreakpointList(Message):
    session: str
    breakpoints: list[BreakpointInfo]


class DeletedBreakpoints(Message):
    session: str
    deleted: list[int]


class StopInfo(Message):
    session: str
    seq: int = Field(description="how many times this session has stopped under the debugger")
    reason: str = Field(description="breakpoint, watchpoint, step, finish, interrupted, fault, signal, exited, "
                        "history-start; `running` from `where --peek` on a running target")
    pc: int | None = None
    function: str | None = None
    file: str | None = None
    line: int | None = None
    breakpoint: int | None = None
    watch: dict[str, Any] | None = Field(None, description="watchpoint: expression, old and new value")
    fault: dict[str, Any] | None = Field(None, description="fault: handler, CFSR/HFSR bits, fault_pc")
    backtrace: list[dict[str, Any]] = []
    time: float


class DebugRunReply(Message):
    session: str
    state: str = Field(description="running or stopped")
    stop: StopInfo | None = None
    timed_out: bool = False


class Register(Message):
    name: str
    value: int
    changed: bool = False
    group: str = "general"


class RegisterList(Message):
    session: str
    scope: str
    registers: list[Register]
    unavailable: list[str] = Field([], description="registers of the scope this backend cannot read")
    note: str | None = None


class MemoryChunk(Message):
    session: str
    address: int
    size: int
    data: str = Field(description="hex")
    symbol: str | None = None


class EvalReply(Message):
    session: str
    expression: str
    value: str


class Instruction(Message):
    address: int
    function: str | None = None
    offset: int | None = None
    text: str


class Disassembly(Message):
    session: str
    instructions: list[Instruction]


class GdbEndpoint(Message):
    session: str
    address: str = Field(description="unix socket path (or host:port with --tcp) for 'target remote'")
    command: str = Field(description="the exact gdb command line that attaches")
    tcp: str | None = None
    by_name: str | None = Field(None, description="the session's per-name unix socket, <runtime>/by-name/<name>."
                                "gdb.sock: the same path for every session of that name")
    held_by: str | None = Field(None, description="'external' while an external debugger is attached")


class SnapshotInfo(Message):
    session: str
    id: str
    name: str
    backend: str
    board: str
    virtual_ns: int | None = Field(None, description="virtual time when it was taken")
    instructions: int | None = Field(None, description="instructions executed when it was taken, where counted")
    size: int = Field(description="bytes on disk")
    created_at: float
    path: str = Field(description="the snapshot file (for export: the written file)")


class SnapshotListReply(Message):
    session: str
    snapshots: list[SnapshotInfo]


# ---------------------------------------------------------------------------- coverage and trace

class CoverageRow(Message):
    file: str
    function: str
    line: int
    calls: int = Field(description="times the function was entered: the count at each copy's entry, its inlined "
                       "copies included")
    lines_hit: int
    lines_total: int
    inlined: int = Field(0, description="copies of the function inlined into callers (their lines are the "
                         "function's, not the callers')")


class CoverageReport(Message):
    session: str
    active: bool
    program: str
    rows: list[CoverageRow]
    lines_found: int
    lines_hit: int
    functions_found: int
    functions_hit: int
    blocks: int = Field(description="distinct executed blocks")


class CoverageExport(Message):
    session: str
    format: Literal["lcov", "json", "drcov"] = "lcov"
    out: PathStr = Field(description="absolute path of the file to write")


class TraceStart(Message):
    session: str
    level: Literal["block", "instruction", "function"] = "block"
    ranges: list[str] = Field([], description="record only inside these: 'FUNCTION', 'A..B' (symbols or "
                              "addresses, B excluded)")
    limit: int = Field(1_000_000, ge=1, le=100_000_000, description="stop recording after this many events")


class TraceInfo(Message):
    session: str
    level: str
    active: bool
    events: int
    truncated: bool
    limit: int
    ranges: list[list[int]] = []
    note: str | None = Field(None, description="e.g. 'truncated at N events'")


class TraceExport(Message):
    session: str
    format: Literal["text", "json", "chrome"] = "chrome"
    out: PathStr = Field(description="absolute path of the file to write")


class JobRef(Message):
    job: str


class JobInfo(Message):
    id: str
    kind: str
    session: str
    state: Literal["running", "done", "failed"]
    done: int = 0
    total: int = 0
    started_at: float
    finished_at: float | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = Field(None, description="a failed job's error: {error, code, details}")


class Clock(Message):
    session: str
    stop_at_ns: int | None = Field(None, description="session.stop_at: the deadline now set, if any")
    virtual_ns: int | None = Field(None, description="virtual time in ns (deterministic sessions), else null")
    instructions: int | None = Field(None, description="instructions executed since power-on, where counted exactly")
    state: str


class SessionListReply(Message):
    sessions: list[SessionInfo]


class ConsoleChunk(Message):
    session: str
    offset: int
    end: int = Field(description="offset just after the returned bytes")
    size: int = Field(description="total size of the console log now")
    data: str = Field(description="the bytes, latin-1 decoded into a string")


class SourceFile(Message):
    session: str
    file: str = Field(description="the file as the program's debug info names it")
    path: str | None = Field(None, description="where the daemon found it (null: not found, `lines` is empty)")
    lines: list[str] = Field([], description="the file's text, a line per entry (line 1 first)")
    code_lines: list[int] = Field([], description="lines that have code (where a breakpoint can go)")
    files: list[str] = Field([], description="every source file of the program with code, as its debug info names them")


class SendReply(Message):
    session: str
    sent: int


class DeleteReply(Message):
    session: str
    purged: bool
    console_log: str | None


class Event(Message):
    """Header of an event on the PUB socket; console bytes follow as a separate raw frame."""

    v: str = PROTOCOL_VERSION
    type: Literal["console", "state", "stop", "fault", "clock"]
    session: str
    time: float
    offset: int | None = Field(None, description="console: offset of the first byte in the log")
    state: str | None = None
    previous: str | None = None
    reason: str | None = None
    stop: StopInfo | None = None
    fault: dict[str, Any] | None = Field(None, description="fault: the decoded fault (as SessionInfo.fault)")
    virtual_ns: int | None = Field(None, description="clock: virtual time now (null where the backend has none)")
    instructions: int | None = Field(None, description="clock: instructions executed, where counted exactly")
    instructions_per_s: float | None = Field(None, description="clock: the emulator's speed since the last clock event")
    uptime_s: float | None = Field(None, description="clock: host seconds since the emulator started")


# type -> (request payload model, result model). The daemon dispatches on this table and
# `virsim daemon schema` prints it, so it is the whole API in one place.
REQUESTS: dict[str, tuple[type[Message], type[Message]]] = {
    "hello": (Hello, HelloReply),
    "daemon.status": (Empty, DaemonInfo),
    "daemon.stop": (Empty, DaemonInfo),
    "session.create": (SessionCreate, SessionInfo),
    "session.list": (SessionList, SessionListReply),
    "session.show": (SessionRef, SessionInfo),
    "session.pause": (SessionRef, SessionInfo),
    "session.resume": (SessionRef, SessionInfo),
    "session.reset": (SessionRef, SessionInfo),
    "session.power_off": (SessionRef, SessionInfo),
    "session.power_on": (SessionRef, SessionInfo),
    "session.delete": (SessionDelete, DeleteReply),
    "session.clock": (SessionRef, Clock),
    "session.stop_at": (SessionStopAt, Clock),
    "session.replay": (SessionReplay, SessionInfo),
    "session.exceptions": (SessionExceptions, ExceptionList),
    "console.read": (ConsoleRead, ConsoleChunk),
    "console.send": (ConsoleSend, SendReply),
    "snapshot.create": (SnapshotCreate, SnapshotInfo),
    "snapshot.list": (SessionRef, SnapshotListReply),
    "snapshot.restore": (SnapshotRef, SnapshotInfo),
    "snapshot.delete": (SnapshotRef, SnapshotInfo),
    "snapshot.export": (SnapshotExport, SnapshotInfo),
    "program.upload": (ProgramUpload, ProgramInfo),
    "program.start": (ProgramStart, SessionInfo),
    "program.source": (SourceRef, SourceFile),
    "debug.break": (DebugBreak, BreakpointInfo),
    "debug.watch": (DebugWatch, BreakpointInfo),
    "debug.list": (SessionRef, BreakpointList),
    "debug.delete": (DebugDelete, DeletedBreakpoints),
    "debug.enable": (DebugEnable, BreakpointInfo),
    "debug.continue": (DebugContinue, DebugRunReply),
    "debug.step": (DebugStep, DebugRunReply),
    "debug.where": (DebugPeek, StopInfo),
    "debug.regs": (DebugRegs, RegisterList),
    "debug.reg_set": (DebugRegSet, Register),
    "debug.mem": (DebugMem, MemoryChunk),
    "debug.mem_write": (DebugMemWrite, MemoryChunk),
    "debug.eval": (DebugEval, EvalReply),
    "debug.disasm": (DebugDisasm, Disassembly),
    "debug.gdb": (DebugGdb, GdbEndpoint),
    "coverage.start": (SessionRef, CoverageReport),
    "coverage.stop": (SessionRef, CoverageReport),
    "coverage.reset": (SessionRef, CoverageReport),
    "coverage.report": (SessionRef, CoverageReport),
    "coverage.export": (CoverageExport, JobInfo),
    "trace.start": (TraceStart, TraceInfo),
    "trace.stop": (SessionRef, TraceInfo),
    "trace.show": (SessionRef, TraceInfo),
    "trace.export": (TraceExport, JobInfo),
    "job.show": (JobRef, JobInfo),
}

# Requests that change state: the daemon records each in the store's event log.
MUTATING = frozenset(t for t in REQUESTS if t.split(".", 1)[-1] not in
                     {"status", "list", "show", "read", "where", "regs", "mem", "eval", "disasm", "gdb", "clock",
                      "report", "source"}
                     and t != "hello")


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def encode(type_: str, payload: dict[str, Any] | Message, request_id: str | None = None,
           deadline: float | None = None) -> bytes:
    """One request frame; `deadline`: until when (time.time()) the client waits for the reply."""
    if isinstance(payload, Message):
        payload = payload.model_dump(mode="json")
    envelope = {"v": PROTOCOL_VERSION, "id": request_id or new_id(), "type": type_, "payload": payload}
    if deadline is not None:
        envelope["deadline"] = round(deadline, 3)
    frame = json.dumps(envelope, separators=(",", ":")).encode()
    if len(frame) > MAX_FRAME:
        raise ProtocolError(f"message of {len(frame)} bytes exceeds the {MAX_FRAME}-byte frame limit",
                            size=len(frame), limit=MAX_FRAME)
    return frame


def decode_envelope(frame: bytes) -> dict[str, Any]:
    """Parse one frame into an envelope dict, telling version skew apart from garbage."""
    if len(frame) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds the {MAX_FRAME}-byte limit",
                            size=len(frame), limit=MAX_FRAME)
    try:
        env = json.loads(frame, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProtocolError(f"frame is not a JSON envelope: {err}") from err
    except RecursionError:
        raise InvalidInput(f"payload: nested more than {limits.MAX_DEPTH} levels deep", field="payload") from None
    if not isinstance(env, dict) or not isinstance(env.get("type"), str) or not isinstance(env.get("v"), str):
        raise ProtocolError("frame is not an envelope: expected an object with 'v', 'id', 'type' and 'payload'")
    if major(env["v"]) != major(PROTOCOL_VERSION):
        raise VersionMismatch(
            f"protocol version {env['v']} is not compatible with {PROTOCOL_VERSION}: "
            "upgrade virsim so the CLI and daemon match, then run 'virsim daemon stop'",
            theirs=env["v"], ours=PROTOCOL_VERSION)
    if not isinstance(env.get("payload", {}), dict):
        raise ProtocolError("envelope payload must be an object")
    env.setdefault("id", "")
    env.setdefault("payload", {})
    if not isinstance(env["id"], str) or len(env["id"]) > 64:
        raise ProtocolError("envelope id must be a string of at most 64 characters")
    deadline = env.get("deadline")
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, (int, float))
                                 or not 0 < deadline < 1e11):
        raise ProtocolError(f"envelope deadline must be a time in seconds since the epoch (got {clip(deadline)!r})")
    limits.check_payload(env["payload"])
    return env


def _no_constant(name: str) -> Any:
    raise InvalidInput(f"payload: {name} is not a number a request can hold", field="payload")


def parse_request(env: dict[str, Any]) -> Message:
    """Validate a request envelope's payload against its model."""
    return make_request(env["type"], env["payload"])


def make_request(type_: str, payload: dict[str, Any]) -> Message:
    """The request model of `type_` built from `payload`; InvalidInput naming the bad field if it
    does not validate (the client builds requests with this too, so bad options fail alike)."""
    entry = REQUESTS.get(type_)
    if entry is None:
        raise ProtocolError(f"unknown request type {type_!r}", type=type_, known=sorted(REQUESTS))
    try:
        return entry[0].model_validate(payload)
    except ValidationError as err:
        problems = [{"path": ".".join(str(p) for p in e["loc"]), "message": e["msg"].removeprefix("Value error, "),
                     "value": clip(e.get("input"), 120)} for e in err.errors()]
        first = problems[0]
        shown = f" (got {first['value']!r})" if not isinstance(first["value"], (dict, list)) else ""
        raise InvalidInput(f"invalid {type_} request: {first['path']}: {first['message']}{shown}",
                           problems=problems) from err


def reply_frame(request_id: str, result: Message | None = None, error: dict[str, Any] | None = None) -> bytes:
    """One reply frame, never larger than MAX_FRAME: a result that would be is answered with an
    error saying so (the client could not take the frame)."""
    if error is not None:
        body: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": request_id, "type": "error", "payload": error}
    else:
        assert result is not None
        body = {"v": PROTOCOL_VERSION, "id": request_id, "type": "result", "payload": result.model_dump(mode="json")}
    frame = json.dumps(body, separators=(",", ":")).encode()
    if len(frame) > MAX_FRAME:
        kind = "error" if error is not None else type(result).__name__
        too_big = InvalidInput(f"the reply ({kind}) would be {len(frame)} bytes, more than the {MAX_FRAME}-byte frame "
                               "limit: ask for less (a smaller count, range or limit)", size=len(frame), limit=MAX_FRAME)
        frame = json.dumps({"v": PROTOCOL_VERSION, "id": request_id, "type": "error", "payload": too_big.to_wire()},
                           separators=(",", ":")).encode()
    return frame


def schema() -> dict[str, Any]:
    """A JSON Schema of every request and result, for `virsim daemon schema`."""
    return {
        "protocol": PROTOCOL_VERSION,
        "max_frame": MAX_FRAME,
        "requests": {t: {"payload": req.model_json_schema(), "result": res.model_json_schema()}
                     for t, (req, res) in REQUESTS.items()},
        "event": Event.model_json_schema(),
    }
