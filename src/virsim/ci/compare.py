"""`virsim run --compare A,B`: one firmware on two backends, and where their consoles part.

Each backend runs the firmware as `virsim run` would (a Runner each, the same options, nothing
streamed). If the consoles differ, the first diverging byte is found (or the end of the shorter
console, when one is a prefix of the other) and each backend runs the firmware again, to that
byte: a deterministic session created halted, an access watchpoint on the console UART's transmit
register that lets the first N accesses pass, so the CPU stops at the instruction that sends byte N
(gdb reports it on the instruction after it); a backend that never sends it stops where its run
ended (the run's virtual time). There the registers, the location and the last exceptions taken
are read, side by side: what a firmware engineer looks at first when two emulators disagree.

The watchpoint counts reads of the register too: firmware that reads the UART's data register
(receiving) while it prints is stopped at the wrong byte; a compare run sends no input.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from virsim.board import BACKENDS, resolve_board
from virsim.ci.result import RunResult, Status
from virsim.ci.runner import DEFAULT_TIMEOUT, Runner, RunOptions, wall_guard
from virsim.client import Client
from virsim.errors import InvalidInput, NotSupported, VirsimError
from virsim.private import PrivateDaemon

LAST_EXCEPTIONS = 8
# The registers shown side by side (those a backend lacks are left out).
REGISTER_ORDER = [f"r{i}" for i in range(13)] + ["sp", "lr", "pc", "xpsr", "msp", "psp", "primask", "basepri",
                                                  "faultmask", "control"]


@dataclass
class StateAt:
    """One backend where it sent the diverging byte (or where its run ended)."""
    backend: str
    reason: str  # "sent" (the watchpoint stopped it) or "ended" (its run's end: it never sent the byte)
    virtual_ns: int | None = None
    instructions: int | None = None
    pc: int | None = None
    location: str | None = None
    registers: dict[str, int] = field(default_factory=dict)
    exceptions: list[dict[str, Any]] = field(default_factory=list)
    exceptions_total: int | None = None
    note: str | None = None  # what could not be read, and why


@dataclass
class Comparison:
    backends: list[str]
    results: list[RunResult]
    offset: int | None = None  # the first diverging console byte; None: the consoles are identical
    line: int | None = None  # 1-based line and column of that byte (in the longer console)
    column: int | None = None
    states: list[StateAt] = field(default_factory=list)
    error: str | None = None  # the diagnosis could not be made (the consoles still differ)

    @property
    def identical(self) -> bool:
        return self.offset is None

    @property
    def exit_code(self) -> int:
        """1 when the backends disagree (console or verdict), else the verdict both reached."""
        if any(r.status in (Status.ERROR, Status.INTERRUPTED) for r in self.results):
            worst = next(r for r in self.results if r.status in (Status.ERROR, Status.INTERRUPTED))
            return worst.exit_code
        if not self.identical or len({r.status for r in self.results}) > 1:
            return 1
        return self.results[0].exit_code


def parse_backends(text: str) -> list[str]:
    """`qemu,builtin` -> ["qemu", "builtin"] (two different backends)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if len(names) != 2 or names[0] == names[1]:
        raise InvalidInput(f"--compare {text!r}: give two different backends, e.g. qemu,builtin", field="compare",
                           value=text)
    for name in names:
        if name not in BACKENDS:
            raise InvalidInput(f"--compare {text!r}: no backend {name!r} (one of {', '.join(BACKENDS)})",
                               field="compare", value=name)
    return names


def first_difference(a: bytes, b: bytes) -> int | None:
    """The index of the first byte where `a` and `b` differ, their common length if one is the
    other's prefix, None if they are equal."""
    if a == b:
        return None
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def line_column(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column of byte `offset`."""
    line = data.count(b"\n", 0, offset) + 1
    return line, offset - (data.rfind(b"\n", 0, offset) + 1) + 1


class Compare:
    def __init__(self, opts: RunOptions, backends: list[str]) -> None:
        if opts.node_firmware:
            raise InvalidInput("--compare runs one-node boards: compare the nodes of a multi-node board one at a time",
                               field="compare")
        for what, given in (("--scenario", opts.scenario is not None), ("--keep", opts.keep),
                            ("--coverage", opts.coverage is not None), ("--interactive", opts.interactive),
                            ("--no-deterministic", not opts.deterministic), ("--timeout-is wall", opts.timeout_is == "wall")):
            if given:
                raise InvalidInput(f"--compare cannot be combined with {what}: both backends must run the same "
                                   "firmware on the same virtual clock", field="compare")
        self.opts = opts
        self.backends = backends

    def run(self, on_progress: Any = None) -> Comparison:
        results = []
        for backend in self.backends:
            if on_progress is not None:
                on_progress(f"running on {backend}")
            results.append(Runner(replace(self.opts, backend=backend, on_output=None, on_verdict=None)).run())
        comparison = Comparison(self.backends, results)
        if any(r.status in (Status.ERROR, Status.INTERRUPTED) for r in results):
            return comparison  # one could not run: nothing to compare
        a, b = (r.serial_log for r in results)
        comparison.offset = first_difference(a, b)
        if comparison.offset is None:
            return comparison
        longer = a if len(a) > len(b) else b
        comparison.line, comparison.column = line_column(longer, comparison.offset)
        if on_progress is not None:
            on_progress(f"the consoles part at byte {comparison.offset}: running both to it")
        try:
            comparison.states = [self._state_at(backend, result, comparison.offset)
                                 for backend, result in zip(self.backends, results)]
        except VirsimError as err:
            comparison.error = str(err)
        return comparison

    def _state_at(self, backend: str, result: RunResult, offset: int) -> StateAt:
        """Run the firmware on `backend` until it sends console byte `offset` (or to where its run
        ended) and read its state there."""
        board, _ = resolve_board(self.opts.board)
        node = board.nodes[0]
        register = board.console_tx_register(node)
        if register is None:
            raise NotSupported(f"board {self.opts.board}: virsim does not know which register its console UART "
                               "sends from, so it cannot stop at a byte")
        sends = len(result.serial_log) > offset
        # Where to give up: the run's limit for a backend that sent the byte (the watchpoint stops it
        # first); where its run ended for one that never did (its clock at the end, when read).
        end_ns = int((self.opts.timeout or DEFAULT_TIMEOUT) * 1e9)
        if not sends and result.virtual_ns:
            end_ns = min(end_ns, result.virtual_ns)
        private = PrivateDaemon("vsc-")
        c = Client(private.paths, lifeline=True)
        try:
            c.connect()
            info = c.session_create(self.opts.board, self.opts.firmware, backend=backend, deterministic=True,
                                    paused=True, semihosting=self.opts.semihosting,
                                    allow_unsafe_qemu_args=self.opts.allow_unsafe_qemu_args)
            sid = info.id
            if sends:
                c.debug("watch", sid, target=f"{register:#x}", size=4, access="access", ignore_count=offset)
            else:
                c.debug("where", sid)  # the debugger attaches while the CPU is halted at reset
            c.request("session.stop_at", sid, virtual_ns=end_ns)
            guard = min(wall_guard(end_ns / 1e9, True), 3600.0)
            reply = c.debug("continue", sid, wait=True, timeout=guard)
            stop = reply.stop
            state = StateAt(backend, "sent" if stop is not None and stop.reason == "watchpoint" else "ended")
            if reply.timed_out:
                state.note = f"it did not stop within {guard:g}s of host time"
                c.session("pause", sid)
            self._read_state(c, sid, state)
            return state
        finally:
            c.close()
            private.close()

    @staticmethod
    def _read_state(c: Client, sid: str, state: StateAt) -> None:
        clock = c.clock(sid)
        state.virtual_ns, state.instructions = clock.virtual_ns, clock.instructions
        where = c.debug("where", sid)
        state.pc = where.pc
        if where.function:
            state.location = where.function + (f" ({where.file}:{where.line})" if where.file else "")
        regs = c.debug("regs", sid, scope="all")
        state.registers = {r.name: r.value for r in regs.registers}
        try:
            taken = c.request("session.exceptions", sid, last=LAST_EXCEPTIONS)
        except VirsimError as err:
            state.note = f"no exceptions list: {err}"
            return
        state.exceptions = [e.model_dump() for e in taken.exceptions]
        state.exceptions_total = taken.total


def to_json(comparison: Comparison) -> dict[str, Any]:
    def result(backend: str, r: RunResult) -> dict[str, Any]:
        return {"backend": backend, "status": r.status.value, "exit_code": r.exit_code, "seconds": round(r.seconds, 3),
                "virtual_ns": r.virtual_ns, "console_bytes": len(r.serial_log), "message": r.message,
                "instructions_per_s": r.instructions_per_s, "serial_log": r.serial_log.decode("latin-1")}

    return {"identical": comparison.identical, "exit_code": comparison.exit_code, "offset": comparison.offset,
            "line": comparison.line, "column": comparison.column, "error": comparison.error,
            "runs": [result(b, r) for b, r in zip(comparison.backends, comparison.results)],
            "states": [vars(s) for s in comparison.states]}
