"""A pytest plugin: test firmware on virsim sessions from pytest (as pytest-embedded users do).

What this module owns, and nothing more (everything else is virsim.client and the daemon):
  * the `--virsim-*` options and `virsim_*` ini values, and the `virsim` marker;
  * `virsim_daemon` (session scope): a private daemon in a fresh, short VIRSIM_HOME
    (/tmp/vsp-XXXX) for the whole pytest run, stopped at the end so no daemon, emulator or gdb of
    it is left running (with --virsim-keep it, its home and its sessions are kept for inspection);
  * `virsim_session`: a factory of `VirsimSession`s, each deleted (purged) when its test ends;
  * `VirsimSession`: ordered console expectations tracked by console byte offset (an expect
    never re-matches output an earlier expect consumed) that return `re.Match`es as
    pytest-embedded's `dut.expect` does, console input, and thin debug helpers;
  * expect timeouts in the session's virtual time (deterministic sessions; `--virsim-timeout-is`,
    the `virsim_timeout_is` ini value, the marker's or the factory's `timeout_is` choose wall
    time), with `virsim run`'s wall-clock guard; the console and the clock are read by
    `virsim.ci.runner.Monitor`, as `virsim run` reads them;
  * on a failed test, the tail of each of its sessions' consoles as a report section.

Installed virsim registers it through the `pytest11` entry point `virsim = "virsim.ci.pytest_plugin"`
(disable with `-p no:virsim`). Without that entry point, load it with `-p virsim.ci.pytest_plugin`
or `pytest_plugins = ["virsim.ci.pytest_plugin"]` in a conftest.py, but not both ways at once:
pytest refuses to register one module twice.

Default resolution for a session's board, firmware and timeout_is: the factory's argument, then
the test's `@pytest.mark.virsim(board=..., firmware=..., timeout_is=...)`, then the
`--virsim-board/--virsim-firmware/--virsim-timeout-is` options, then the ini values. Relative
paths are taken from where they were written: factory and marker arguments from the test file's
directory, options from the invocation directory, ini values from the ini file's directory. Board
names (e.g. mps2-an385) are passed as they are.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest

from virsim import protocol as p
from virsim.ci.runner import CLOCK_SAMPLE, CheckFailed, Monitor, wall_guard
from virsim.client import Client, daemon_pid
from virsim.errors import InvalidState
from virsim.private import PrivateDaemon

__all__ = ["VirsimExpectFailed", "VirsimExpectTimeout", "VirsimSession", "SessionFactory"]

EXCERPT_BYTES = 500  # console bytes quoted in an expect timeout
REPORT_BYTES = 4096  # console bytes attached to a failed test's report, per session
DEFAULT_TIMEOUT = 10.0  # seconds (of virtual time, by default) an expect waits
_WAKE = 0.2  # longest wait between console reads with wall timeouts (events usually wake us sooner)
_QUIET = 0.5  # host seconds without console output after which expect checks the session still runs
_SESSIONS = pytest.StashKey[list["VirsimSession"]]()
_HOME = pytest.StashKey[Path]()
# the marker's arguments: defaults for the factory's board, firmware and timeout_is, and create options
_MARKER_KEYS = frozenset({"board", "firmware", "timeout_is", "backend", "firmware_format", "load_address"})
TIMEOUT_KINDS = ("virtual", "wall")

Pattern = str | bytes | re.Pattern[str] | re.Pattern[bytes]
Patterns = Pattern | Sequence[Pattern]


class VirsimExpectFailed(AssertionError):
    """An expectation that cannot be met: the session stopped running (paused under the debugger,
    still created, or its emulator stopped) before the console showed the pattern."""


class VirsimExpectTimeout(VirsimExpectFailed):
    """An expectation (console text, or a breakpoint in break_at) was not met in time."""


def _tail(data: bytes, n: int) -> str:
    return data[-n:].decode("latin-1")


def _timeout_kind(info: p.SessionInfo, asked: str | None) -> str:
    """"virtual" or "wall" for a session: as asked, else virtual when the session is deterministic
    (as `virsim run`). ValueError when the session cannot count virtual time."""
    if asked is not None and asked not in TIMEOUT_KINDS:
        raise ValueError(f"timeout_is must be virtual or wall, got {asked!r}")
    kind = asked or ("virtual" if info.deterministic else "wall")
    if kind == "virtual" and not info.deterministic:
        raise ValueError("virtual-time timeouts need a deterministic session (drop deterministic=False, "
                         "or use timeout_is='wall')")
    if kind == "virtual" and "virtual-time" not in info.capabilities:
        raise ValueError(f"backend {info.backend} has no virtual clock: use timeout_is='wall'")
    return kind


class VirsimSession:
    """One virsim session in a test: console expectations, input, and debug helpers.

    `expect()` searches only the console output after the end of the previous expect's match
    (tracked as a byte offset in the session's console log), so expectations are ordered and
    never match old output twice. Timeouts count the session's virtual time when it is
    deterministic (`timeout_is="virtual"`, the default then), else host time (`"wall"`).
    """

    def __init__(self, client: Client, info: p.SessionInfo, timeout_is: str | None = None) -> None:
        self.client = client
        self.id: str = info.id
        self._info = info
        self.timeout_is = _timeout_kind(info, timeout_is)
        self._monitor: Monitor | None = None  # the console and the clock, from the first expect on

    def __repr__(self) -> str:
        return f"<VirsimSession {self.id} {self._info.name!r} on {self._info.board}>"

    # ----------------------------------------------------------------------------------- state

    @property
    def info(self) -> p.SessionInfo:
        """The session's current info (state, pid, endpoints, last stop, ...) from the daemon."""
        self._info = self.client.session("show", self.id)
        return self._info

    def clock(self) -> p.Clock:
        """The session's virtual clock now (`virtual_ns`, `instructions`; None where not counted)."""
        return self.client.clock(self.id)

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

    @property
    def position(self) -> int:
        """The console offset just after the previous expect's match: where the next one searches."""
        return self._monitor.cursor if self._monitor is not None else 0

    def console(self) -> bytes:
        """All console output so far."""
        return self.client.console_text(self.id)

    def send(self, text: str | bytes) -> int:
        """Send bytes to the UART; a str is encoded latin-1 as it is (no escape processing)."""
        data = text.encode("latin-1") if isinstance(text, str) else bytes(text)
        return self.client.console_send(self.id, data).sent

    def expect(self, pattern: Patterns, timeout: float = DEFAULT_TIMEOUT) -> re.Match[Any]:
        """Wait until the console output after the previous match matches `pattern`, and return
        the re.Match (as pytest-embedded's dut.expect).

        A str or bytes is a regular expression on the console's bytes (a str is encoded UTF-8),
        so the match's groups are bytes; a compiled bytes regex is used as it is; a compiled str
        regex sees the console decoded as latin-1 (one character per byte) and gives str groups.
        A list: the pattern whose match ends first in the console wins (on a tie, the earlier in
        the list); `match.re` tells which. `timeout` is in seconds of the session's `timeout_is`
        clock. Raises VirsimExpectTimeout (an AssertionError) when time runs out, and
        VirsimExpectFailed as soon as the session is not running."""
        items = _as_list(pattern)
        return self._expect([_compile(x) for x in items], timeout, " or ".join(map(_shown, items)))

    def expect_exact(self, text: str | bytes | Sequence[str | bytes], timeout: float = DEFAULT_TIMEOUT
                     ) -> re.Match[bytes]:
        """expect() for literal text (a str is encoded UTF-8), or the first of a list of texts."""
        items = _as_list(text)
        literal = [re.compile(re.escape(x.encode() if isinstance(x, str) else bytes(x))) for x in items]
        return self._expect(literal, timeout, " or ".join(repr(x) for x in items))  # type: ignore[arg-type]

    def _expect(self, patterns: list[re.Pattern[Any]], timeout: float, shown: str) -> re.Match[Any]:
        m = self._console_monitor()
        try:
            start, wall_start = m.now(fresh=True), time.monotonic()  # a stale start would shorten the wait
            guard = wall_guard(timeout, m.virtual)
            seen, quiet_since = -1, wall_start
            while True:
                hit = _first_match(patterns, bytes(m.console), m.cursor)
                if hit is not None:
                    m.cursor = hit.end()
                    return hit
                if m.now() - start >= timeout:
                    raise self._missed(VirsimExpectTimeout, f"{shown} not seen on the console within {timeout:g}s "
                                                            f"of {self.timeout_is} time")
                if time.monotonic() - wall_start >= guard:
                    raise self._missed(VirsimExpectTimeout, f"{shown} not seen on the console within {guard:g}s "
                                                            "of host time (the virtual clock barely moved)")
                if len(m.console) != seen:
                    seen, quiet_since = len(m.console), time.monotonic()
                elif time.monotonic() - quiet_since >= _QUIET:
                    self._check_running(shown)  # a halted target prints nothing: say so now, not at the guard
                    quiet_since = time.monotonic()
                m.pump(CLOCK_SAMPLE if m.virtual else min(_WAKE, max(0.0, timeout - (m.now() - start))))
        except CheckFailed as gone:  # the Monitor saw the emulator stop
            raise self._missed(VirsimExpectFailed, f"{shown} not seen on the console: {gone.message}") from None

    def _console_monitor(self) -> Monitor:
        if self._monitor is None:
            self._monitor = Monitor(self.client, self.id, self.timeout_is == "virtual", [], None)
        return self._monitor

    def _check_running(self, shown: str) -> None:
        info = self.info
        if info.state != "running":
            why = f" ({info.stop.reason})" if info.state == "paused" and info.stop is not None else ""
            raise self._missed(VirsimExpectFailed, f"{shown} not seen on the console, and the session is "
                                                   f"{info.state}{why}: nothing more can appear until it runs "
                                                   "(resume() or cont())")

    def _missed(self, kind: type[VirsimExpectFailed], message: str) -> VirsimExpectFailed:
        return kind(f"session {self.id}: {message} (searched from console offset {self.position}); "
                    f"last {EXCERPT_BYTES} bytes of console:\n{_tail(self.console(), EXCERPT_BYTES)}")

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

    def break_at(self, location: str, timeout: float = DEFAULT_TIMEOUT) -> p.StopInfo:
        """Set a breakpoint at `location`, continue, and return the stop (whatever stopped the
        target first). The breakpoint is kept; the target stays stopped. `timeout` is host time
        (as `virsim run`'s break-at)."""
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
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None

    def delete(self) -> None:
        """Delete the session and its artifacts (the factory does this when the test ends)."""
        self.close()
        self.client.session_delete(self.id, purge=True)


def _addr(address: int | str) -> str:
    return f"{address:#x}" if isinstance(address, int) else address


def _as_list(pattern: Any) -> list[Any]:
    items = [pattern] if isinstance(pattern, (str, bytes, re.Pattern)) else list(pattern)
    if not items:
        raise ValueError("expect: an empty list of patterns")
    return items


def _compile(pattern: Pattern) -> re.Pattern[Any]:
    if isinstance(pattern, re.Pattern):
        return pattern
    return re.compile(pattern.encode() if isinstance(pattern, str) else bytes(pattern))


def _shown(pattern: Pattern) -> str:
    text = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
    return f"/{text.decode('latin-1') if isinstance(text, bytes) else text}/"


def _first_match(patterns: list[re.Pattern[Any]], console: bytes, pos: int) -> re.Match[Any] | None:
    """The match, at or after `pos`, that ends first (ties: the earlier pattern): the one a reader
    of the console byte by byte would see complete first, however the bytes were batched."""
    text: str | None = None
    best: re.Match[Any] | None = None
    for pattern in patterns:
        if isinstance(pattern.pattern, str):
            text = console.decode("latin-1") if text is None else text
            m = pattern.search(text, pos)
        else:
            m = pattern.search(console, pos)
        if m is not None and (best is None or m.end() < best.end()):
            best = m
    return best


# ------------------------------------------------------------------------------------ pytest glue


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("virsim", "virsim firmware sessions")
    group.addoption("--virsim-board", default=None, help="default board (template name or board file)")
    group.addoption("--virsim-firmware", default=None, help="default firmware image")
    group.addoption("--virsim-backend", default=None, help="override the board's emulator backend")
    group.addoption("--virsim-timeout-is", default=None, choices=TIMEOUT_KINDS,
                    help="what expect() timeouts count: virtual (the session's virtual clock; the default for "
                         "deterministic sessions) or wall (host time)")
    group.addoption("--virsim-keep", action="store_true", default=False,
                    help="keep the daemon, its VIRSIM_HOME and every session after the run (to inspect)")
    parser.addini("virsim_board", "default board for virsim_session (template name or board file)")
    parser.addini("virsim_firmware", "default firmware image for virsim_session")
    parser.addini("virsim_backend", "override the board's emulator backend for virsim_session")
    parser.addini("virsim_timeout_is", "what expect() timeouts count: virtual or wall (default: virtual for "
                                       "deterministic sessions)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "virsim(board=None, firmware=None, timeout_is=None, backend=None, "
                                       "firmware_format=None, load_address=None): defaults for the sessions "
                                       "virsim_session creates in this test")


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
    """Board, firmware, backend and timeout_is from the options, else from the ini file."""
    cwd = Path(config.invocation_params.dir)
    ini_dir = config.inipath.parent if config.inipath else config.rootpath
    out: dict[str, str | None] = {}
    for key in ("board", "firmware", "backend", "timeout_is"):
        opt = config.getoption(f"virsim_{key}")
        ini = str(config.getini(f"virsim_{key}") or "").strip()
        if key in ("backend", "timeout_is"):
            out[key] = opt or ini or None
        else:
            out[key] = _anchor(opt, cwd, board=key == "board") or _anchor(ini, ini_dir, board=key == "board")
    return out


@pytest.fixture(scope="session")
def virsim_daemon(pytestconfig: pytest.Config) -> Iterator[Client]:
    """A connected Client of a private daemon (in a fresh VIRSIM_HOME) for the whole run.

    The daemon dies with this pytest process, however it ends (SIGKILL included: virsim.private),
    unless --virsim-keep keeps it (and its home) for inspection."""
    keep = bool(pytestconfig.getoption("virsim_keep"))
    private = PrivateDaemon("vsp-")
    home = private.home
    pytestconfig.stash[_HOME] = home
    saved = os.environ.get("VIRSIM_HOME")
    os.environ["VIRSIM_HOME"] = str(home)
    client = Client(private.paths, lifeline=not keep)
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
            killed = private.close(grace=5.0, stop_requested=True)
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
                 timeout_is: str | None = None, **options: Any) -> VirsimSession: ...


@pytest.fixture
def virsim_session(request: pytest.FixtureRequest, virsim_daemon: Client) -> Iterator[SessionFactory]:
    """A factory of sessions: `virsim_session(board=None, firmware=None, deterministic=True,
    paused=False, name=None, timeout_is=None, **create_options) -> VirsimSession`; each is purged
    when the test ends."""
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
               timeout_is: str | None = None, **options: Any) -> VirsimSession:
        board_ref = (_anchor(board, test_dir, board=True) or _anchor(marked.get("board"), test_dir, board=True)
                     or defaults["board"])
        if board_ref is None:
            pytest.fail("virsim_session: no board: pass board=..., mark the test @pytest.mark.virsim(board=...), "
                        "or set --virsim-board / the virsim_board ini value", pytrace=False)
        image = _anchor(firmware, test_dir) or _anchor(marked.get("firmware"), test_dir) or defaults["firmware"]
        opts = {"backend": defaults["backend"],
                **{k: v for k, v in marked.items() if k not in ("board", "firmware", "timeout_is")}, **options}
        info = virsim_daemon.session_create(board_ref, image, deterministic=deterministic, paused=paused,
                                            name=name, **opts)
        try:
            session = VirsimSession(virsim_daemon, info, timeout_is or marked.get("timeout_is")
                                    or defaults["timeout_is"])
        except ValueError as err:
            virsim_daemon.session_delete(info.id, purge=True)
            pytest.fail(f"virsim_session: {err}", pytrace=False)
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

