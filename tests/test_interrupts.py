"""Nothing is left behind, whatever ends a `virsim run`: SIGINT and SIGTERM (a cancelled CI job)
clean up and exit 130/143 with the serial log and an `interrupted` JUnit report; SIGKILL leaves
nothing running either (the run's private daemon watches its owner through a lifeline and takes
its emulators with it). Each signal is sent at three moments: while the run's daemon starts, while
the emulator starts, and mid-run. Afterwards the process table is walked for anything of the run
(its home lives in the test's TMPDIR), not just for the pids the test knows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from conftest import HELLO, ROOT, need_tool, wait_for


def run_processes(tmpdir: Path) -> list[psutil.Process]:
    """Processes that belong to a run whose home is under `tmpdir`."""
    marker = str(tmpdir) + os.sep
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "environ", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(proc.info.get("cmdline") or [])
            env = proc.info.get("environ") or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if marker in cmd or env.get("VIRSIM_HOME", "").startswith(marker):
            found.append(proc)
    return found


@pytest.fixture
def tmpdir_() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vt-", dir="/tmp"))
    yield path
    for proc in run_processes(path):  # never leave a stray behind, even when the test fails
        proc.kill()
    subprocess.run(["rm", "-rf", str(path)], check=False)


def start_run(tmpdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    env.pop("VIRSIM_HOME", None)
    return subprocess.Popen([sys.executable, "-m", "virsim", "run", str(HELLO), "-e", "tick 999", "--timeout", "1000s",
                             "--junit", str(tmpdir / "junit.xml"), "--serial-log", str(tmpdir / "serial.log"), *extra],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def daemon_starting(tmpdir: Path) -> Callable[[], bool]:
    return lambda: any("virsim.daemon" in " ".join(p.info.get("cmdline") or []) for p in run_processes(tmpdir))


def emulator_starting(tmpdir: Path) -> Callable[[], bool]:
    return lambda: any("qemu-system" in " ".join(p.info.get("cmdline") or []) for p in run_processes(tmpdir))


def console_shows(proc: subprocess.Popen[bytes], text: bytes) -> Callable[[], bool]:
    seen = bytearray()
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)

    def check() -> bool:
        try:
            seen.extend(proc.stdout.read() or b"")  # type: ignore[union-attr]
        except BlockingIOError:
            pass
        return text in seen
    return check


MOMENTS = {"daemon-start": daemon_starting, "emulator-start": emulator_starting,
           "mid-run": lambda tmpdir: None}


@pytest.mark.parametrize("moment", list(MOMENTS))
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_a_signal_leaves_nothing_running(tmpdir_: Path, moment: str, sig: signal.Signals) -> None:
    need_tool("qemu-system-arm")
    proc = start_run(tmpdir_)
    ready = MOMENTS[moment](tmpdir_) or console_shows(proc, b"Hello from virsim")
    wait_for(lambda: ready() or proc.poll() is not None, timeout=120, interval=0.002, what=moment)
    assert proc.poll() is None, f"the run ended before {moment}: {proc.communicate()}"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 128 + sig, (stdout, stderr)
        assert b"interrupted" in stderr
        junit = (tmpdir_ / "junit.xml").read_text()
        assert 'type="interrupted"' in junit and f"interrupted by {sig.name}" in junit
        assert (tmpdir_ / "serial.log").exists()
        if moment == "mid-run":
            assert b"Hello from virsim" in (tmpdir_ / "serial.log").read_bytes()
    # The kernel closed the lifeline of a killed run: its daemon stops itself, emulator included.
    wait_for(lambda: not run_processes(tmpdir_), timeout=30, what="the run's processes to end")
    wait_for(lambda: not list(tmpdir_.glob("vsr-*")), timeout=10, what="the run's home to be removed")


def test_interrupt_during_a_builtin_run(tmpdir_: Path) -> None:
    proc = start_run(tmpdir_, "--backend", "builtin")
    ready = console_shows(proc, b"Hello from virsim")
    wait_for(lambda: ready() or proc.poll() is not None, timeout=120, interval=0.005, what="the greeting")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert not run_processes(tmpdir_)


def test_a_killed_private_daemon_takes_its_emulators_along(tmpdir_: Path) -> None:
    """Killing the run *and* its daemon (a CI runner that kills every process it finds) must not
    orphan the emulator: a private daemon's emulators carry PR_SET_PDEATHSIG."""
    need_tool("qemu-system-arm")
    proc = start_run(tmpdir_)
    ready = console_shows(proc, b"Hello from virsim")
    wait_for(lambda: ready() or proc.poll() is not None, timeout=120, interval=0.005, what="the greeting")
    daemons = [p for p in run_processes(tmpdir_) if "virsim.daemon" in " ".join(p.cmdline())]
    assert daemons
    for p in daemons:
        p.kill()
    proc.kill()
    proc.communicate(timeout=30)
    wait_for(lambda: not run_processes(tmpdir_), timeout=30, what="the emulator to die with its daemon")


def test_the_first_signal_is_never_lost_to_a_second(tmpdir_: Path) -> None:
    """A second Ctrl-C while the run cleans up does not cut the clean-up short."""
    need_tool("qemu-system-arm")
    proc = start_run(tmpdir_)
    ready = console_shows(proc, b"Hello from virsim")
    wait_for(lambda: ready() or proc.poll() is not None, timeout=120, interval=0.005, what="the greeting")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)  # lands during the clean-up (or after it): either way nothing may be left
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    wait_for(lambda: not run_processes(tmpdir_), timeout=30, what="the run's processes to end")


def test_the_pytest_plugins_daemon_dies_with_a_killed_pytest(tmpdir_: Path) -> None:
    """The plugin's private daemon has the same lifeline: SIGKILL of pytest mid-test leaves nothing."""
    need_tool("qemu-system-arm")
    test = tmpdir_ / "test_forever.py"
    test.write_text(f"""
import time

def test_forever(virsim_session):
    virsim_session(board="mps2-an385", firmware={str(HELLO)!r}, backend="qemu")
    time.sleep(600)
""")
    env = {**os.environ, "TMPDIR": str(tmpdir_)}
    env.pop("VIRSIM_HOME", None)
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
                            cwd=tmpdir_, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: emulator_starting(tmpdir_)() or proc.poll() is not None, timeout=120, interval=0.05,
                 what="the plugin's QEMU")
        assert proc.poll() is None, "pytest ended before its session ran"
    finally:
        proc.kill()
        proc.wait()
    wait_for(lambda: not run_processes(tmpdir_), timeout=30, what="the plugin's daemon and QEMU to end")
    wait_for(lambda: not list(tmpdir_.glob("vsp-*")), timeout=10, what="the plugin's home to be removed")
