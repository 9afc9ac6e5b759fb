"""`virsim run`: run firmware until expectations are met, a failure shows, or time runs out.

A run gets its own daemon in a private temporary VIRSIM_HOME (started here, stopped at the end),
so CI needs no running daemon, parallel `make -j4` runs cannot interfere, and nothing is left
running; `--keep` uses the per-user daemon instead and leaves the session for inspection.

Runs are deterministic by default (QEMU icount: one instruction = 1 ns of virtual time) and
timeouts then count virtual time, read from the backend's instruction clock. The checks are
made as console bytes arrive and the clock is sampled about every 10 ms of host time, so a
timeout is decided at the first sample past the deadline. The serial log of a run that passes
or fails on text ends at the byte that decided it: the same firmware and scenario give the
same log, byte for byte.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from virsim.bytestext import unescape
from virsim.ci.result import CheckResult, RunResult, Status
from virsim.ci.scenario import MemoryAt, Pattern, Scenario, Step
from virsim.client import Client
from virsim.errors import InvalidInput, NotSupported, VirsimError
from virsim.paths import get_paths
from virsim.private import PrivateDaemon

CLOCK_SAMPLE = 0.01  # seconds of host time between virtual clock samples
DEBUGGER_STEPS = frozenset({"break-at", "expect-register", "read-memory", "expect-memory"})
DEFAULT_TIMEOUT = 10.0
INTERRUPT_GRACE = 1.0  # s the emulators and the run's daemon get to stop after SIGINT/SIGTERM
STOP_GRACE = 10.0  # s they get at the end of a run that was not interrupted


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived (a cancelled CI job): the run stops, cleans up and exits with
    128 + the signal. A BaseException, like KeyboardInterrupt: no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Signals:
    shielded = False
    held: int | None = None


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    if _Signals.shielded:
        _Signals.held = _Signals.held or signum
        return
    raise Interrupted(signum)


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block (main thread only), SIGINT and SIGTERM raise Interrupted, which
    `Runner.run` turns into an `interrupted` result after cleaning up."""
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _shielded() -> Iterator[list[int]]:
    """Clean-up must finish: a signal arriving in the block is held, and reported in the list."""
    was, _Signals.shielded = _Signals.shielded, True
    held: list[int] = []
    try:
        yield held
    finally:
        _Signals.shielded = was
        if _Signals.held is not None:
            held.append(_Signals.held)
            _Signals.held = None


@dataclass
class RunOptions:
    firmware: Path
    board: str = "mps2-an385"
    backend: str | None = None
    expect_text: list[str | Pattern] = field(default_factory=list)  # texts (C escapes) or regexes, in order
    fail_text: list[str | Pattern] = field(default_factory=list)
    timeout: float | None = None  # seconds; per run (expectations) or per step default (scenario)
    timeout_is: str | None = None  # "virtual" | "wall"; default virtual when deterministic
    deterministic: bool = True
    allow_unsafe_qemu_args: bool = False  # qemu.extra_args that open the host (session create's flag)
    semihosting: bool = False  # serve ARM semihosting (session create's flag)
    scenario: Scenario | None = None
    keep: bool = False
    name: str | None = None
    on_output: Callable[[bytes], None] | None = None  # live console bytes (the CLI streams them)
    on_progress: Callable[[str], None] | None = None  # what the run is doing while it starts up
    on_verdict: Callable[[RunResult], None] | None = None  # the result, as soon as it is known (before clean-up)
    allow_faults: bool = False  # a firmware fault does not end the run (firmware that handles its own)
    interactive: bool = False  # stdin goes to the console UART
    coverage: Path | None = None  # write the run's coverage here (lcov; .json -> json, .drcov -> drcov)
    node_firmware: dict[str, Path] = field(default_factory=dict)  # multi-node boards: node -> image
    sync: str = "timeslice"
    quantum: str = "100us"


class CheckFailed(Exception):
    def __init__(self, status: Status, message: str, fault: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fault = fault  # the decoded fault, when the firmware's fault decided the check


def fault_message(fault: dict[str, Any]) -> str:
    """One line: what faulted and where, e.g. 'HardFault: DIVBYZERO at divide (fault.c:16), pc 0x00000040'."""
    where = f" at {fault['fault_location']}" if fault.get("fault_location") else ""
    pc = f", pc {int(fault['fault_pc']):#010x}" if fault.get("fault_pc") is not None else ""
    return f"the firmware faulted: {fault.get('summary') or fault.get('handler')}{where}{pc}"


class Monitor:
    """The console of one running session, its fail patterns, and the clock checks are timed by."""

    def __init__(self, client: Client, session: str, virtual: bool, fail_text: list[str | Pattern],
                 on_output: Callable[[bytes], None] | None, stdin: bool = False, allow_faults: bool = False) -> None:
        self.client = client
        self.session = session
        self.virtual = virtual
        self.console = bytearray()
        self.cursor = 0  # where the next wait-serial starts looking
        self.decided = 0  # end of the bytes that decided the run (the serial log's end)
        # (name, pattern, where it starts to count): a fail text counts from the start, an
        # expect-not from the step that declared it.
        self.forbidden: list[tuple[str, re.Pattern[bytes], int]] = [
            (f"fail-text {shown}", pattern, 0) for pattern, shown in map(_pattern, fail_text)]
        self.on_output = on_output
        self.allow_faults = allow_faults  # --allow-faults: the firmware handles its own faults
        self.sub = client.subscribe(session)
        self._clock_at = 0.0
        self._clock = 0.0
        self.exact = False  # the emulator stops at the current deadline (set_deadline)
        self.instructions: int | None = None  # at the last clock sample
        self._first_sample: tuple[float, int] | None = None  # (host time, instructions) of the first
        self._last_sample: tuple[float, int] | None = None
        self.stdin: int | None = sys.stdin.fileno() if stdin else None  # --interactive: typed bytes go to the UART
        if self.stdin is not None:
            os.set_blocking(self.stdin, False)

    def close(self) -> None:
        self.sub.close()

    def now(self, fresh: bool = False) -> float:
        """Seconds on the run's clock: virtual time of the session, or host time. The clock is
        sampled at most every CLOCK_SAMPLE s of host time; `fresh` reads it now (where a wait
        starts: a stale start would make the wait shorter than its timeout)."""
        if not self.virtual:
            return time.monotonic()
        if fresh or time.monotonic() - self._clock_at >= CLOCK_SAMPLE:
            try:
                clock = self.client.clock(self.session)
            except VirsimError:
                self._emulator_gone()
                raise
            if clock.virtual_ns is None:
                self._emulator_gone()
            self._clock = (clock.virtual_ns or 0) / 1e9
            self._clock_at = time.monotonic()
            self._sampled(clock.instructions)
        return self._clock

    def final_sample(self) -> None:
        """One last reading of the clock, so the verdict shows where the run ended (best effort:
        the emulator may be gone)."""
        if not self.virtual:
            return
        try:
            clock = self.client.clock(self.session)
        except VirsimError:
            return
        if clock.virtual_ns is not None:
            self._clock = clock.virtual_ns / 1e9
            self._sampled(clock.instructions)

    def _sampled(self, instructions: int | None) -> None:
        if instructions is None:
            return
        self.instructions = instructions
        self._last_sample = (time.monotonic(), instructions)
        if self._first_sample is None:
            self._first_sample = self._last_sample

    def instructions_per_s(self) -> float | None:
        """The emulator's speed between the first and the last clock sample (None if unknown)."""
        if self._first_sample is None or self._last_sample is None:
            return None
        seconds = self._last_sample[0] - self._first_sample[0]
        return (self._last_sample[1] - self._first_sample[1]) / seconds if seconds > 0.05 else None

    def _forward_stdin(self) -> None:
        if self.stdin is None:
            return
        try:
            data = os.read(self.stdin, 4096)
        except BlockingIOError:
            return
        if not data:
            self.stdin = None  # end of input: nothing more to send
            return
        self.client.console_send(self.session, data)

    def _emulator_gone(self, wait: float = 1.0) -> None:
        """Raise CheckFailed if the emulator died (the firmware crashed it, e.g. a lockup). The
        daemon notices a death within its supervision tick, so look for up to `wait` seconds."""
        deadline = time.monotonic() + wait
        while True:
            info = self.client.session("show", self.session)
            if info.state in ("failed", "lost", "stopped"):
                if info.fault is not None and info.fault.get("handler") == "Lockup":
                    raise CheckFailed(Status.FAILED, fault_message(info.fault), info.fault)
                lines = [ln for ln in (info.stderr_tail or "").splitlines() if ln.strip() and "warning:" not in ln]
                tail = f": {lines[0]}" if lines else ""
                raise CheckFailed(Status.FAILED, f"the emulator stopped ({info.error or info.state}){tail}")
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)

    def first_forbidden(self, end: int | None = None) -> tuple[str, re.Match[bytes]] | None:
        hits = []
        for name, pattern, start in self.forbidden:
            m = pattern.search(self.console, start, end if end is not None else len(self.console))
            if m:
                hits.append((m.start(), name, m))
        if not hits:
            return None
        _, name, m = min(hits, key=lambda h: h[0])
        return name, m

    def _fail_on_forbidden(self, before: int | None = None) -> None:
        hit = self.first_forbidden()
        if hit is not None and (before is None or hit[1].start() < before):
            name, m = hit
            self.decided = m.end()
            raise CheckFailed(Status.FAILED, f"{name} appeared at byte {m.start()} of the console")

    def virtual_ns(self) -> int | None:
        return int(self._clock * 1e9) if self.virtual else None

    def pump(self, wait: float) -> None:
        """Take new console bytes, waiting up to `wait` s for some (events only wake us: the
        log, read by offset, is the record); notice a fault and an emulator that died."""
        self._forward_stdin()
        events = []
        got = self.sub.recv(wait)
        while got is not None:  # everything queued: a fault must not wait behind console events
            events.append(got[0])
            got = self.sub.recv(0)
        chunk = self.client.console_read(self.session, offset=len(self.console))
        if chunk.data:
            data = chunk.data.encode("latin-1")
            self.console += data
            if self.on_output:
                self.on_output(data)
        for event in events:
            if event.type == "fault" and event.fault is not None and not self.allow_faults:
                self.decided = len(self.console)
                raise CheckFailed(Status.FAILED, fault_message(event.fault), event.fault)
            if event.type == "state" and event.state in ("failed", "lost", "stopped"):
                self._emulator_gone()

    def set_deadline(self, at: float | None = None, after: float | None = None) -> float | None:
        """Have the emulator stop when the virtual clock reaches `at` s, or `after` s from now
        (neither: cancel): a deadline then decides exactly, whatever the host's speed (the clock is
        only sampled every 10 ms, and a sleeping QEMU CPU skips ahead in virtual time far faster
        than that). Returns the deadline in s, or None where it cannot be set (wall time, a
        backend without it): the deadline is then decided by the samples."""
        self.exact = False
        if not self.virtual:
            return None
        try:
            clock = self.client.request("session.stop_at", self.session,
                                        virtual_ns=int(at * 1e9) if at else None,
                                        after_ns=int(after * 1e9) if after else None)
        except VirsimError:
            return None
        self.exact = clock.stop_at_ns is not None
        return clock.stop_at_ns / 1e9 if clock.stop_at_ns is not None else None

    def settle(self) -> None:
        """The emulator stopped at the deadline: take the console bytes still on their way to the
        log (none can come after: the CPU is stopped)."""
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 0.1:
            before = len(self.console)
            self.pump(0.02)
            if len(self.console) != before:
                quiet_since = time.monotonic()

    def wait_for(self, pattern: re.Pattern[bytes], timeout: float, what: str, wall_guard: float,
                 limit: float | None = None, deadline: float | None = None) -> bytes:
        """Wait until `pattern` matches the console after the cursor; move the cursor past it.
        A forbidden text that appears before the match fails the check, whatever the batching.
        `deadline`: when it times out, on the run's clock (default: `timeout` from now)."""
        start, wall_start = self.now(fresh=True), time.monotonic()
        limit = timeout if limit is None else limit
        deadline = start + timeout if deadline is None else deadline
        while True:
            m = pattern.search(self.console, self.cursor)
            self._fail_on_forbidden(before=m.end() if m else None)
            if m:
                self.cursor = self.decided = m.end()
                return m.group(0)
            if self.now() >= deadline:
                if self.exact:  # stopped at the deadline: what it printed before it is all that counts
                    self.settle()
                    if pattern.search(self.console, self.cursor):
                        continue
                raise CheckFailed(Status.TIMEOUT, f"{what} did not appear within {limit:g}s of "
                                                  f"{'virtual' if self.virtual else 'wall'} time")
            if time.monotonic() - wall_start >= wall_guard:
                raise CheckFailed(Status.TIMEOUT, f"{what} did not appear within {wall_guard:g}s of host time "
                                                  "(the virtual clock barely moved)")
            self.pump(CLOCK_SAMPLE)

    def run_for(self, seconds: float, wall_guard: float, exact: bool = False, until: float | None = None) -> None:
        """Let the firmware run `seconds` on the run's clock (`exact`: to a deadline the emulator
        stops at, when it can), or until the deadline `until` already set (set_deadline)."""
        start, wall_start = self.now(fresh=True), time.monotonic()
        if until is not None:
            end = until
        else:
            end = (self.set_deadline(after=seconds) if exact else None) or start + seconds
        while self.now() < end:
            self._fail_on_forbidden()
            if time.monotonic() - wall_start >= wall_guard:
                raise CheckFailed(Status.TIMEOUT, f"{seconds:g}s of virtual time did not pass within {wall_guard:g}s "
                                                  "of host time (the virtual clock barely moved)")
            self.pump(CLOCK_SAMPLE)
        if self.exact:
            self.settle()
        self._fail_on_forbidden()


def wall_guard(timeout: float, virtual: bool) -> float:
    """Host seconds a wait of `timeout` may last. A virtual timeout must still end if the emulator
    stalls (its clock stops), so it gets generous host time; a wall timeout is itself host time.
    Shared with the pytest plugin's expect()."""
    return timeout * 50 + 30 if virtual else timeout


def _pattern(spec: str | Pattern) -> tuple[re.Pattern[bytes], str]:
    if isinstance(spec, Pattern):
        return re.compile(spec.regex.encode("latin-1")), f"/{spec.regex}/"
    return re.compile(re.escape(unescape(spec))), repr(spec)


class Runner:
    def __init__(self, opts: RunOptions) -> None:
        if opts.timeout_is is not None and opts.timeout_is not in ("virtual", "wall"):
            raise InvalidInput(f"--timeout-is must be virtual or wall, got {opts.timeout_is!r}", field="timeout-is")
        self.virtual = (opts.timeout_is or ("virtual" if opts.deterministic else "wall")) == "virtual"
        if self.virtual and not opts.deterministic:
            raise InvalidInput("virtual-time timeouts need a deterministic run (drop --no-deterministic or use "
                               "--timeout-is wall)", field="timeout-is")
        self.opts = opts
        self.private: PrivateDaemon | None = None
        self.client: Client | None = None
        self.session: str | None = None
        self.monitor: Monitor | None = None

    def _wall_guard(self, timeout: float) -> float:
        return wall_guard(timeout, self.virtual)

    # --------------------------------------------------------------------------------------- setup

    def _start(self) -> None:
        if self.opts.keep:
            self.client = Client(get_paths())
        else:
            # A home of its own (honours TMPDIR; long paths are handled) and a daemon that dies with
            # this process, however it dies. Assigned before connecting, so that clean-up finds it
            # even when a signal arrives while the daemon is still starting.
            self.private = PrivateDaemon("vsr-")
            self.client = Client(self.private.paths, lifeline=True)
        self._progress("starting the run's daemon" if self.private else "connecting to the daemon")
        self.client.connect()
        what = "the built-in engine" if self.opts.backend == "builtin" else (self.opts.backend or "the emulator")
        self._progress(f"starting {what} for {self.opts.board}")
        multi = {"node_firmware": {n: str(f) for n, f in self.opts.node_firmware.items()}, "sync": self.opts.sync,
                 "quantum": self.opts.quantum} if self.opts.node_firmware else {}
        info = self.client.session_create(self.opts.board, None if multi else self.opts.firmware,
                                          backend=self.opts.backend, **multi,
                                          deterministic=self.opts.deterministic, paused=True,
                                          name=self.opts.name if self.opts.keep else None,
                                          coverage=self.opts.coverage is not None,
                                          allow_unsafe_qemu_args=self.opts.allow_unsafe_qemu_args,
                                          semihosting=self.opts.semihosting)
        self.session = info.id
        if self.virtual and "virtual-time" not in info.capabilities:
            raise NotSupported(f"backend {info.backend} has no virtual clock: use --timeout-is wall",
                               backend=info.backend, capability="virtual-time")
        self.monitor = Monitor(self.client, info.id, self.virtual, self.opts.fail_text, self.opts.on_output,
                               stdin=self.opts.interactive, allow_faults=self.opts.allow_faults)
        if self.opts.scenario is not None and any(step.action in DEBUGGER_STEPS for step in self.opts.scenario.steps):
            # Attach the debugger while the CPU is still halted: attaching later costs a gdb start-up
            # of host time while the target runs on, a varying stretch of virtual time before a
            # break-at or a register read lands (hundreds of ms of it on a fast QEMU).
            self._progress("attaching the debugger")
            try:
                self.client.debug("where", info.id)
            except VirsimError:
                pass  # no debugger here (a QEMU node, a backend without one): the step itself says so
        if self.opts.scenario is None and self.virtual:
            # The run's one deadline, set while the CPU is still halted at virtual time 0: set once
            # it runs, it would count from wherever the CPU had got to by then.
            self.monitor.set_deadline(at=self.opts.timeout or DEFAULT_TIMEOUT)
        self._progress(f"session {info.id} on {info.backend}: running")
        try:
            self.client.session("resume", info.id)
        except VirsimError:
            self.monitor._emulator_gone()  # the firmware crashed the emulator at once: a failure
            raise

    def _progress(self, text: str) -> None:
        if self.opts.on_progress is not None:
            self.opts.on_progress(text)

    def _finish(self, interrupted: bool) -> list[str]:
        """Close the subscription and, for a private run, stop its daemon (which powers its
        emulators off) and remove its home; returns what had to be killed."""
        if self.monitor is not None:
            self.monitor.close()
        if self.client is not None:
            self.client.close()
        if self.private is None:
            return []
        return self.private.close(INTERRUPT_GRACE if interrupted else STOP_GRACE)

    def _write_coverage(self, result: RunResult) -> None:
        if self.opts.coverage is None or self.client is None or self.session is None:
            return
        out = self.opts.coverage
        fmt = {".json": "json", ".drcov": "drcov"}.get(out.suffix, "lcov")
        job = self.client.request("coverage.export", self.session, format=fmt, out=out)
        done = self.client.wait_job(job)
        result.coverage = (done.result or {}).get("path")

    # ----------------------------------------------------------------------------------------- run

    def run(self) -> RunResult:
        name = self.opts.name or (self.opts.scenario.name if self.opts.scenario and self.opts.scenario.name
                                  else self.opts.firmware.name)
        result = RunResult(name=name, firmware=str(self.opts.firmware), board=self.opts.board,
                           status=Status.PASSED, seconds=0.0)
        t0 = self._t0 = time.perf_counter()
        try:
            self._start()
            assert self.monitor is not None
            if self.opts.scenario is not None:
                self._run_scenario(self.opts.scenario, result)
            else:
                self._run_expectations(result)
            for text in self.opts.fail_text:
                if all(c.status == Status.PASSED for c in result.checks):
                    result.checks.append(CheckResult(f"fail-text {_pattern(text)[1]} never appeared", Status.PASSED))
        except VirsimError as err:
            result.status = Status.ERROR
            result.message = str(err)
            result.error = err.to_wire()
            result.checks.append(CheckResult("set-up", Status.ERROR, message=str(err)))
        except CheckFailed as fail:  # the emulator died while starting
            result.status, result.message = fail.status, fail.message
            self._failed_start(result, fail)
        except Interrupted as intr:
            self._interrupted(result, intr.signum)
        except Exception as err:  # a bug in virsim must still end as "could not run", not a traceback
            result.status, result.message = Status.ERROR, f"internal error: {type(err).__name__}: {err}"
            result.checks.append(CheckResult("run", Status.ERROR, message=result.message))
        finally:
            with _shielded() as held:
                self._conclude(result)
            if held and result.status != Status.INTERRUPTED:
                self._interrupted(result, held[0])
        result.seconds = time.perf_counter() - t0
        self._derive_status(result)
        return result

    @staticmethod
    def _derive_status(result: RunResult) -> None:
        """A run that passed so far takes the status of its first check that did not."""
        if result.status == Status.PASSED:
            for check in result.checks:
                if check.status != Status.PASSED:
                    result.status, result.message = check.status, check.message
                    break

    @staticmethod
    def _failed_start(result: RunResult, fail: CheckFailed) -> None:
        result.checks.append(CheckResult("start", fail.status, message=fail.message, fault=fail.fault))
        result.fault = result.fault or fail.fault

    def _interrupted(self, result: RunResult, signum: int) -> None:
        name = signal.Signals(signum).name
        result.status, result.signal = Status.INTERRUPTED, signum
        result.message = f"interrupted by {name}"
        if not any(c.status == Status.INTERRUPTED for c in result.checks):
            result.checks.append(CheckResult("run", Status.INTERRUPTED, message=result.message))

    def _conclude(self, result: RunResult) -> None:
        """After the run, whatever ended it: the serial log, coverage, clean-up."""
        interrupted = result.status == Status.INTERRUPTED
        if self.monitor is not None:
            m = self.monitor
            if not interrupted:
                m.final_sample()
                if self.opts.keep and m.exact:
                    m.set_deadline(None)  # the kept session runs on past the run's deadline
            result.serial_log = bytes(m.console[:m.decided] if result.status in (Status.PASSED, Status.FAILED)
                                      and m.decided else m.console)
            result.virtual_ns = m.virtual_ns()
            result.instructions_per_s = m.instructions_per_s()
        if self.opts.keep:
            result.session = self.session
        if not interrupted:  # an interrupted run owes nothing but a quick, clean exit
            try:
                self._write_coverage(result)
            except VirsimError as err:
                if result.status == Status.PASSED:
                    result.status, result.message = Status.ERROR, f"writing coverage: {err}"
        if self.opts.on_verdict is not None:
            # The verdict is known: say it now, not after the emulator and the daemon are stopped.
            self._derive_status(result)
            result.seconds = time.perf_counter() - self._t0
            self.opts.on_verdict(result)
        killed = self._finish(interrupted)
        if killed and result.status == Status.PASSED:
            result.status, result.message = Status.ERROR, f"cleaning up: had to kill {', '.join(killed)[:300]}"

    def _check(self, result: RunResult, name: str, body: Callable[[], str | None]) -> bool:
        """Run one check into `result`; False once the run is decided (failed or timed out)."""
        assert self.monitor is not None
        t0 = time.perf_counter()
        try:
            note = body()
            result.checks.append(CheckResult(name, Status.PASSED, time.perf_counter() - t0, note or "",
                                             self.monitor.virtual_ns()))
            return True
        except CheckFailed as fail:
            excerpt = bytes(self.monitor.console[-2000:]).decode("latin-1")
            result.checks.append(CheckResult(name, fail.status, time.perf_counter() - t0, fail.message,
                                             self.monitor.virtual_ns(), excerpt, fail.fault))
            if fail.fault is not None:
                result.fault = fail.fault
            return False
        except VirsimError as err:
            result.checks.append(CheckResult(name, Status.ERROR, time.perf_counter() - t0, str(err),
                                             self.monitor.virtual_ns()))
            return False

    def _run_expectations(self, result: RunResult) -> None:
        m = self.monitor
        assert m is not None
        timeout = self.opts.timeout or DEFAULT_TIMEOUT
        try:
            # Virtual time starts at 0 with the run (the session was created halted), so the one
            # limit of all the expectations is virtual time `timeout`, where the emulator is told to
            # stop: a text printed before it passes, one after it cannot be seen.
            deadline = timeout if self.virtual else m.now() + timeout
        except CheckFailed as fail:
            self._failed_start(result, fail)
            return
        for text in self.opts.expect_text:
            pattern, shown = _pattern(text)
            if not self._check(result, f"expect-text {shown}",
                               lambda p=pattern, s=shown: self._expect(p, s, deadline, timeout)):
                return
        if not self.opts.expect_text:  # no expectation: run for the timeout and pass unless a fail text shows
            self._check(result, f"ran {timeout:g}s without a fail text",
                        lambda: m.run_for(timeout, self._wall_guard(timeout),
                                          until=deadline if self.virtual else None) or None)

    def _expect(self, pattern: re.Pattern[bytes], shown: str, deadline: float, timeout: float) -> None:
        assert self.monitor is not None
        self.monitor.wait_for(pattern, timeout, shown, self._wall_guard(timeout), limit=timeout, deadline=deadline)

    # ------------------------------------------------------------------------------------ scenario

    def _run_scenario(self, scenario: Scenario, result: RunResult) -> None:
        for i, step in enumerate(scenario.steps, 1):
            timeout = step.timeout or self.opts.timeout or scenario.timeout
            if not self._check(result, f"step {i}: {step.describe()}", lambda s=step, t=timeout: self._step(s, t)):
                for j, rest in enumerate(scenario.steps[i:], i + 1):
                    result.checks.append(CheckResult(f"step {j}: {rest.describe()}", Status.SKIPPED,
                                                     message="not reached"))
                return

    def _ensure_running(self) -> None:
        assert self.client is not None and self.session is not None
        info = self.client.session("show", self.session)
        if info.state == "paused":  # halted by a break-at (its debugger resumes it) or at a deadline
            self.client.session("resume", self.session)

    def _step(self, step: Step, timeout: float) -> str | None:
        m, c, sid = self.monitor, self.client, self.session
        assert m is not None and c is not None and sid is not None
        action, arg = step.action, step.argument
        if action == "wait-serial":
            self._ensure_running()
            pattern, shown = _pattern(arg)
            deadline = m.set_deadline(after=timeout) or m.now() + timeout
            try:
                return m.wait_for(pattern, timeout, shown, self._wall_guard(timeout), deadline=deadline).decode("latin-1")
            finally:
                if m.exact:
                    m.set_deadline(None)  # the steps after it run on
        if action == "write-serial":
            self._ensure_running()
            c.console_send(sid, unescape(arg))
            return None
        if action == "delay":
            self._ensure_running()
            m.run_for(arg, self._wall_guard(arg))
            return None
        if action == "expect-not":
            pattern, shown = _pattern(arg)
            m.forbidden.append((f"expect-not {shown}", pattern, m.cursor))
            return None
        if action in ("read-memory", "expect-memory"):
            return self._memory(action, arg)
        if action == "break-at":
            c.debug("break", sid, location=arg, temporary=True)
            self._ensure_running()
            reply = c.debug("continue", sid, wait=True, timeout=timeout * (5 if self.virtual else 1) + 5)
            if reply.timed_out or reply.stop is None:
                raise CheckFailed(Status.TIMEOUT, f"{arg} was not reached within "
                                                  f"{timeout * (5 if self.virtual else 1) + 5:g}s of host time")
            if reply.stop.reason != "breakpoint":
                raise CheckFailed(Status.FAILED, f"stopped by {reply.stop.reason} before reaching {arg}")
            m.pump(0)
            return f"stopped at {reply.stop.function} ({reply.stop.file}:{reply.stop.line})"
        if action == "expect-register":
            regs = {r.name: r.value for r in c.debug("regs", sid, scope="all", peek=True).registers}
            wrong = [f"{n}={regs.get(n, 'missing')!s} (expected {v:#x})" for n, v in arg.items()
                     if regs.get(n) != v]
            if wrong:
                raise CheckFailed(Status.FAILED, "register mismatch: " + ", ".join(wrong))
            return None
        if action == "snapshot":
            info = c.snapshot("create", sid, name=str(arg))
            return f"snapshot {info.name} at {info.virtual_ns / 1e9:.6f} s" if info.virtual_ns is not None else None
        if action == "restore":
            info = c.snapshot("restore", sid, snapshot=str(arg))
            m.pump(0)
            return f"restored {info.name}"
        raise NotSupported(f"unknown scenario action {action}")

    def _memory(self, action: str, spec: MemoryAt) -> str | None:
        c, sid = self.client, self.session
        assert c is not None and sid is not None
        size = spec.size or (len(bytes.fromhex(spec.bytes)) if spec.bytes else 4 if spec.equals is not None else None)
        chunk = c.debug("mem", sid, address=str(spec.at), size=size, peek=True)
        data = bytes.fromhex(chunk.data)
        if action == "read-memory":
            return f"{chunk.address:#010x}: {data.hex()}"
        want = bytes.fromhex(spec.bytes) if spec.bytes else (spec.equals or 0).to_bytes(len(data), "little")
        if data != want:
            raise CheckFailed(Status.FAILED, f"memory at {spec.at} ({chunk.address:#010x}) is {data.hex()}, "
                                             f"expected {want.hex()}")
        return None
