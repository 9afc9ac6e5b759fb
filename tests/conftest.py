"""Test fixtures: a real daemon in a private VIRSIM_HOME, the CLI as a subprocess, and a check that
every test leaves no daemon or emulator process behind.

Tools the tests need (qemu-system-arm, gdb-multiarch, arm-none-eabi-gcc) are skipped with a reason
when missing locally; with VIRSIM_NO_SKIP=1 (CI) a missing tool fails the test instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from virsim.client import Client, daemon_pid
from virsim.paths import get_paths

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples" / "hello" / "hello.elf"
HELLO_SYSTICK = ROOT / "examples" / "hello" / "hello-systick.elf"
LM3S_HELLO = ROOT / "examples" / "lm3s811evb" / "hello.elf"
LOCKUP = ROOT / "tests" / "firmware" / "lockup.elf"
JITTER = ROOT / "tests" / "firmware" / "jitter.elf"
GREETING = b"Hello from virsim on mps2-an385\n"


def need_tool(name: str) -> None:
    if shutil.which(name) is None:
        if os.environ.get("VIRSIM_NO_SKIP"):
            pytest.fail(f"{name} is required (VIRSIM_NO_SKIP is set): run scripts/setup.sh")
        pytest.skip(f"{name} is not installed (scripts/setup.sh installs it)")


@pytest.fixture
def qemu() -> None:
    need_tool("qemu-system-arm")


@pytest.fixture(params=["qemu", "builtin"])
def backend(request: pytest.FixtureRequest) -> str:
    """Run the test on each backend that runs mps2-an385 (QEMU and the built-in engine)."""
    if request.param == "qemu":
        need_tool("qemu-system-arm")
    return str(request.param)


def processes_using(home: Path) -> list[psutil.Process]:
    marker = str(home)
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
        try:
            cmd = " ".join(proc.info.get("cmdline") or [])
            env = proc.info.get("environ") or {}
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if marker in cmd or env.get("VIRSIM_HOME") == marker:
            found.append(proc)
    return found


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private VIRSIM_HOME (short, for Unix socket paths); afterwards, nothing of it may run."""
    path = Path(tempfile.mkdtemp(prefix="vs-", dir="/tmp"))
    monkeypatch.setenv("VIRSIM_HOME", str(path))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    yield path
    paths = get_paths()
    if daemon_pid(paths) is not None:
        try:
            Client(paths, autostart=False, timeout=10).connect().stop_daemon()
        except Exception:  # reported below as left-over processes
            pass
    leftovers = processes_using(path)
    for proc in leftovers:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    shutil.rmtree(path, ignore_errors=True)
    assert not leftovers, f"processes left behind: {[' '.join(p.info['cmdline'] or []) for p in leftovers]}"


@pytest.fixture
def client(home: Path) -> Iterator[Client]:
    c = Client(get_paths(), timeout=30).connect()
    yield c
    c.close()


class CLI:
    """Runs `virsim` as a subprocess (what a user types), in the test's VIRSIM_HOME."""

    def __init__(self, home: Path) -> None:
        self.env = {**os.environ, "VIRSIM_HOME": str(home)}
        self.env.pop("XDG_RUNTIME_DIR", None)

    def __call__(self, *args: str, check: bool | int = True, input: bytes | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "virsim", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, cwd=ROOT, input=input.decode() if input else None)
        expected = 0 if check is True else check
        if check is not False and proc.returncode != expected:
            raise AssertionError(f"virsim {' '.join(args)} exited {proc.returncode}, expected {expected}\n"
                                 f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
        return proc

    def json(self, *args: str, check: bool | int = True) -> Any:
        proc = self(*args, "--json", check=check)
        return json.loads(proc.stdout)


@pytest.fixture
def cli(home: Path) -> CLI:
    return CLI(home)


def reverse_walk(cli: CLI, sid: str, timeout: str) -> None:
    """On hello's on_tick(n): run to n=3, reverse-continue to n=2 and n=1 (each a breakpoint stop),
    reverse-stepi into main's call, stepi back to the same on_tick pc. Both backends must agree."""
    cli.json("debug", "break", sid, "on_tick")
    for _ in range(3):
        cli.json("debug", "continue", sid, "--wait", "--timeout", timeout)
    assert cli.json("debug", "eval", sid, "n")["value"] == "3"
    for expected in ("2", "1"):
        stop = cli.json("debug", "reverse-continue", sid, "--timeout", timeout)["stop"]
        assert stop["reason"] == "breakpoint" and stop["function"] == "on_tick"
        assert cli.json("debug", "eval", sid, "n")["value"] == expected
    back = cli.json("debug", "reverse-stepi", sid)["stop"]
    assert back["function"] == "main"  # the instruction before on_tick's first is main's call
    fwd = cli.json("debug", "stepi", sid)["stop"]
    assert fwd["function"] == "on_tick" and fwd["pc"] == stop["pc"]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def console_contains(client: Client, session: str, text: bytes) -> Callable[[], bool]:
    return lambda: text in client.console_text(session)
