"""The outcome of a `virsim run`: one result per check (an expectation or a scenario step).

Exit codes of `virsim run` (stable, docs/exit-codes.md): 0 every check passed; 1 a check failed
(fail text seen, scenario step failed, the firmware faulted); 42 the run timed out; 2
infrastructure (bad board, firmware or scenario, emulator missing, daemon trouble); 128 + the
signal when SIGINT (130) or SIGTERM (143) interrupted it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Status(str, Enum):
    PASSED = "passed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    ERROR = "error"  # infrastructure: the check could not be carried out
    SKIPPED = "skipped"  # not reached because an earlier check ended the run
    INTERRUPTED = "interrupted"  # SIGINT/SIGTERM (a cancelled CI job) ended the run

    def __str__(self) -> str:
        return self.value


EXIT_CODES = {Status.PASSED: 0, Status.FAILED: 1, Status.TIMEOUT: 42, Status.ERROR: 2, Status.SKIPPED: 0,
              Status.INTERRUPTED: 130}


@dataclass
class CheckResult:
    name: str  # e.g. "expect-text 'tick 3'" or "step 2: wait-serial 'ready'"
    status: Status
    seconds: float = 0.0  # wall time spent on this check
    message: str = ""  # why it failed / timed out / errored
    virtual_ns: int | None = None  # virtual time when the check ended (deterministic runs)
    console_excerpt: str = ""  # the last console bytes when it failed (for the report)
    fault: dict[str, object] | None = None  # the decoded fault, when a fault failed the check


@dataclass
class RunResult:
    name: str  # the suite name: the scenario's name, or the firmware file name
    firmware: str
    board: str
    status: Status
    seconds: float
    checks: list[CheckResult] = field(default_factory=list)
    session: str | None = None  # kept session id (--keep), else None
    serial_log: bytes = b""
    virtual_ns: int | None = None
    coverage: str | None = None  # the coverage file written (virsim run --coverage)
    message: str = ""
    error: dict[str, object] | None = None  # the {error, code, details} of an infrastructure error
    signal: int | None = None  # the signal that interrupted the run
    fault: dict[str, object] | None = None  # the decoded fault that failed the run
    instructions_per_s: float | None = None  # the emulator's speed over the run, where it counts instructions

    @property
    def exit_code(self) -> int:
        if self.status == Status.INTERRUPTED and self.signal:
            return 128 + self.signal  # as a shell reports a command a signal ended: 130 SIGINT, 143 SIGTERM
        return EXIT_CODES[self.status]
