"""Test fixtures: a real daemon in a private VIRSIM_HOME, the CLI as a subprocess, and a check that
every test leaves no daemon or emulator process behind.

Tools the tests need (qemu-system-arm, gdb-multiarch, arm-none-eabi-gcc) are skipped with a reason
when missing locally; with VIRSIM_NO_SKIP=1 (CI) a missing tool fails the test instead.

Waiting. The firmware is deterministic, the host is not: a wait for something the firmware does
(a console line, a breakpoint stop, a counter) is bounded by the firmware's own time and by
progress, never by a guess at how fast the host is — `wait_console`, `wait_state`, `debug_stop`
and, for anything else, `wait_progress`. A loaded host makes them slower, not fail: they fail when
the session's virtual clock passed their bound without it, when the emulator died, or when
nothing moved at all for STALL seconds. `wait_for` is for what the host itself times (a process
ending, a file appearing), with generous bounds.
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

from virsim import protocol as p
from virsim.client import Client, daemon_pid
from virsim.paths import get_paths

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples" / "hello" / "hello.elf"
HELLO_SYSTICK = ROOT / "examples" / "hello" / "hello-systick.elf"
LM3S_HELLO = ROOT / "examples" / "lm3s811evb" / "hello.elf"
LOCKUP = ROOT / "tests" / "firmware" / "lockup.elf"
JITTER = ROOT / "tests" / "firmware" / "jitter.elf"
GREETING = b"Hello from virsim on mps2-an385\n"
# s of host time a host-timed step (a CLI command, a daemon starting) may take before it counts as
# hung: one CLI command took 9-21 s here with the 2 cores loaded (load ~7); firmware waits have
# their own bounds (below), and `virsim run` bounds itself.
HOST_S = 300.0


def need_tool(name: str) -> None:
    if shutil.which(name) is None:
        if os.environ.get("VIRSIM_NO_SKIP"):
            pytest.fail(f"{name} is required (VIRSIM_NO_SKIP is set): run scripts/setup.sh")
        pytest.skip(f"{name} is not installed (scripts/setup.sh installs it)")


@pytest.fixture
def qemu() -> None:
    need_tool("qemu-system-arm")


@pytest.fixture
def renode() -> str:
    """The Renode launcher virsim finds. No package registry has Renode: where it is not installed
    the test is skipped with that reason, the one skip VIRSIM_NO_SKIP allows (docs/backends.md)."""
    from virsim.backends.renode import find_renode

    found = find_renode()
    if found is None:
        pytest.skip("Renode is not installed (no package registry has it: install it from the Renode project's "
                    "release packages, then `renode` on PATH or VIRSIM_RENODE=/path/to/renode)")
    return found


def chosen_backend(request: pytest.FixtureRequest) -> str:
    """A `backend` fixture's parameter, once the emulator it needs is here (Renode: or skipped)."""
    if request.param == "qemu":
        need_tool("qemu-system-arm")
    elif request.param == "renode":
        request.getfixturevalue("renode")
    return str(request.param)


@pytest.fixture(params=["qemu", "builtin"])
def backend(request: pytest.FixtureRequest) -> str:
    """Run the test on each backend that runs mps2-an385 (QEMU and the built-in engine); modules
    whose services Renode serves too override it with renode added (test_debug, test_supervision)."""
    return chosen_backend(request)


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
                 timeout: float = HOST_S) -> subprocess.CompletedProcess[str]:
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


def reverse_walk(cli: CLI, client: Client, sid: str) -> None:
    """On hello's on_tick(n): run to n=3, reverse-continue to n=2 and n=1 (each a breakpoint stop),
    reverse-stepi into main's call, stepi back to the same on_tick pc. Both backends must agree."""
    cli.json("debug", "break", sid, "on_tick")
    for _ in range(3):
        cli_debug_stop(cli, client, sid, "continue")
    assert cli.json("debug", "eval", sid, "n")["value"] == "3"
    for expected in ("2", "1"):
        stop = cli_debug_stop(cli, client, sid, "reverse-continue")["stop"]
        assert stop["reason"] == "breakpoint" and stop["function"] == "on_tick"
        assert cli.json("debug", "eval", sid, "n")["value"] == expected
    back = cli.json("debug", "reverse-stepi", sid)["stop"]
    assert back["function"] == "main"  # the instruction before on_tick's first is main's call
    fwd = cli.json("debug", "stepi", sid)["stop"]
    assert fwd["function"] == "on_tick" and fwd["pc"] == stop["pc"]


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds of host
    time. Only for what the host times (a process to exit, a file to appear): firmware events
    take wait_console, wait_state, debug_stop or wait_progress."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


# ---------------------------------------------------------------------------- firmware waits

STALL = 120.0  # s of host time in which nothing at all moved before a firmware wait gives up
VIRTUAL_S = 30.0  # s of the firmware's own time a firmware wait allows by default (hello: 30 ticks)
DEBUG_SLICE = 5.0  # s of host time of one `debug … --wait`; longer waits go on while the firmware runs
LIVE = ("created", "running", "paused")


def wait_progress(predicate: Callable[[], Any], *, progress: Callable[[], Any], stall: float = STALL,
                  interval: float = 0.05, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy (returned), for as long as what leads
    to it moves.

    `progress()` is read before each look at the predicate and returns anything that changes while
    the awaited condition can still come (console bytes, a virtual clock, a process's CPU time);
    the wait fails when it returned the same value for `stall` seconds of host time. It raises
    AssertionError when the condition can no longer come (the emulator died, a virtual-time bound
    passed): that fails the wait only if the predicate, looked at after it, is still false.
    """
    last: Any = object()
    since = time.monotonic()
    while True:
        try:
            mark, gone = progress(), None
        except AssertionError as err:
            mark, gone = last, err
        value = predicate()
        if value:
            return value
        if gone is not None:
            raise AssertionError(f"waiting for {what or predicate}: {gone}")
        now = time.monotonic()
        if mark != last:
            last, since = mark, now
        elif now - since > stall:
            raise AssertionError(f"waiting for {what or predicate}: nothing moved in {stall:g}s of host time "
                                 f"(still {mark!r})")
        time.sleep(interval)


def process_progress(pids: list[int], files: tuple[Path, ...] = (), *, cpu_s: float = VIRTUAL_S,
                     tree: bool = False, name: str = "") -> Callable[[], tuple[Any, ...]]:
    """What moves while processes work with no daemon to ask, for wait_progress: the sizes of
    `files` and the CPU time `pids` (with `tree`, their descendants too) used since this was made,
    in half seconds. Raises AssertionError once that is more than `cpu_s`: CPU time is the
    processes' own effort, which a loaded host slows down but does not inflate."""
    first: dict[int, float] = {}  # CPU time at the first look: what was used before does not count
    last: dict[int, float] = {}  # at the latest look: a process that ended keeps what it used

    def mark() -> tuple[Any, ...]:
        now = {}
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                for one in [proc, *(proc.children(recursive=True) if tree else [])]:
                    t = one.cpu_times()
                    now[one.pid] = t.user + t.system
            except psutil.NoSuchProcess:
                continue
        for pid, cpu in now.items():
            first.setdefault(pid, cpu if not last else 0.0)  # one started meanwhile: all it used counts
        last.update(now)
        used = sum(last[pid] - first[pid] for pid in last)
        if used > cpu_s:
            raise AssertionError(f"{name or f'processes {pids}'} used {used:.2f}s of CPU time, more than the "
                                 f"{cpu_s:g}s allowed")
        return tuple(f.stat().st_size if f.exists() else None for f in files), int(used * 2)
    mark()
    return mark


def session_progress(client: Client, session: str, *, virtual_s: float = VIRTUAL_S) -> Callable[[], tuple[Any, ...]]:
    """What moves while `session`'s firmware runs, for wait_progress: its state, console size and
    clock (virtual time, instructions); for a session without a clock (QEMU, not deterministic)
    its emulator's CPU time instead.

    Raises AssertionError once the emulator is gone (the session failed, stopped or was lost), or
    once the session's virtual clock is `virtual_s` seconds past where it was at the first call: a
    deterministic firmware that was going to do it has done it by then. Without a clock, the
    emulator's CPU time stands in for the firmware's time (QEMU without icount runs the firmware
    many times faster than the board would: hello's tick takes it ~0.05 s of CPU, not 1 s).
    """
    start: list[float] = []
    emulators: dict[tuple[int, ...], Callable[[], tuple[Any, ...]]] = {}

    def mark() -> tuple[Any, ...]:
        info = client.session("show", session)
        if info.state not in LIVE:
            tail = " ".join((info.stderr_tail or "").split())
            raise AssertionError(f"session {info.id} is {info.state}: {info.error or 'no error'}"
                                 + (f"; its stderr ends: {tail[-200:]}" if tail else ""))
        moved: tuple[Any, ...] = (info.state, info.console_bytes, info.virtual_ns, info.instructions)
        if info.virtual_ns is None:
            pids = tuple(n["pid"] for n in info.nodes if n.get("pid")) or ((info.pid,) if info.pid else ())
            if pids not in emulators:  # a new emulator (power-on) gets its own budget
                emulators[pids] = process_progress(list(pids), cpu_s=virtual_s,
                                                   name=f"the emulator of session {info.id} (it has no virtual clock)")
            return moved + emulators[pids]()
        if not start:
            start.append(info.virtual_ns / 1e9)
        ran = info.virtual_ns / 1e9 - start[0]
        if ran > virtual_s:
            raise AssertionError(f"session {info.id} ran {ran:.2f}s of virtual time, more than the {virtual_s:g}s "
                                 "allowed")
        return moved
    return mark


def wait_console(client: Client, session: str, text: bytes, *, virtual_s: float = VIRTUAL_S,
                 stall: float = STALL) -> bytes:
    """Wait until `text` is on `session`'s console (within `virtual_s` seconds of the firmware's
    time from now, see session_progress); the console then."""
    def seen() -> bytes:
        console = client.console_text(session)
        return console if text in console else b""
    try:
        return wait_progress(seen, progress=session_progress(client, session, virtual_s=virtual_s), stall=stall,
                             what=repr(text))
    except AssertionError as err:
        raise AssertionError(f"{err}\nconsole tail: {client.console_text(session)[-300:]!r}") from None


def wait_state(client: Client, session: str, state: str, *, virtual_s: float = VIRTUAL_S,
               stall: float = STALL) -> p.SessionInfo:
    """Wait until the firmware brings `session` to `state` (paused at a breakpoint, failed at a
    lockup, stopped at a replay's end); its `session show` then."""
    def reached() -> p.SessionInfo | None:
        info = client.session("show", session)
        return info if info.state == state else None
    return wait_progress(reached, progress=session_progress(client, session, virtual_s=virtual_s), stall=stall,
                         what=f"session {session} to be {state}")


def _stops(client: Client, session: str) -> int:
    stop = client.session("show", session).stop
    return stop.seq if stop is not None else 0


def _next_stop(client: Client, session: str, after: int, virtual_s: float, stall: float) -> p.DebugRunReply:
    """The debugger's first stop of `session` numbered past `after` (a stop's seq counts them)."""
    def stopped() -> p.StopInfo | None:
        stop = client.session("show", session).stop
        return stop if stop is not None and stop.seq > after else None
    stop = wait_progress(stopped, progress=session_progress(client, session, virtual_s=virtual_s), stall=stall,
                         what=f"the debugger to stop session {session}")
    return p.DebugRunReply(session=stop.session, state="stopped", stop=stop)


def debug_stop(client: Client, session: str, action: str = "continue", *, virtual_s: float = VIRTUAL_S,
               stall: float = STALL, **fields: Any) -> p.DebugRunReply:
    """`debug continue --wait` (or a step, `action="step", kind=…`) until the target stops; the
    reply. The daemon waits DEBUG_SLICE seconds; a longer wait goes on while the firmware runs
    (bounded like wait_console), and the stop is then read from `session show`."""
    after = _stops(client, session)
    extra = {"wait": True} if action == "continue" else {}
    reply = client.debug(action, session, timeout=DEBUG_SLICE, **extra, **fields)
    return _next_stop(client, session, after, virtual_s, stall) if reply.timed_out else reply


def cli_debug_stop(cli: CLI, client: Client, session: str, action: str, *args: str,
                   virtual_s: float = VIRTUAL_S, stall: float = STALL) -> Any:
    """`virsim debug ACTION SESSION ARGS --json` for a command that waits for a stop (continue
    --wait, the steps): its JSON reply. As debug_stop: a wait longer than DEBUG_SLICE (the CLI
    then exits 42) goes on while the firmware runs."""
    after = _stops(client, session)
    wait = ["--wait"] if action == "continue" else []
    doc = cli.json("debug", action, session, *args, *wait, "--timeout", f"{DEBUG_SLICE:g}s", check=False)
    if doc.get("code") != "TIMEOUT":
        assert "stop" in doc, doc
        return doc
    return _next_stop(client, session, after, virtual_s, stall).model_dump(mode="json")
