"""JUnit XML reports of `virsim run` results, for Jenkins, GitLab and GitHub test reporters.

The dialect is the one of the Jenkins xUnit plugin's junit-10.xsd (vendored as tests/data/junit-10.xsd,
which the tests validate against), the common ground of JUnit consumers:

    <testsuites name tests failures errors time>
      <testsuite name tests failures errors skipped time timestamp hostname>   one per RunResult
        <properties> board, firmware, status, virtual_ns (when set) </properties>
        <testcase classname="virsim.<board>" name=<check name> time>            one per CheckResult
          <failure type="failure"|"timeout"|"fault" message>  /  <error type="error"|"interrupted" message>
          /  <skipped message/>
        </testcase>
        <system-out> the run's serial log (last 64 KiB) </system-out>
      </testsuite>
    </testsuites>

junit-10.xsd has no `skipped` attribute on <testsuites> (strict validators such as the xUnit plugin
reject it), so the skipped count is given on each <testsuite> only. A TIMEOUT check is reported as a
<failure type="timeout">: JUnit has no timeout outcome and every consumer shows failures.

A run that ended badly (failed, timed out, errored) with no check that says so, such as an
infrastructure error before the first check, gets one extra test case named RUN_CASE so that the
report does not show it as green.

The output is deterministic: the same results, timestamp and hostname give the same bytes.
"""

from __future__ import annotations

import math
import re
import socket
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

from virsim.atomic import write_atomic
from virsim.ci.result import CheckResult, RunResult, Status

SERIAL_LOG_LIMIT = 64 * 1024  # bytes of the serial log kept in <system-out> (the last ones)
RUN_CASE = "virsim run"  # name of the test case added for a run that failed outside any check

_FAILING = (Status.FAILED, Status.TIMEOUT, Status.ERROR, Status.INTERRUPTED)

# ANSI/VT100 escape sequences (colours, cursor moves) that firmware prints on the console: CSI
# sequences (ESC [ ... final byte), OSC sequences (ESC ] ... BEL or ESC \), and two-byte escapes.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
# What XML 1.0 cannot carry (C0 controls other than tab, LF and CR; lone surrogates; U+FFFE and
# U+FFFF), plus DEL and the C1 controls, which it can but which are only noise in a report.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def clean_text(text: str) -> str:
    """`text` with ANSI escape sequences and the characters XML 1.0 forbids removed."""
    return _NOT_XML.sub("", _ANSI.sub("", text))


def _finite(value: float) -> float:
    """`value` if it is a finite non-negative number, else 0."""
    if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:
        return float(value)
    return 0.0


def _seconds(value: float) -> str:
    """A duration in seconds with 3 decimals; never negative, NaN or infinite (the schema's
    SUREFIRE_TIME pattern allows digits and a dot only)."""
    return f"{_finite(value):.3f}"


def _timestamp(value: datetime | str | None) -> str:
    """ISO 8601 local time to the second, without a timezone (as JUnit's Ant task writes it)."""
    if value is None:
        value = datetime.now()
    if isinstance(value, str):
        return value
    if value.tzinfo is not None:
        value = value.astimezone().replace(tzinfo=None)
    return value.replace(microsecond=0).isoformat()


def _serial_text(log: bytes) -> str:
    """The last SERIAL_LOG_LIMIT bytes of a serial log as text (latin-1: every byte is a character)."""
    dropped = max(0, len(log) - SERIAL_LOG_LIMIT)
    text = clean_text(log[dropped:].decode("latin-1"))
    if dropped:
        text = f"[virsim: first {dropped} bytes of the serial log left out]\n" + text
    return text


def _detail(message: str, virtual_ns: int | None, excerpt: str) -> str:
    """The text of a <failure>/<error>: the message, the virtual time and the console excerpt."""
    parts = [message] if message else []
    if virtual_ns is not None:
        parts.append(f"virtual time: {virtual_ns} ns")
    if excerpt:
        parts.append("--- console (last bytes) ---\n" + excerpt)
    return clean_text("\n\n".join(parts))


def _add_testcase(suite: ET.Element, board: str, check: CheckResult) -> None:
    case = ET.SubElement(
        suite,
        "testcase",
        {
            "classname": clean_text(f"virsim.{board}"),
            "name": clean_text(check.name),
            "time": _seconds(check.seconds),
        },
    )
    status = Status(check.status)
    message = check.message or {
        Status.FAILED: "check failed",
        Status.TIMEOUT: "timed out",
        Status.ERROR: "could not be carried out",
        Status.SKIPPED: "not reached",
        Status.INTERRUPTED: "interrupted",
    }.get(status, "")
    if status is Status.PASSED:
        return
    if status is Status.SKIPPED:
        ET.SubElement(case, "skipped", {"message": clean_text(message)})
        return
    tag, kind = {
        Status.FAILED: ("failure", "failure"),
        Status.TIMEOUT: ("failure", "timeout"),
        Status.ERROR: ("error", "error"),
        Status.INTERRUPTED: ("error", "interrupted"),  # not the firmware's doing: an error, not a failure
    }[status]
    if status is Status.FAILED and check.fault:
        kind = "fault"
    element = ET.SubElement(case, tag, {"message": clean_text(message), "type": kind})
    element.text = _detail(message, check.virtual_ns, check.console_excerpt)


def _checks(run: RunResult) -> list[CheckResult]:
    """The run's checks, plus RUN_CASE when the run ended badly and no check shows it."""
    checks = list(run.checks)
    status = Status(run.status)
    if status in _FAILING and not any(Status(c.status) in _FAILING for c in checks):
        spent = sum(_finite(c.seconds) for c in checks)
        checks.append(
            CheckResult(
                name=RUN_CASE,
                status=status,
                seconds=max(0.0, _finite(run.seconds) - spent),
                message=run.message,
                virtual_ns=run.virtual_ns,
            )
        )
    return checks


def _counts(checks: list[CheckResult]) -> dict[str, int]:
    statuses = [Status(c.status) for c in checks]
    return {
        "tests": len(statuses),
        "failures": sum(s in (Status.FAILED, Status.TIMEOUT) for s in statuses),
        "errors": statuses.count(Status.ERROR) + statuses.count(Status.INTERRUPTED),
        "skipped": statuses.count(Status.SKIPPED),
    }


def _testsuite(run: RunResult, timestamp: str, hostname: str) -> tuple[ET.Element, dict[str, int]]:
    checks = _checks(run)
    counts = _counts(checks)
    suite = ET.Element(
        "testsuite",
        {
            "name": clean_text(run.name),
            "tests": str(counts["tests"]),
            "failures": str(counts["failures"]),
            "errors": str(counts["errors"]),
            "skipped": str(counts["skipped"]),
            "time": _seconds(run.seconds),
            "timestamp": timestamp,
            "hostname": hostname,
        },
    )
    properties = ET.SubElement(suite, "properties")
    values = [("board", run.board), ("firmware", run.firmware), ("status", str(Status(run.status)))]
    if run.virtual_ns is not None:
        values.append(("virtual_ns", str(run.virtual_ns)))
    for name, value in values:
        ET.SubElement(properties, "property", {"name": name, "value": clean_text(value)})
    for check in checks:
        _add_testcase(suite, run.board, check)
    if run.serial_log:
        ET.SubElement(suite, "system-out").text = _serial_text(run.serial_log)
    return suite, counts


def to_junit_xml(
    results: list[RunResult],
    suite_name: str = "virsim",
    *,
    timestamp: datetime | str | None = None,
    hostname: str | None = None,
) -> bytes:
    """The JUnit XML report (UTF-8, with an XML declaration) of `results`, one <testsuite> each.

    `timestamp` (default: now) is the time every <testsuite> is stamped with; `hostname` defaults to
    this machine's name. Both are parameters so that tests get the same bytes on every call.
    """
    stamp = _timestamp(timestamp)
    host = clean_text(socket.gethostname() if hostname is None else hostname)
    suites = [_testsuite(run, stamp, host) for run in results]
    total = {key: sum(counts[key] for _, counts in suites) for key in ("tests", "failures", "errors")}
    root = ET.Element(
        "testsuites",
        {
            "name": clean_text(suite_name),
            "tests": str(total["tests"]),
            "failures": str(total["failures"]),
            "errors": str(total["errors"]),
            "time": _seconds(sum(_finite(r.seconds) for r in results)),
        },
    )
    root.extend(suite for suite, _ in suites)
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit(
    path: Path,
    results: list[RunResult],
    suite_name: str = "virsim",
    *,
    timestamp: datetime | str | None = None,
    hostname: str | None = None,
) -> None:
    """Write the JUnit XML report of `results` to `path`, creating its parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = to_junit_xml(results, suite_name, timestamp=timestamp, hostname=hostname)
    write_atomic(path, data)
