"""A pytest plugin: test firmware on virsim sessions from pytest (as pytest-embedded users do).

What this module owns, and nothing more (everything else is virsim.client and the daemon):
  * the `--virsim-*` options and `virsim_*` ini values, and the `virsim` marker;
  * `virsim_daemon` (session scope): a private daemon in a fresh, short VIRSIM_HOME
    (/tmp/vsp-XXXX) for the whole pytest run, stopped at the end so no daemon, emulator or gdb of
    it is left running (with --virsim-keep it, its home and its sessions are kept for inspection);
  * `virsim_session`: a factory of `VirsimSession`s, each deleted (purged) when its test ends;
  * `VirsimSession`: ordered console expectations tracked by console byte offset (an expect
    never re-matches output an earlier expect consumed), console input, and thin debug helpers;
  * on a failed test, the tail of each of its sessions' consoles as a report section.

Installed virsim registers it through the `pytest11` entry point `virsim = "virsim.ci.pytest_plugin"`
(disable with `-p no:virsim`). Without that entry point, load it with `-p virsim.ci.pytest_plugin`
or `pytest_plugins = ["virsim.ci.pytest_plugin"]` in a conftest.py, but not both ways at once:
pytest refuses to register one module twice.

Default resolution for a session's board and firmware: the factory's argument, then the test's
`@pytest.mark.virsim(board=..., firmware=...)`, then `--virsim-board/--virsim-firmware`, then the
ini values. Relative paths are taken from where they were written: factory and marker arguments
from the test file's directory, options from the invocation directory, ini values from the ini
file's directory. Board names (e.g. mps2-an385) are passed as they are.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, Protocol

import psutil
import pytest

from virsim import protocol as p
from virsim.client import Client, Subscription, daemon_pid
from virsim.errors import InvalidState
from virsim.paths import get_paths

__all__ = ["VirsimExpectTimeout", "VirsimSession", "SessionFactory"]

EXCERPT_BYTES = 500  # console bytes quoted in an expect timeout
REPORT_BYTES = 4096  # console bytes attached to a failed test's report, per session
_WAKE = 0.2  # longest wait between console reads while expecting (events usually wake us sooner)
_SESSIONS = pytest.StashKey[list["VirsimSession"]]()
_HOME = pytest.StashKey[Path]()
# the marker's arguments: defaults for the factory's board and firmware, and create options
_MARKER_KEYS = frozenset({"board", "firmware", "backend", "firmware_format", "load_address"})

Pattern = str | bytes | re.Pattern[str] | re.Pattern[bytes]


class VirsimExpectTimeout(AssertionError):
    """An expectation (console text, or a breakpoint in break_at) was not met in time."""


def _tail(data: bytes, n: int) -> str:
    return data[-n:].decode("latin-1")


class VirsimSession:
    """One virsim session in a test: console expectations, input, and debug helpers.

    `expect()` searches only the console output after the end of the previous expect's match
    (tracked as a byte offset in the session's console log), so expectations are ordered and
    never match old output twice.
    """

    def __init__(self, client: Client, info: p.SessionInfo) -> None:
        self.client = client
        self.id: str = info.id
        self._info = info
        self.position = 0  # console offset just after the previous expect's match
        self._sub: Subscription | None = None

    def __repr__(self) -> str:
        return f"<VirsimSession {self.id} {self._info.name!r} on {self._info.board}>"

    # ----------------------------------------------------------------------------------- state

    @property
    def info(self) -> p.SessionInfo:
        """The session's current info (state, pid, endpoints, last stop, ...) from the daemon."""
        self._info = self.client.session("show", self.id)
        return self._info

    def pause(self) -> p.SessionInfo:
        self._info = self.client.session("pause", self.id)
        return self._info

    def resume(self) -> p.SessionInfo:
        self._info = self.client.session("resume", self.id)
        return self._info

    def reset(self) -> p.SessionInfo:
        """Reset the CPU. The console log goes on, so expect() continues after its last match."""
        self._info = self.client.session("reset", self.id)
        return self._info

    # --------------------------------------------------------------------------------- console

    def console(self) -> bytes:
        """All console output so far."""
        return self.client.console_text(self.id)

    def send(self, text: str | bytes) -> int:
        """Send bytes to the UART; a str is encoded latin-1 as it is (no escape processing)."""
        data = text.encode("latin-1") if isinstance(text, str) else bytes(text)
        return self.client.console_send(self.id, data).sent

    def expect(self, text: Pattern, timeout: float = 10.0) -> str:
        """Wait until the console output after the previous match contains `text` (a string or a
        compiled regex); return the matched text. Raises VirsimExpectTimeout after `timeout` s."""
        deadline = time.monotonic() + timeout
        buf = b""  # the console log from self.position on
        while True:
            buf = self._read_more(buf)
            found = _search(text, buf)
            if found is not None:
                start, end = found
                self.position += end
                return buf[start:end].decode("latin-1")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                shown = text.pattern if isinstance(text, re.Pattern) else text
                kind = "regex" if isinstance(text, re.Pattern) else "text"
                raise VirsimExpectTimeout(
                    f"session {self.id}: {kind} {shown!r} not seen on the console within {timeout:g}s "
                    f"(searched from console offset {self.position}); last {EXCERPT_BYTES} bytes of console:\n"
                    f"{_tail(self.console(), EXCERPT_BYTES)}")
            self._wait_output(min(remaining, _WAKE))

    def _read_more(self, buf: bytes) -> bytes:
        """`buf` (the log from self.position) extended with everything logged since."""
        while True:
            chunk = self.client.console_read(self.id, offset=self.position + len(buf))
            data = chunk.data.encode("latin-1")
            buf += data
            if not data or chunk.end >= chunk.size:
                return buf

    def _wait_output(self, timeout: float) -> None:
        """Sleep until the daemon publishes an event for this session (or `timeout`)."""
        if self._sub is None:
            self._sub = self.client.subscribe(self.id)
        if self._sub.recv(timeout) is not None:
            while self._sub.recv(0) is not None:  # drain: the log is read by offset anyway
                pass

    # ----------------------------------------------------------------------------------- debug

    def read_memory(self, address: int | str, size: int | None = None) -> bytes:
        """Bytes at an address or symbol (default size: the symbol's, else 64); works while running."""
        chunk: p.MemoryChunk = self.client.debug("mem", self.id, address=_addr(address), size=size, peek=True)
        return bytes.fromhex(chunk.data)

    def read_u32(self, address: int | str) -> int:
        """A little-endian 32-bit word at an address or symbol."""
        return int.from_bytes(self.read_memory(address, 4), "little")

    def write_memory(self, address: int | str, data: bytes) -> None:
        """Write bytes at an address or symbol. debug.mem_write needs a halted target, so a
        running session is paused for the write and resumed after it."""
        try:
            self.client.debug("mem_write", self.id, address=_addr(address), data=bytes(data).hex())
        except InvalidState:
            if self.info.state != "running":
                raise
            self.pause()
            try:
                self.client.debug("mem_write", self.id, address=_addr(address), data=bytes(data).hex())
            finally:
                self.resume()

    def break_at(self, location: str, timeout: float = 10.0) -> p.StopInfo:
        """Set a breakpoint at `location`, continue, and return the stop (whatever stopped the
        target first). The breakpoint is kept; the target stays stopped."""
        self.client.debug("break", self.id, location=location)
        reply: p.DebugRunReply = self.client.debug("continue", self.id, wait=True, timeout=timeout)
        if reply.stop is None or reply.timed_out:
            raise VirsimExpectTimeout(
                f"session {self.id}: breakpoint at {location!r} not hit within {timeout:g}s; "
                f"last {EXCERPT_BYTES} bytes of console:\n{_tail(self.console(), EXCERPT_BYTES)}")
        return reply.stop

    def cont(self) -> p.DebugRunReply:
        """Continue a target stopped under the debugger (without waiting for the next stop)."""
        reply: p.DebugRunReply = self.client.debug("continue", self.id)
        return reply

    def registers(self) -> dict[str, int]:
        """The general registers by name (read with peek: a running target keeps running)."""
        regs: p.RegisterList = self.client.debug("regs", self.id, scope="general", peek=True)
        return {r.name: r.value for r in regs.registers}

    def eval(self, expression: str) -> str:
        """An expression evaluated by gdb in the program's terms, as gdb prints it."""
        reply: p.EvalReply = self.client.debug("eval", self.id, expression=expression, peek=True)
        return reply.value

    # -------------------------------------------------------------------------------- lifetime

    def close(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    def delete(self) -> None:
        """Delete the session and its artifacts (the factory does this when the test ends)."""
        self.close()
        self.client.session_delete(self.id, purge=True)


def _addr(address: int | str) -> str:
    return f"{address:#x}" if isinstance(address, int) else address


def _search(pattern: Pattern, data: bytes) -> tuple[int, int] | None:
    if isinstance(pattern, re.Pattern):
        m = pattern.search(data.decode("latin-1") if isinstance(pattern.pattern, str) else data)  # type: ignore[arg-type]
        return (m.start(), m.end()) if m else None
    needle = pattern.encode("latin-1") if isinstance(pattern, str) else pattern
    i = data.find(needle)
    return (i, i + len(needle)) if i >= 0 else None


# ------------------------------------------------------------------------------------ pytest glue


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("virsim", "virsim firmware sessions")
    group.addoption("--virsim-board", default=None, help="default board (template name or board file)")
    group.addoption("--virsim-firmware", default=None, help="default firmware image")
    group.addoption("--virsim-backend", default=None, help="override the board's emulator backend")
    group.addoption("--virsim-keep", action="store_true", default=False,
                    help="keep the daemon, its VIRSIM_HOME and every session after the run (to inspect)")
    parser.addini("virsim_board", "default board for virsim_session (template name or board file)")
    parser.addini("virsim_firmware", "default firmware image for virsim_session")
    parser.addini("virsim_backend", "override the board's emulator backend for virsim_session")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "virsim(board=None, firmware=None, backend=None, firmware_format=None, "
                                       "load_address=None): defaults for the sessions virsim_session creates "
                                       "in this test")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    home = config.stash.get(_HOME, None)
    if home is not None and config.getoption("virsim_keep"):
        terminalreporter.write_line(f"virsim: kept the daemon and sessions; inspect with: "
                                    f"VIRSIM_HOME={home} virsim session list (stop: virsim daemon stop)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                               ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for session in item.stash.get(_SESSIONS, []):
            try:
                text = _tail(session.console(), REPORT_BYTES)
            except Exception as err:  # the daemon may be what failed
                text = f"(console unavailable: {err})"
            report.sections.append((f"virsim console {session.id} (last {REPORT_BYTES} bytes)", text))
    return report


def _looks_like_path(value: str) -> bool:
    return os.sep in value or Path(value).suffix in (".yaml", ".yml", ".json", ".elf", ".bin", ".hex")


def _anchor(value: str | os.PathLike[str] | None, base: Path, board: bool = False) -> str | None:
    """A relative path made absolute against `base`; board names are left alone."""
    if value is None or value == "":
        return None
    text = os.fspath(value)
    if board and not _looks_like_path(text):
        return text
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _defaults(config: pytest.Config) -> dict[str, str | None]:
    """Board, firmware and backend from the options, else from the ini file."""
    cwd = Path(config.invocation_params.dir)
    ini_dir = config.inipath.parent if config.inipath else config.rootpath
    out: dict[str, str | None] = {}
    for key in ("board", "firmware", "backend"):
        opt = config.getoption(f"virsim_{key}")
        ini = str(config.getini(f"virsim_{key}") or "")
        if key == "backend":
            out[key] = opt or ini or None
        else:
            out[key] = _anchor(opt, cwd, board=key == "board") or _anchor(ini, ini_dir, board=key == "board")
    return out


def _kill_leftovers(home: Path) -> list[str]:
    """Kill processes of this plugin's VIRSIM_HOME still running (a daemon that did not stop)."""
    killed = []
    marker = str(home)
    for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
        try:
            if proc.pid == os.getpid():
                continue
            cmd = " ".join(proc.info.get("cmdline") or [])
            env = proc.info.get("environ") or {}
            if marker in cmd or env.get("VIRSIM_HOME") == marker:
                proc.kill()
                killed.append(cmd or str(proc.pid))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return killed


@pytest.fixture(scope="session")
def virsim_daemon(pytestconfig: pytest.Config) -> Iterator[Client]:
    """A connected Client of a private daemon (in a fresh VIRSIM_HOME) for the whole run."""
    keep = bool(pytestconfig.getoption("virsim_keep"))
    home = Path(tempfile.mkdtemp(prefix="vsp-", dir="/tmp"))
    pytestconfig.stash[_HOME] = home
    saved = os.environ.get("VIRSIM_HOME")
    os.environ["VIRSIM_HOME"] = str(home)
    # The daemon dies with this pytest process, however it ends (SIGKILL included: virsim.private),
    # unless it is to be kept for inspection.
    client = Client(get_paths(), lifeline=not keep)
    try:
        client.connect()
        yield client
    finally:
        problem: Exception | None = None
        killed: list[str] = []
        if not keep:
            try:
                if daemon_pid(client.paths) is not None:
                    client.stop_daemon()
            except Exception as err:  # stop it the hard way, below
                problem = err
            client.close()
            killed = _kill_leftovers(home)
            shutil.rmtree(home, ignore_errors=True)
        else:
            client.close()
        if saved is None:
            os.environ.pop("VIRSIM_HOME", None)
        else:
            os.environ["VIRSIM_HOME"] = saved
        if not keep and (problem is not None or killed):
            raise RuntimeError(f"the virsim daemon of {home} did not stop cleanly ({problem}); "
                               f"killed: {killed}")


class SessionFactory(Protocol):
    def __call__(self, board: str | None = None, firmware: str | os.PathLike[str] | None = None,
                 deterministic: bool = True, paused: bool = False, name: str | None = None,
                 **options: Any) -> VirsimSession: ...


@pytest.fixture
def virsim_session(request: pytest.FixtureRequest, virsim_daemon: Client) -> Iterator[SessionFactory]:
    """A factory of sessions: `virsim_session(board=None, firmware=None, deterministic=True,
    paused=False, name=None, **create_options) -> VirsimSession`; each is purged when the test ends."""
    config = request.config
    defaults = _defaults(config)
    marker = request.node.get_closest_marker("virsim")
    marked: dict[str, Any] = dict(marker.kwargs) if marker else {}
    unknown = set(marked) - _MARKER_KEYS
    if unknown:
        pytest.fail(f"@pytest.mark.virsim: unknown argument(s) {sorted(unknown)}; known: {sorted(_MARKER_KEYS)}",
                    pytrace=False)
    test_dir = request.path.parent
    sessions: list[VirsimSession] = []
    request.node.stash[_SESSIONS] = sessions

    def create(board: str | None = None, firmware: str | os.PathLike[str] | None = None,
               deterministic: bool = True, paused: bool = False, name: str | None = None,
               **options: Any) -> VirsimSession:
        board_ref = (_anchor(board, test_dir, board=True) or _anchor(marked.get("board"), test_dir, board=True)
                     or defaults["board"])
        if board_ref is None:
            pytest.fail("virsim_session: no board: pass board=..., mark the test @pytest.mark.virsim(board=...), "
                        "or set --virsim-board / the virsim_board ini value", pytrace=False)
        image = _anchor(firmware, test_dir) or _anchor(marked.get("firmware"), test_dir) or defaults["firmware"]
        opts = {"backend": defaults["backend"],
                **{k: v for k, v in marked.items() if k not in ("board", "firmware")}, **options}
        info = virsim_daemon.session_create(board_ref, image, deterministic=deterministic, paused=paused,
                                            name=name, **opts)
        session = VirsimSession(virsim_daemon, info)
        sessions.append(session)
        return session

    yield create

    if config.getoption("virsim_keep"):
        for session in sessions:
            session.close()
        return
    errors = []
    for session in sessions:
        try:
            session.delete()
        except Exception as err:  # delete the others anyway
            errors.append(f"{session.id}: {err}")
    if errors:
        raise RuntimeError(f"virsim: could not delete sessions: {'; '.join(errors)}")

