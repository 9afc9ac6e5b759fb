"""The pytest plugin (virsim.ci.pytest_plugin), driven the way a firmware team uses it: inner pytest
runs (pytester, each in its own subprocess) against a real daemon, QEMU and gdb-multiarch.

Every inner run records the private VIRSIM_HOME its plugin made (in home.txt), so the outer test
can check that nothing of it is left afterwards: no daemon, no emulator, no gdb, no directory.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import psutil
import pytest

from virsim.client import Client
from virsim.paths import get_paths

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples" / "hello" / "hello.elf"
LM3S_HELLO = ROOT / "examples" / "lm3s811evb" / "hello.elf"
INNER_TIMEOUT = 300  # s of host time: each inner run takes a few, a loaded host makes that many more

# With virsim installed, its pytest11 entry point already loads the plugin, and listing it in
# pytest_plugins as well makes pytest refuse to register the module twice; before the entry point
# exists, the conftest loads it.
CONFTEST = '''
import os
from importlib.metadata import entry_points
from pathlib import Path

import pytest

if not any(ep.value == "virsim.ci.pytest_plugin" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["virsim.ci.pytest_plugin"]


@pytest.fixture(autouse=True)
def _record_home(request):
    yield
    if "virsim_daemon" in request.fixturenames:
        Path(__file__).with_name("home.txt").write_text(os.environ["VIRSIM_HOME"])
'''


@pytest.fixture(autouse=True)
def tools() -> None:
    for tool in ("qemu-system-arm", "gdb-multiarch"):
        if shutil.which(tool) is None:
            if os.environ.get("VIRSIM_NO_SKIP"):
                pytest.fail(f"{tool} is required (VIRSIM_NO_SKIP is set)")
            pytest.skip(f"{tool} is not installed")


def processes_of(marker: str) -> list[str]:
    """Command lines of processes whose command line or VIRSIM_HOME mentions `marker`."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(proc.info.get("cmdline") or [])
            env = proc.info.get("environ") or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if marker in cmd or marker in env.get("VIRSIM_HOME", ""):
            found.append(cmd)
    return found


def run_inner(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Run the inner tests in a subprocess; then nothing of the plugin's VIRSIM_HOME may remain."""
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", *args, timeout=INNER_TIMEOUT)
    home_file = pytester.path / "home.txt"
    assert home_file.exists(), "the inner run did not record its VIRSIM_HOME:\n" + result.stdout.str()
    home = home_file.read_text()
    home_file.unlink()
    assert home.startswith("/tmp/vsp-"), home
    assert not Path(home).exists(), f"the plugin left its VIRSIM_HOME {home}"
    assert processes_of(home) == [], f"processes of {home} left running"
    left = [cmd for cmd in processes_of("/tmp/vsp-")
            if "qemu-system-arm" in cmd or "gdb-multiarch" in cmd or "virsim" in cmd]
    assert left == [], f"virsim processes of a plugin VIRSIM_HOME left running: {left}"
    return result


def test_expect_send_memory_and_breakpoint(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(f'''
        import re

        HELLO = {str(HELLO)!r}


        def test_hello(virsim_session):
            s = virsim_session(board="mps2-an385", firmware=HELLO)
            assert s.info.deterministic and s.info.state == "running"
            assert s.expect("Hello from virsim on mps2-an385").group() == b"Hello from virsim on mps2-an385"
            assert s.expect("tick 2")[0] == b"tick 2"
            s.send("hi\\n")
            assert s.expect("echo: hi").group() == b"echo: hi"
            # ordered: the greeting was consumed by the first expect and is not matched again
            assert s.expect(re.compile(r"tick (\\d+)"), timeout=5).group().startswith("tick ")
            assert s.console().startswith(b"Hello from virsim on mps2-an385\\ntick 1\\n")
            assert s.read_u32("tick_count") > 0
            stop = s.break_at("on_tick")
            assert stop.reason == "breakpoint" and stop.function == "on_tick"
            assert s.info.state == "paused"
            # compared while paused: a running tick may land between two reads
            assert s.read_memory(0x20000054, 4) == s.read_memory("tick_count")
            assert int(s.eval("n")) == s.read_u32("tick_count") == s.registers()["r0"]
            assert s.registers()["pc"] == stop.pc
            s.client.debug("delete", s.id, all=True)
            s.write_memory("tick_count", (1000).to_bytes(4, "little"))
            s.cont()
            s.expect("tick 1001")


        def test_paused_reset_and_expect_never_rematches(virsim_session):
            s = virsim_session(board="mps2-an385", firmware=HELLO, paused=True, name="quiet")
            assert s.info.name == "quiet" and s.info.state in ("created", "paused")
            s.resume()
            s.expect("Hello from virsim")
            s.expect("tick 1\\n")
            s.reset()
            s.expect("Hello from virsim")  # the greeting again, after the reset
            s.expect("tick 1\\n")
            s.pause()
            assert s.info.state == "paused"
    ''')
    result = run_inner(pytester)
    result.assert_outcomes(passed=2)


def test_expect_timeout_fails_with_the_console_excerpt(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(f'''
        from virsim.ci.pytest_plugin import VirsimExpectTimeout


        def test_waits_for_what_never_comes(virsim_session):
            s = virsim_session(board="mps2-an385", firmware={str(HELLO)!r})
            s.expect("tick 1")
            s.expect("PANIC: watchdog", timeout=1.5)


        def test_it_is_an_assertion_error():
            assert issubclass(VirsimExpectTimeout, AssertionError)
    ''')
    result = run_inner(pytester)
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "VirsimExpectTimeout" in out
    assert "/PANIC: watchdog/ not seen on the console within 1.5s of virtual time" in out
    assert "last 500 bytes of console" in out
    assert re.search(r"^E\s+Hello from virsim on mps2-an385$", out, re.M), out  # the excerpt
    assert re.search(r"^E\s+tick 2$", out, re.M), out
    assert re.search(r"virsim console [0-9a-f]+ \(last \d+ bytes\)", out), out  # the report section


def test_expect_returns_matches_as_pytest_embedded_does(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(f'''
        import re

        import pytest

        from virsim.ci.pytest_plugin import VirsimExpectFailed


        def test_patterns_and_groups(virsim_session):
            s = virsim_session(board="mps2-an385", firmware={str(HELLO)!r})
            m = s.expect(r"Hello from (\\w+) on ([\\w-]+)\\n")  # a str is a regex on the console's bytes
            assert isinstance(m, re.Match) and m.groups() == (b"virsim", b"mps2-an385")
            m = s.expect(b"tick (?P<n>[0-9]+)")
            assert m.group("n") == b"1" and int(m["n"]) == 1
            m = s.expect(re.compile(rb"tick ([0-9]+)\\n"))  # compiled bytes: as it is
            assert m.group(1) == b"2" and m.re.pattern == rb"tick ([0-9]+)\\n"
            m = s.expect(re.compile(r"tick (\\d+)"))  # compiled str: str groups
            assert m.group(1) == "3"
            # A list: the pattern whose match ends first wins, whatever its place in the list.
            panic = re.compile(rb"PANIC")
            m = s.expect([panic, r"tick 5", r"tick 4"])
            assert m.group() == b"tick 4" and m.re.pattern == b"tick 4"
            m = s.expect([panic, rb"tick (\\d)"])
            assert m.re.pattern == rb"tick (\\d)" and m.group(1) == b"5" and m.re is not panic
            # expect_exact: literal text; "x+y" as a regex would need "xy"
            s.send("x+y (z)\\n")
            m = s.expect_exact("echo: x+y (z)")
            assert m.group() == b"echo: x+y (z)"
            s.send("a.b\\n")
            assert s.expect_exact(["PANIC", b"echo: a.b"]).group() == b"echo: a.b"
            with pytest.raises(ValueError):
                s.expect([])


        def test_a_halted_session_fails_at_once(virsim_session):
            s = virsim_session(board="mps2-an385", firmware={str(HELLO)!r})
            assert s.break_at("on_tick").function == "on_tick"
            # virtual time stands still while halted: expect says so instead of waiting for the guard
            with pytest.raises(VirsimExpectFailed, match=r"the session is paused \\(breakpoint\\)"):
                s.expect("tick 99")
            s.client.debug("delete", s.id, all=True)
            s.cont()
            assert s.expect("tick 2").group() == b"tick 2"
            created = virsim_session(board="mps2-an385", firmware={str(HELLO)!r}, paused=True)
            with pytest.raises(VirsimExpectFailed, match="the session is (created|paused)"):
                created.expect("Hello")
    ''')
    pytester.makepyfile(test_ci_md_example=ci_md_plugin_example())
    run_inner(pytester).assert_outcomes(passed=3)


def ci_md_plugin_example() -> str:
    """The Python example of docs/ci.md's plugin section, with its firmware path made absolute."""
    section = (ROOT / "docs" / "ci.md").read_text().split("## The pytest plugin", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert '"../examples/hello/hello.elf"' in code and "import re" in code
    return code.replace('"../examples/hello/hello.elf"', repr(str(HELLO)))


def test_expect_timeouts_count_virtual_time_unless_told_wall(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(f'''
        import pytest

        from virsim.ci.pytest_plugin import VirsimExpectTimeout

        HELLO = {str(HELLO)!r}


        def test_virtual_by_default(virsim_session):
            # hello.elf prints "tick N" every 0.8 s of virtual time on QEMU (a counted busy loop of
            # 25 M instructions at 32 ns each): these outcomes hold however slow or loaded the host is.
            s = virsim_session(board="mps2-an385", firmware=HELLO)
            assert s.timeout_is == "virtual"
            s.expect("tick 3\\n", timeout=2.6)  # at ~2.41 s of virtual time, counted from the start
            before, position = s.clock().virtual_ns, s.position
            with pytest.raises(VirsimExpectTimeout, match="within 0.3s of virtual time"):
                s.expect("PANIC", timeout=0.3)
            assert s.clock().virtual_ns - before >= 300_000_000  # it waited 0.3 s of virtual time
            assert s.position == position  # a failed expect consumes nothing
            assert s.expect("tick 4\\n", timeout=1).start() == position


        @pytest.mark.virsim(timeout_is="wall")
        def test_marker_says_wall(virsim_session):
            s = virsim_session(board="mps2-an385", firmware=HELLO)
            assert s.timeout_is == "wall"
            with pytest.raises(VirsimExpectTimeout, match="within 0.2s of wall time"):
                s.expect("PANIC", timeout=0.2)


        def test_not_deterministic_means_wall(virsim_session):
            assert virsim_session(board="mps2-an385", firmware=HELLO, deterministic=False).timeout_is == "wall"


        def test_virtual_needs_a_deterministic_session(virsim_session):
            virsim_session(board="mps2-an385", firmware=HELLO, deterministic=False, timeout_is="virtual")
    ''')
    result = run_inner(pytester)
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*virsim_session: virtual-time timeouts need a deterministic session*"])

    # The ini value, and the option over it.
    pytester.makeini("[pytest]\nvirsim_timeout_is = wall\n")
    pytester.makepyfile(test_expect_timeouts_count_virtual_time_unless_told_wall=f'''
        def test_kind(virsim_session, pytestconfig):
            s = virsim_session(board="mps2-an385", firmware={str(HELLO)!r})
            assert s.info.deterministic
            assert s.timeout_is == (pytestconfig.getoption("virsim_timeout_is") or "wall")
            assert virsim_session(board="mps2-an385", firmware={str(HELLO)!r}, timeout_is="virtual"
                                  ).timeout_is == "virtual"
    ''')
    run_inner(pytester).assert_outcomes(passed=1)
    run_inner(pytester, "--virsim-timeout-is", "virtual").assert_outcomes(passed=1)


def test_ini_defaults_options_and_marker(pytester: pytest.Pytester) -> None:
    fw = pytester.path / "fw"
    fw.mkdir()
    shutil.copy(HELLO, fw / "hello.elf")
    pytester.makeconftest(CONFTEST)
    pytester.makeini("""
        [pytest]
        virsim_board = mps2-an385
        virsim_firmware = fw/hello.elf
    """)
    pytester.makepyfile(f'''
        import pytest


        def test_ini_defaults(virsim_session):
            s = virsim_session()
            assert s.info.board == "mps2-an385" and s.info.deterministic
            s.expect("Hello from virsim on mps2-an385")


        @pytest.mark.virsim(board="lm3s811evb", firmware={str(LM3S_HELLO)!r})
        def test_marker_overrides_the_ini(virsim_session):
            s = virsim_session(deterministic=False)
            assert s.info.board == "lm3s811evb" and not s.info.deterministic
            s.expect("Hello from virsim on lm3s811evb")


        @pytest.mark.virsim(board="lm3s811evb", firmware={str(LM3S_HELLO)!r})
        def test_arguments_override_the_marker(virsim_session):
            s = virsim_session(board="mps2-an385", firmware="fw/hello.elf")  # relative: the test file's dir
            s.expect("Hello from virsim on mps2-an385")


        def test_two_sessions_in_one_test(virsim_session):
            a, b = virsim_session(name="a"), virsim_session(name="b")
            assert a.id != b.id
            # (input sent before the firmware enables its UART receiver can stay stuck in QEMU:
            # wait for the greeting, printed after uart_init)
            a.expect("Hello from virsim")
            b.expect("Hello from virsim")
            a.send("one\\n")
            b.send("two\\n")
            assert b.expect("echo: two") and a.expect("echo: one")
            assert b"echo: two" not in a.console() and b"echo: one" not in b.console()
    ''')
    result = run_inner(pytester)
    result.assert_outcomes(passed=4)

    # Options beat the ini (its firmware does not even exist here).
    pytester.makeini("""
        [pytest]
        virsim_board = no-such-board
        virsim_firmware = missing.elf
    """)
    pytester.makepyfile(test_ini_defaults_options_and_marker='''
        def test_option_defaults(virsim_session):
            s = virsim_session()
            assert s.info.board == "mps2-an385" and s.info.backend == "qemu"
            s.expect("Hello from virsim on mps2-an385")
    ''')
    result = run_inner(pytester, "--virsim-board", "mps2-an385", "--virsim-firmware", "fw/hello.elf",
                       "--virsim-backend", "qemu")
    result.assert_outcomes(passed=1)

    # No board anywhere: a clear failure, not a crash.
    pytester.makeini("[pytest]\n")
    result = run_inner(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*virsim_session: no board*"])


def test_sessions_are_deleted_after_each_test_and_keep_keeps_them(pytester: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(f'''
        import pytest


        @pytest.mark.virsim(board="mps2-an385", firmware={str(HELLO)!r})
        @pytest.mark.parametrize("n", [1, 2])
        def test_one_session_each(virsim_session, virsim_daemon, pytestconfig, n):
            before = virsim_daemon.session_list()
            if not pytestconfig.getoption("virsim_keep"):
                assert before == []  # the previous test's session is gone
            virsim_session().expect("tick 1")
    ''')
    run_inner(pytester).assert_outcomes(passed=2)

    # --virsim-keep: the daemon, its home and the sessions outlive the run (for inspection).
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--virsim-keep", timeout=INNER_TIMEOUT)
    home = (pytester.path / "home.txt").read_text()
    try:
        result.assert_outcomes(passed=2)
        result.stdout.fnmatch_lines([f"*VIRSIM_HOME={home} virsim session list*"])
        monkeypatch.setenv("VIRSIM_HOME", home)
        client = Client(get_paths(), autostart=False, timeout=10).connect()
        sessions = client.session_list()
        assert len(sessions) == 2 and {s.state for s in sessions} == {"running"}
        client.stop_daemon()
    finally:
        for proc in psutil.process_iter(["pid", "environ"]):  # in case the checks above failed
            try:
                if (proc.info.get("environ") or {}).get("VIRSIM_HOME") == home:
                    proc.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        shutil.rmtree(home, ignore_errors=True)
    assert processes_of(home) == []
