"""JUnit XML reports (virsim.ci.junit): counts, attributes, escaping, schema validity, determinism.

The reports are validated against tests/data/junit-10.xsd, the Jenkins xUnit plugin's JUnit schema
(see the file's header for its origin), with the xmlschema package.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from virsim.ci.junit import RUN_CASE, SERIAL_LOG_LIMIT, to_junit_xml, write_junit
from virsim.ci.result import CheckResult, RunResult, Status

XSD = Path(__file__).resolve().parent / "data" / "junit-10.xsd"
STAMP = datetime(2024, 5, 17, 13, 45, 9, 123456)
NASTY = "got <panic> & then ]]> and a bell \x07 here"


def _schema():
    try:
        import xmlschema
    except ImportError:
        if os.environ.get("VIRSIM_NO_SKIP"):
            pytest.fail("xmlschema is required (VIRSIM_NO_SKIP is set): pip install -e '.[test]'")
        pytest.skip("xmlschema is not installed (pip install -e '.[test]')")
    return xmlschema.XMLSchema(str(XSD))


def _results() -> list[RunResult]:
    blinky = RunResult(
        name="blinky",
        firmware="build/blinky.elf",
        board="mps2-an385",
        status=Status.FAILED,
        seconds=3.14159,
        virtual_ns=2_500_000_000,
        serial_log=b"boot\r\n\x1b[31mred\x1b[0m <ok> & \x00\x07\x1b done ]]>\n\xe9\x85\n",
        checks=[
            CheckResult("expect-text 'boot'", Status.PASSED, seconds=0.25, virtual_ns=1000),
            CheckResult(
                "expect-text 'tick 3'",
                Status.FAILED,
                seconds=1.5,
                message="fail text <panic> & seen ]]>",
                virtual_ns=2_000_000_000,
                console_excerpt=NASTY,
            ),
            CheckResult("expect-text 'done'", Status.SKIPPED, message="not reached: an earlier check failed"),
        ],
    )
    scenario = RunResult(
        name="smoke scenario",
        firmware="hello.elf",
        board="lm3s811evb",
        status=Status.TIMEOUT,
        seconds=10.0,
        checks=[
            CheckResult("step 1: wait-serial 'ready'", Status.PASSED, seconds=0.0004),
            CheckResult("step 2: wait-serial 'tick'", Status.TIMEOUT, seconds=5.0, message="no 'tick' in 5 s"),
            CheckResult("step 3: gdb break main", Status.ERROR, seconds=0.1, message="gdb went away"),
            CheckResult("step 4: wait-serial 'bye'", Status.SKIPPED),
        ],
    )
    return [blinky, scenario]


def _parse(data: bytes) -> ET.Element:
    return ET.fromstring(data)


def test_counts_and_attributes():
    root = _parse(to_junit_xml(_results(), timestamp=STAMP, hostname="ci-box"))
    assert root.tag == "testsuites"
    assert root.attrib == {"name": "virsim", "tests": "7", "failures": "2", "errors": "1", "time": "13.142"}
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["blinky", "smoke scenario"]

    blinky, scenario = suites
    assert list(blinky.attrib) == ["name", "tests", "failures", "errors", "skipped", "time", "timestamp", "hostname"]
    assert blinky.attrib == {
        "name": "blinky",
        "tests": "3",
        "failures": "1",
        "errors": "0",
        "skipped": "1",
        "time": "3.142",
        "timestamp": "2024-05-17T13:45:09",
        "hostname": "ci-box",
    }
    assert {k: scenario.get(k) for k in ("tests", "failures", "errors", "skipped", "time")} == {
        "tests": "4",
        "failures": "1",
        "errors": "1",
        "skipped": "1",
        "time": "10.000",
    }

    props = {p.get("name"): p.get("value") for p in blinky.find("properties")}
    assert props == {
        "board": "mps2-an385",
        "firmware": "build/blinky.elf",
        "status": "failed",
        "virtual_ns": "2500000000",
    }
    props = {p.get("name"): p.get("value") for p in scenario.find("properties")}
    assert props == {"board": "lm3s811evb", "firmware": "hello.elf", "status": "timeout"}  # no virtual_ns


def test_testcases():
    root = _parse(to_junit_xml(_results(), timestamp=STAMP, hostname="h"))
    blinky, scenario = root.findall("testsuite")

    cases = blinky.findall("testcase")
    assert [(c.get("classname"), c.get("name"), c.get("time")) for c in cases] == [
        ("virsim.mps2-an385", "expect-text 'boot'", "0.250"),
        ("virsim.mps2-an385", "expect-text 'tick 3'", "1.500"),
        ("virsim.mps2-an385", "expect-text 'done'", "0.000"),
    ]
    assert list(cases[0]) == []  # passed: no child
    (failure,) = list(cases[1])
    assert failure.tag == "failure"
    assert failure.attrib == {"message": "fail text <panic> & seen ]]>", "type": "failure"}
    assert "fail text <panic> & seen ]]>" in failure.text
    assert "virtual time: 2000000000 ns" in failure.text
    assert "got <panic> & then ]]> and a bell  here" in failure.text  # the \x07 is gone
    (skipped,) = list(cases[2])
    assert skipped.tag == "skipped"
    assert skipped.attrib == {"message": "not reached: an earlier check failed"}

    cases = scenario.findall("testcase")
    assert [c.get("time") for c in cases] == ["0.000", "5.000", "0.100", "0.000"]
    assert [c.get("classname") for c in cases] == ["virsim.lm3s811evb"] * 4
    assert list(cases[0]) == []
    timeout = cases[1].find("failure")
    assert timeout.attrib == {"message": "no 'tick' in 5 s", "type": "timeout"}
    error = cases[2].find("error")
    assert error.attrib == {"message": "gdb went away", "type": "error"}
    assert error.text == "gdb went away"
    assert cases[3].find("skipped") is not None
    assert cases[3].find("skipped").get("message")  # a default message when the check has none


def test_serial_log_in_system_out():
    data = to_junit_xml(_results(), timestamp=STAMP, hostname="h")
    blinky, scenario = _parse(data).findall("testsuite")
    out = blinky.find("system-out")
    # latin-1 decoded, ANSI colour sequences and XML-forbidden controls (and the C1 \x85) removed;
    # the \r is written, and an XML parser reads \r\n as \n (XML 1.0, 2.11 End-of-Line Handling)
    assert b"<system-out>boot\r\nred &lt;ok&gt; &amp;  done ]]&gt;\n\xc3\xa9\n</system-out>" in data
    assert out.text == "boot\nred <ok> &  done ]]>\n\xe9\n"
    assert scenario.find("system-out") is None  # no serial log, no element


def test_serial_log_keeps_the_last_64k():
    log = b"A" * 1000 + b"B" * SERIAL_LOG_LIMIT
    run = RunResult("big", "fw.elf", "mps2-an385", Status.PASSED, 1.0, serial_log=log)
    out = _parse(to_junit_xml([run], timestamp=STAMP, hostname="h")).find("testsuite/system-out").text
    assert out.endswith("B" * SERIAL_LOG_LIMIT)
    assert "A" not in out
    assert "1000 bytes" in out.splitlines()[0]


def test_all_control_bytes_are_well_formed():
    every = bytes(range(256))
    text = every.decode("latin-1")
    run = RunResult(
        name="ctl" + text,
        firmware="fw" + text,
        board="b\x01",
        status=Status.FAILED,
        seconds=1.0,
        serial_log=every * 3,
        message=text,
        checks=[CheckResult("c" + text, Status.FAILED, message=text, console_excerpt=text + "\ud800\uffff")],
    )
    data = to_junit_xml([run], suite_name="s\x1b", timestamp=STAMP, hostname="h\x00")
    root = _parse(data)  # well-formed
    out = root.find("testsuite/system-out").text
    assert "\t" in out and "\n" in out and b"\r" in data
    assert not any(ord(ch) < 32 and ch not in "\t\n\r" or 0x7F <= ord(ch) <= 0x9F for ch in out)
    assert out.count(" !\"#$%&'()*+,-./0123456789:;<=>?@ABC") == 3
    _schema().validate(data)


def test_valid_against_junit_10_xsd(tmp_path):
    schema = _schema()
    data = to_junit_xml(_results(), timestamp=STAMP, hostname="ci-box")
    schema.validate(data.decode("utf-8"))
    path = tmp_path / "report.xml"
    write_junit(path, _results(), timestamp=STAMP, hostname="ci-box")
    assert schema.is_valid(str(path))
    # and the degenerate reports
    schema.validate(to_junit_xml([], timestamp=STAMP, hostname="h").decode())
    empty = RunResult("empty", "fw.elf", "mps2-an385", Status.PASSED, 0.0)
    schema.validate(to_junit_xml([empty], timestamp=STAMP, hostname="h").decode())


def test_run_error_without_checks_is_reported():
    run = RunResult(
        "broken", "missing.elf", "mps2-an385", Status.ERROR, 0.5, message="firmware not found: missing.elf"
    )
    data = to_junit_xml([run], timestamp=STAMP, hostname="h")
    suite = _parse(data).find("testsuite")
    assert (suite.get("tests"), suite.get("errors"), suite.get("failures")) == ("1", "1", "0")
    (case,) = suite.findall("testcase")
    assert case.get("name") == RUN_CASE
    assert case.get("time") == "0.500"
    assert case.find("error").get("message") == "firmware not found: missing.elf"
    _schema().validate(data.decode())


def test_run_failure_shown_by_a_check_gets_no_extra_case():
    root = _parse(to_junit_xml(_results(), timestamp=STAMP, hostname="h"))
    assert all(c.get("name") != RUN_CASE for c in root.iter("testcase"))


def test_odd_times_stay_schema_valid():
    run = RunResult(
        "t",
        "fw.elf",
        "b",
        Status.PASSED,
        float("nan"),
        checks=[CheckResult("neg", Status.PASSED, seconds=-1.0), CheckResult("inf", Status.PASSED, seconds=float("inf"))],
    )
    data = to_junit_xml([run], timestamp=STAMP, hostname="h")
    root = _parse(data)
    assert root.get("time") == "0.000"
    assert [c.get("time") for c in root.iter("testcase")] == ["0.000", "0.000"]
    _schema().validate(data.decode())


def test_deterministic():
    first = to_junit_xml(_results(), timestamp=STAMP, hostname="ci-box")
    second = to_junit_xml(_results(), timestamp=STAMP, hostname="ci-box")
    assert first == second
    assert first.startswith(b"<?xml version='1.0' encoding='utf-8'?>\n<testsuites ")
    assert to_junit_xml(_results(), suite_name="other", timestamp=STAMP, hostname="ci-box") != first


def test_timestamp_forms():
    def stamp(value):
        return _parse(to_junit_xml(_results()[:1], timestamp=value, hostname="h")).find("testsuite").get("timestamp")

    assert stamp("2020-01-02T03:04:05") == "2020-01-02T03:04:05"
    aware = datetime(2024, 1, 1, 12, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    assert stamp(aware) == aware.astimezone().replace(tzinfo=None).isoformat()  # local, no offset
    now = stamp(None)
    parsed = datetime.fromisoformat(now)
    assert parsed.tzinfo is None and parsed.microsecond == 0
    assert abs(datetime.now() - parsed) < timedelta(minutes=1)


def test_write_junit_creates_parent_dirs(tmp_path):
    path = tmp_path / "reports" / "nested" / "junit.xml"
    write_junit(path, _results(), timestamp=STAMP, hostname="ci-box")
    assert path.read_bytes() == to_junit_xml(_results(), timestamp=STAMP, hostname="ci-box")
    assert sorted(p.name for p in path.parent.iterdir()) == ["junit.xml"]  # no temporary file left
    write_junit(path, [], timestamp=STAMP, hostname="ci-box")  # overwrites
    assert _parse(path.read_bytes()).get("tests") == "0"
