"""`virsim run` end to end: real daemons (one per run), real QEMU, exit codes, scenarios, reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from conftest import HELLO, HOST_S, JITTER, ROOT, CLI, chosen_backend, need_tool, process_progress, wait_progress

pytestmark = pytest.mark.usefixtures("qemu")


@pytest.fixture(params=["qemu", "builtin", "renode"])
def backend(request: pytest.FixtureRequest) -> str:
    """`virsim run` on every backend that runs mps2-an385."""
    return chosen_backend(request)


FAULT_BACKENDS = pytest.mark.parametrize("backend", ["qemu", "builtin"], indirect=True)  # Capability.FAULTS


def run(cli: CLI, *args: str, code: int) -> dict:
    proc = cli("run", *args, "--json", check=code)
    return json.loads(proc.stdout)


def no_run_left() -> None:
    left = [p for p in psutil.process_iter(["cmdline"])
            if "/tmp/vsr-" in " ".join(p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [p.info["cmdline"] for p in left]


# Virtual time is the board's clock on both backends: hello.elf ticks every 1 s of it on the
# built-in engine (one instruction per 40 ns cycle) and every 0.8 s on QEMU (32 ns per instruction).


def test_pass_writes_log_and_leaves_nothing(cli: CLI, tmp_path: Path, backend: str) -> None:
    log = tmp_path / "out" / "uart.log"
    doc = run(cli, str(HELLO), "--board", "mps2-an385", "--backend", backend, "--expect-text", "tick 3",
              "--timeout", "5s", "--serial-log", str(log), code=0)
    assert doc["status"] == "passed" and doc["exit_code"] == 0
    assert [c["name"] for c in doc["checks"]] == ["expect-text 'tick 3'"]
    assert 0 < doc["virtual_ns"] < 5e9
    # The log ends exactly at the byte that decided the run.
    assert log.read_bytes() == b"Hello from virsim on mps2-an385\ntick 1\ntick 2\ntick 3"
    assert cli.json("session", "list", "--all") == []  # it did not use the user's daemon
    no_run_left()


def test_fail_text_fails_with_exit_1(cli: CLI) -> None:
    doc = run(cli, str(HELLO), "--expect-text", "tick 5", "--fail-text", "PANIC", "--fail-text", "tick 2", code=1)
    assert doc["status"] == "failed" and "fail-text 'tick 2'" in doc["checks"][0]["message"]
    assert doc["serial_log"].endswith("tick 2")
    human = cli("run", str(HELLO), "-e", "tick 5", "-F", "tick 2", check=1)
    assert "FAILED" in human.stdout and "tick 1\ntick 2\n" in human.stdout  # the console, streamed
    quiet = cli("run", str(HELLO), "-e", "tick 5", "-F", "tick 2", "--quiet", check=1)
    assert "tick 1" not in quiet.stdout and "tick 1" in quiet.stderr  # not streamed: the excerpt instead


def test_virtual_and_wall_timeouts_exit_42(cli: CLI) -> None:
    doc = run(cli, str(HELLO), "--expect-text", "tick 9999", "--timeout", "300ms", code=42)
    assert doc["status"] == "timeout" and "virtual time" in doc["checks"][0]["message"]
    assert doc["virtual_ns"] >= 300_000_000
    doc = run(cli, str(HELLO), "--expect-text", "tick 9999", "--timeout", "500ms", "--timeout-is", "wall", code=42)
    assert "wall time" in doc["checks"][0]["message"] and doc["seconds"] >= 0.5
    doc = run(cli, str(HELLO), "--no-deterministic", "-e", "tick 2", code=0)
    assert doc["virtual_ns"] is None  # not deterministic: wall time, no virtual clock
    doc = run(cli, str(HELLO), "--no-deterministic", "--timeout-is", "virtual", "-e", "x", code=2)
    assert "deterministic" in doc["message"]


def test_infrastructure_errors_exit_2(cli: CLI, tmp_path: Path) -> None:
    assert "does not exist" in run(cli, str(tmp_path / "missing.elf"), "-e", "x", code=2)["message"]
    assert "x86-64" in run(cli, "/bin/true", "-e", "x", code=2)["message"]
    assert "no board" in run(cli, str(HELLO), "--board", "nosuch", "-e", "x", code=2)["message"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsteps:\n  - wait-serial: Hello\n  - delay: soon\n")
    doc = run(cli, str(HELLO), "--scenario", str(bad), code=2)
    assert f"{bad}:4: steps[1].delay" in doc["message"] and "soon" in doc["message"]
    human = cli("run", str(HELLO), "--scenario", str(bad), check=2)
    assert "SCENARIO_INVALID" in human.stderr


def test_scenario_with_serial_input_memory_and_breakpoint(cli: CLI, tmp_path: Path, backend: str) -> None:
    from virsim.analysis.symbols import Program
    from virsim.firmware import inspect, vector_table

    need_tool("gdb-multiarch")
    on_tick = Program.load(HELLO).function_named("on_tick").start  # type: ignore[union-attr]
    vectors = vector_table(inspect(HELLO)) or [0]
    scenario = tmp_path / "boot.yaml"
    scenario.write_text("""\
name: boot and echo
timeout: LIMIT
steps:
  - wait-serial: "Hello from virsim"
  - wait-serial: {regex: "tick [0-9]+"}
  - write-serial: "ping\\n"
  - wait-serial: "echo: ping"
  - expect-not: "PANIC"
  - delay: DELAY
  - break-at: on_tick
  - expect-register: {pc: ON_TICK}
  - expect-memory: {at: 0x0, bytes: "SP0"}
  - read-memory: {at: 0x0, size: 8}
""".replace("LIMIT", "3s").replace("DELAY", "500ms").replace("ON_TICK", str(on_tick))
   .replace("SP0", vectors[0].to_bytes(4, "little").hex()))
    # Which tick the break-at lands on is not asserted: the echo of host-timed input comes at a
    # virtual time that depends on the host (docs/ci.md, "What determinism does not cover").
    junit = tmp_path / "junit.xml"
    doc = run(cli, str(HELLO), "--backend", backend, "--scenario", str(scenario), "--junit", str(junit), code=0)
    assert doc["name"] == "boot and echo"
    assert [c["status"] for c in doc["checks"]] == ["passed"] * 10
    assert doc["checks"][2]["name"] == "step 3: write-serial 'ping\\n'"
    assert "echo: ping" in doc["serial_log"]
    xml = junit.read_text()
    assert 'tests="10"' in xml and 'failures="0"' in xml and "boot and echo" in xml
    xmlschema = pytest.importorskip("xmlschema") if not os.environ.get("VIRSIM_NO_SKIP") else __import__("xmlschema")
    xmlschema.XMLSchema(str(ROOT / "tests" / "data" / "junit-10.xsd")).validate(str(junit))


def test_failing_step_skips_the_rest_and_reports_junit(cli: CLI, tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text("steps:\n  - wait-serial: tick 1\n  - expect-memory: {at: tick_count, equals: 99}\n"
                        "  - wait-serial: tick 2\n  - snapshot: x\n")
    junit = tmp_path / "j.xml"
    doc = run(cli, str(HELLO), "--scenario", str(scenario), "--junit", str(junit), code=1)
    assert [c["status"] for c in doc["checks"]] == ["passed", "failed", "skipped", "skipped"]
    assert "expected 63000000" in doc["checks"][1]["message"]
    xml = junit.read_text()
    assert 'failures="1"' in xml and 'skipped="2"' in xml
    snap = tmp_path / "snap.yaml"
    snap.write_text("steps:\n  - snapshot: before\n")
    doc = run(cli, str(HELLO), "--scenario", str(snap), code=0)
    assert doc["checks"][0]["message"].startswith("snapshot before at ")


def test_scenario_snapshot_and_restore_replay_the_console(cli: CLI, tmp_path: Path, backend: str) -> None:
    scenario = tmp_path / "snap.yaml"
    scenario.write_text("timeout: 3s\nsteps:\n  - wait-serial: tick 1\n  - snapshot: one\n"
                        "  - wait-serial: tick 2\n  - restore: one\n  - wait-serial: tick 2\n")
    log = tmp_path / "uart.log"
    doc = run(cli, str(HELLO), "--backend", backend, "--scenario", str(scenario), "--serial-log", str(log), code=0)
    assert [c["status"] for c in doc["checks"]] == ["passed"] * 5
    assert doc["checks"][3]["message"] == "restored one"
    text = log.read_text()
    assert text.count("tick 2") == 2 and "[virsim: restored snapshot one at " in text


def test_deterministic_serial_logs_over_5_reruns(cli: CLI, tmp_path: Path, backend: str) -> None:
    logs = []
    for i in range(5):
        log = tmp_path / f"uart{i}.log"
        run(cli, str(JITTER), "--backend", backend, "-e", "tick 15 ", "--timeout", "2s",
            "--serial-log", str(log), code=0)
        logs.append(log.read_bytes())
    assert all(log == logs[0] for log in logs) and logs[0].count(b"loops") == 14


def test_four_parallel_runs(cli: CLI, tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-m", "virsim", "run", str(HELLO), "-e", f"tick {3 + i}",
                               "--serial-log", str(tmp_path / f"{i}.log")], env=cli.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for i in range(4)]
    # Each run bounds itself (its default timeout: 10 s of virtual time). The test waits while the
    # runs, their daemons and emulators work, by the CPU time they use however the host shares it
    # (9 s for the four, measured), not by a guess at how long a loaded host takes.
    runs = process_progress([p.pid for p in procs], tree=True, cpu_s=60)
    wait_progress(lambda: all(p.poll() is not None for p in procs), progress=runs, what="the four runs to end")
    codes = [p.returncode for p in procs]
    assert codes == [0, 0, 0, 0], [p.stderr.read() for p in procs if p.stderr]
    for i in range(4):
        assert (tmp_path / f"{i}.log").read_bytes().endswith(b"tick %d" % (3 + i))
    no_run_left()


def test_keep_leaves_the_session_on_the_user_daemon(cli: CLI) -> None:
    doc = run(cli, str(HELLO), "-e", "tick 1", "--keep", code=0)
    sid = doc["session"]
    assert sid and cli.json("session", "show", sid)["state"] == "running"
    assert "tick 1" in cli("console", sid).stdout


def test_examples_ci_makefile_target_runs(cli: CLI) -> None:
    need_tool("make")
    env = {**cli.env, "VIRSIM": f"{sys.executable} -m virsim"}
    proc = subprocess.run(["make", "-s", "-C", str(ROOT / "examples" / "ci"), "test"], env=env,
                          capture_output=True, text=True, timeout=2 * HOST_S)  # two runs, each bounding itself
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert os.path.exists(ROOT / "examples" / "ci" / "out" / "junit.xml")


def test_crash_ordering_and_expect_not_semantics(cli: CLI, tmp_path: Path) -> None:
    from conftest import LOCKUP

    doc = run(cli, str(LOCKUP), "-e", "x", code=1)  # the firmware crashes QEMU: a failure, with QEMU's words
    assert "Lockup" in doc["checks"][0]["message"]
    doc = run(cli, str(LOCKUP), "-e", "x", "--timeout-is", "wall", "--timeout", "20s", code=1)
    assert doc["seconds"] < 10  # noticed at once, not at the timeout
    # A fail text that shows after the deciding expectation does not count, whatever the batching.
    assert run(cli, str(HELLO), "-e", "Hello", "-F", "mps2", code=0)["serial_log"] == "Hello"
    scenario = tmp_path / "s.yaml"
    scenario.write_text("steps:\n  - wait-serial: tick 1\n  - expect-not: Hello\n  - wait-serial: tick 2\n"
                        "  - expect-not: tick 3\n  - wait-serial: tick 4\n")
    doc = run(cli, str(HELLO), "--scenario", str(scenario), code=1)  # expect-not counts from its own step
    assert [c["status"] for c in doc["checks"]] == ["passed", "passed", "passed", "passed", "failed"]
    assert "expect-not 'tick 3'" in doc["checks"][4]["message"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - expect-memory: {at: tick_count, size: 1, equals: 300}\n")
    doc = run(cli, str(HELLO), "--scenario", str(bad), code=2)
    assert doc["error"]["code"] == "SCENARIO_INVALID" and "does not fit" in doc["message"]


FAULT = ROOT / "examples" / "hello" / "fault.elf"


@FAULT_BACKENDS
def test_a_fault_is_a_failed_verdict_at_once(cli: CLI, tmp_path: Path, backend: str) -> None:
    """fault.elf divides by zero: the run fails on the fault (not at its timeout) with the fault
    decoded, in the output, the JSON document and the JUnit report; --allow-faults runs on."""
    doc = run(cli, str(FAULT), "-e", "tick 3", "--timeout", "100s", "--backend", backend,
              "--junit", str(tmp_path / "j.xml"), code=1)
    fault = doc["fault"]
    assert fault["handler"] == "HardFault" and [b["bit"] for b in fault["bits"]] == ["DIVBYZERO", "FORCED"]
    assert fault["fault_location"] == "divide (fault.c:16)" and fault["fault_pc"] == 0x40
    assert "the firmware faulted: HardFault: DIVBYZERO at divide (fault.c:16)" in doc["checks"][0]["message"]
    assert doc["virtual_ns"] < 1_000_000_000  # decided at the fault, long before the 100 s limit
    junit = (tmp_path / "j.xml").read_text()
    assert 'type="fault"' in junit and "DIVBYZERO" in junit
    human = cli("run", str(FAULT), "-e", "tick 3", "--backend", backend, check=1).stdout
    assert "faulting pc 0x00000040 in divide (fault.c:16)" in human and "CFSR = 0x02000000" in human
    allowed = run(cli, str(FAULT), "-e", "tick 3", "--timeout", "50ms", "--allow-faults", "--backend", backend,
                  code=42)
    assert allowed["status"] == "timeout" and allowed["fault"] is None


@FAULT_BACKENDS
def test_a_lockup_is_a_failed_verdict_with_the_lockup_named(cli: CLI, backend: str) -> None:
    from conftest import LOCKUP

    doc = run(cli, str(LOCKUP), "-e", "x", "--backend", backend, code=1)
    assert doc["fault"]["handler"] == "Lockup" and "Lockup" in doc["checks"][0]["message"]


HELLO_SYSTICK = ROOT / "examples" / "hello" / "hello-systick.elf"


@pytest.mark.parametrize(("firmware", "args", "status"), [
    (HELLO, ["-e", "tick 3", "--timeout", "5s"], "passed"),     # ~2.4 s virtual on QEMU, 3.0 s built-in
    (HELLO, ["-e", "tick 3", "--timeout", "2s"], "timeout"),    # too short on both
    # SysTick at 10 Hz of the board's clock on the built-in engine; QEMU 7.2 under -icount sleep=off
    # runs it at 5 Hz (each warp over a sleep lands one period late): docs/ci.md.
    (HELLO_SYSTICK, ["-e", "tick 3\n", "--timeout", "1s"], "passed"),
    (HELLO_SYSTICK, ["-e", "tick 15\n", "--timeout", "1s"], "timeout"),
    (FAULT, ["-e", "tick 1", "--timeout", "5s"], "failed"),
], ids=["hello-5s", "hello-2s", "systick-3", "systick-15", "fault"])
def test_the_same_run_gives_the_same_verdict_on_both_backends(cli: CLI, firmware: Path, args: list[str],
                                                               status: str) -> None:
    """Virtual time is the board's clock on both backends, so a --timeout means the same thing."""
    verdicts = {backend: run(cli, str(firmware), "--backend", backend, *args, code={"passed": 0, "failed": 1,
                             "timeout": 42}[status])["status"] for backend in ("qemu", "builtin")}
    assert verdicts == {"qemu": status, "builtin": status}


def test_wokwi_spellings(cli: CLI, tmp_path: Path) -> None:
    """Wokwi CLI users bring their options: --serial-log-file, --expect-regex/--fail-regex (in the
    order typed, with the -e texts), --timeout-exit-code, a bare --timeout number in ms, --interactive."""
    log = tmp_path / "serial.txt"
    doc = run(cli, str(HELLO), "--backend", "builtin", "--expect-regex", r"tick [0-9]\n", "-e", "tick 2",
              "--serial-log-file", str(log), "--timeout", "5000", code=0)
    assert [c["name"] for c in doc["checks"]] == ["expect-text /tick [0-9]\\n/", "expect-text 'tick 2'"]
    assert log.read_text().endswith("tick 1\ntick 2")
    bare = cli("run", str(HELLO), "--backend", "builtin", "-e", "tick 1", "--timeout", "1500", check=0)
    assert "a bare --timeout number is milliseconds" in bare.stderr  # 1500 ms: tick 1 comes at 1.0 s
    assert cli("run", str(HELLO), "--backend", "builtin", "-e", "tick 9", "--timeout", "500ms",
               "--timeout-exit-code", "3", check=3).returncode == 3
    failed = run(cli, str(HELLO), "--backend", "builtin", "-e", "tick 5", "--fail-regex", r"tick [2-3]", code=1)
    assert "fail-text /tick [2-3]/ appeared" in failed["checks"][0]["message"]
    bad = cli("run", str(HELLO), "--expect-regex", "tick (", check=2)
    assert "--expect-regex 'tick (' is not a valid regular expression" in bad.stderr
    typed = cli("run", str(HELLO), "--backend", "builtin", "--interactive", "-e", "echo: hello", "--timeout", "5s",
                input=b"hello\n", check=0)
    assert "echo: hello" in typed.stdout
