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

import codecs
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from virsim.ci.result import CheckResult, RunResult, Status
from virsim.ci.scenario import MemoryAt, Pattern, Scenario, Step
from virsim.client import Client
from virsim.errors import InvalidInput, NotSupported, VirsimError
from virsim.paths import get_paths, paths_for_home

CLOCK_SAMPLE = 0.01  # seconds of host time between virtual clock samples
DEFAULT_TIMEOUT = 10.0


@dataclass
class RunOptions:
    firmware: Path
    board: str = "mps2-an385"
    backend: str | None = None
    expect_text: list[str] = field(default_factory=list)
    fail_text: list[str] = field(default_factory=list)
    timeout: float | None = None  # seconds; per run (expectations) or per step default (scenario)
    timeout_is: str | None = None  # "virtual" | "wall"; default virtual when deterministic
    deterministic: bool = True
    scenario: Scenario | None = None
    keep: bool = False
    name: str | None = None
    on_output: Callable[[bytes], None] | None = None  # live console bytes (the CLI's --verbose)
    coverage: Path | None = None  # write the run's coverage here (lcov; .json -> json, .drcov -> drcov)
    node_firmware: dict[str, Path] = field(default_factory=dict)  # multi-node boards: node -> image
    sync: str = "timeslice"
    quantum: str = "100us"


class CheckFailed(Exception):
    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def unescape(text: str) -> bytes:
    r"""`hi\n` -> b"hi\n" (C-style escapes as people write them in YAML and shells). `\xNN` is
    that byte; a character beyond latin-1 (`€`) is its UTF-8 encoding."""
    decoded = codecs.decode(text.encode("latin-1", "backslashreplace"), "unicode_escape")
    return b"".join(bytes([ord(ch)]) if ord(ch) < 256 else ch.encode() for ch in decoded)


class Monitor:
    """The console of one running session, its fail patterns, and the clock checks are timed by."""

    def __init__(self, client: Client, session: str, virtual: bool, fail_text: list[str],
                 on_output: Callable[[bytes], None] | None) -> None:
        self.client = client
        self.session = session
        self.virtual = virtual
        self.console = bytearray()
        self.cursor = 0  # where the next wait-serial starts looking
        self.decided = 0  # end of the bytes that decided the run (the serial log's end)
        # (name, pattern, where it starts to count): a fail text counts from the start, an
        # expect-not from the step that declared it.
        self.forbidden: list[tuple[str, re.Pattern[bytes], int]] = [
            (f"fail-text {t!r}", re.compile(re.escape(unescape(t))), 0) for t in fail_text]
        self.on_output = on_output
        self.sub = client.subscribe(session)
        self._clock_at = 0.0
        self._clock = 0.0

    def close(self) -> None:
        self.sub.close()

    def now(self) -> float:
        """Seconds on the run's clock: virtual time of the session, or host time."""
        if not self.virtual:
            return time.monotonic()
        if time.monotonic() - self._clock_at >= CLOCK_SAMPLE:
            try:
                clock = self.client.clock(self.session)
            except VirsimError:
                self._emulator_gone()
                raise
            if clock.virtual_ns is None:
                self._emulator_gone()
            self._clock = (clock.virtual_ns or 0) / 1e9
            self._clock_at = time.monotonic()
        return self._clock

    def _emulator_gone(self, wait: float = 1.0) -> None:
        """Raise CheckFailed if the emulator died (the firmware crashed it, e.g. a lockup). The
        daemon notices a death within its supervision tick, so look for up to `wait` seconds."""
        deadline = time.monotonic() + wait
        while True:
            info = self.client.session("show", self.session)
            if info.state in ("failed", "lost", "stopped"):
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
        log, read by offset, is the record); notice an emulator that died."""
        got = self.sub.recv(wait)
        chunk = self.client.console_read(self.session, offset=len(self.console))
        if chunk.data:
            data = chunk.data.encode("latin-1")
            self.console += data
            if self.on_output:
                self.on_output(data)
        if got is not None and got[0].type == "state" and got[0].state in ("failed", "lost", "stopped"):
            self._emulator_gone()

    def wait_for(self, pattern: re.Pattern[bytes], timeout: float, what: str, wall_guard: float,
                 limit: float | None = None) -> bytes:
        """Wait until `pattern` matches the console after the cursor; move the cursor past it.
        A forbidden text that appears before the match fails the check, whatever the batching."""
        start, wall_start = self.now(), time.monotonic()
        limit = timeout if limit is None else limit
        while True:
            m = pattern.search(self.console, self.cursor)
            self._fail_on_forbidden(before=m.end() if m else None)
            if m:
                self.cursor = self.decided = m.end()
                return m.group(0)
            if self.now() - start >= timeout:
                raise CheckFailed(Status.TIMEOUT, f"{what} did not appear within {limit:g}s of "
                                                  f"{'virtual' if self.virtual else 'wall'} time")
            if time.monotonic() - wall_start >= wall_guard:
                raise CheckFailed(Status.TIMEOUT, f"{what} did not appear within {wall_guard:g}s of host time "
                                                  "(the virtual clock barely moved)")
            self.pump(CLOCK_SAMPLE)

    def run_for(self, seconds: float, wall_guard: float) -> None:
        start, wall_start = self.now(), time.monotonic()
        while self.now() - start < seconds:
            self._fail_on_forbidden()
            if time.monotonic() - wall_start >= wall_guard:
                raise CheckFailed(Status.TIMEOUT, f"{seconds:g}s of virtual time did not pass within {wall_guard:g}s "
                                                  "of host time (the virtual clock barely moved)")
            self.pump(CLOCK_SAMPLE)
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
        self.home: Path | None = None
        self.client: Client | None = None
        self.session: str | None = None
        self.monitor: Monitor | None = None

    def _wall_guard(self, timeout: float) -> float:
        return wall_guard(timeout, self.virtual)

    # --------------------------------------------------------------------------------------- setup

    def _start(self) -> None:
        if self.opts.keep:
            self.client = Client(get_paths()).connect()
        else:
            self.home = Path(tempfile.mkdtemp(prefix="vsr-"))  # honours TMPDIR; long paths are handled
            self.client = Client(paths_for_home(self.home)).connect()
        multi = {"node_firmware": {n: str(f) for n, f in self.opts.node_firmware.items()}, "sync": self.opts.sync,
                 "quantum": self.opts.quantum} if self.opts.node_firmware else {}
        info = self.client.session_create(self.opts.board, None if multi else self.opts.firmware,
                                          backend=self.opts.backend, **multi,
                                          deterministic=self.opts.deterministic, paused=True,
                                          name=self.opts.name if self.opts.keep else None,
                                          coverage=self.opts.coverage is not None)
        self.session = info.id
        if self.virtual and "virtual-time" not in info.capabilities:
            raise NotSupported(f"backend {info.backend} has no virtual clock: use --timeout-is wall",
                               backend=info.backend, capability="virtual-time")
        self.monitor = Monitor(self.client, info.id, self.virtual, self.opts.fail_text, self.opts.on_output)
        try:
            self.client.session("resume", info.id)
        except VirsimError:
            self.monitor._emulator_gone()  # the firmware crashed the emulator at once: a failure
            raise

    def _finish(self) -> None:
        if self.monitor is not None:
            self.monitor.close()
        if self.client is not None:
            try:
                if self.session is not None and not self.opts.keep:
                    self.client.session_delete(self.session, purge=True)
            finally:
                if self.home is not None:
                    self.client.stop_daemon()
                self.client.close()
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)

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
        t0 = time.perf_counter()
        try:
            self._start()
            assert self.monitor is not None
            if self.opts.scenario is not None:
                self._run_scenario(self.opts.scenario, result)
            else:
                self._run_expectations(result)
            for text in self.opts.fail_text:
                if all(c.status == Status.PASSED for c in result.checks):
                    result.checks.append(CheckResult(f"fail-text {text!r} never appeared", Status.PASSED))
        except VirsimError as err:
            result.status = Status.ERROR
            result.message = str(err)
            result.error = err.to_wire()
            result.checks.append(CheckResult("set-up", Status.ERROR, message=str(err)))
        except CheckFailed as fail:  # the emulator died while starting
            result.status, result.message = fail.status, fail.message
            result.checks.append(CheckResult("start", fail.status, message=fail.message))
        except Exception as err:  # a bug in virsim must still end as "could not run", not a traceback
            result.status, result.message = Status.ERROR, f"internal error: {type(err).__name__}: {err}"
            result.checks.append(CheckResult("run", Status.ERROR, message=result.message))
        finally:
            if self.monitor is not None:
                m = self.monitor
                result.serial_log = bytes(m.console[:m.decided] if result.status in (Status.PASSED, Status.FAILED)
                                          and m.decided else m.console)
                result.virtual_ns = m.virtual_ns()
            if self.opts.keep:
                result.session = self.session
            try:
                self._write_coverage(result)
            except VirsimError as err:
                if result.status == Status.PASSED:
                    result.status, result.message = Status.ERROR, f"writing coverage: {err}"
            try:
                self._finish()
            except VirsimError as err:
                if result.status == Status.PASSED:
                    result.status, result.message = Status.ERROR, f"cleaning up: {err}"
        result.seconds = time.perf_counter() - t0
        if result.status == Status.PASSED:
            for check in result.checks:
                if check.status != Status.PASSED:
                    result.status, result.message = check.status, check.message
                    break
        return result

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
                                             self.monitor.virtual_ns(), excerpt))
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
            deadline_start = m.now()
        except CheckFailed as fail:
            result.checks.append(CheckResult("start", fail.status, message=fail.message))
            return
        for text in self.opts.expect_text:
            pattern, shown = _pattern(text)
            remaining = max(0.0, timeout - (m.now() - deadline_start))
            if not self._check(result, f"expect-text {shown}",
                               lambda p=pattern, s=shown, r=remaining: self._expect(p, s, r, timeout)):
                return
        if not self.opts.expect_text:  # no expectation: run for the timeout and pass unless a fail text shows
            self._check(result, f"ran {timeout:g}s without a fail text",
                        lambda: m.run_for(timeout, self._wall_guard(timeout)) or None)

    def _expect(self, pattern: re.Pattern[bytes], shown: str, remaining: float, timeout: float) -> None:
        assert self.monitor is not None
        self.monitor.wait_for(pattern, remaining, shown, self._wall_guard(timeout), limit=timeout)

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
        if info.state == "paused":
            self.client.debug("continue", self.session)

    def _step(self, step: Step, timeout: float) -> str | None:
        m, c, sid = self.monitor, self.client, self.session
        assert m is not None and c is not None and sid is not None
        action, arg = step.action, step.argument
        if action == "wait-serial":
            self._ensure_running()
            pattern, shown = _pattern(arg)
            return m.wait_for(pattern, timeout, shown, self._wall_guard(timeout)).decode("latin-1")
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
