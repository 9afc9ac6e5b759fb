"""The client library: the CLI, the tests and the TUI talk to the daemon only through this.

`Client` connects a DEALER to the daemon's control socket (starting the daemon first if none
runs), opens with the `hello` handshake, and offers one typed method per request. `subscribe()`
gives the live event stream; `follow_console()` joins history and live bytes by offset so
nothing is duplicated or lost.
"""

from __future__ import annotations

import fcntl
import getpass
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import zmq

from virsim import INSTALL, __version__
from virsim import protocol as p
from virsim.backends.process import is_gone, wait_gone
from virsim.errors import DaemonMismatch, DaemonUnavailable, InvalidInput, ProtocolError, VirsimError
from virsim.paths import Paths, get_paths
from virsim.private import new_lifeline

M = TypeVar("M", bound=p.Message)
DEFAULT_TIMEOUT = float(os.environ.get("VIRSIM_TIMEOUT", "30"))
START_TIMEOUT = 10.0
DEATH_CHECK = 0.25  # s between looks at whether the daemon still lives while a reply is awaited


# ------------------------------------------------------------------------------------ daemon process


def daemon_pid(paths: Paths) -> int | None:
    """The pid of the daemon holding the lock, or None if no daemon runs."""
    if not paths.lock_file.exists():
        return None
    fd = os.open(paths.lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return int(paths.pid_file.read_text().strip())
        except (OSError, ValueError):
            return -1  # locked, but the pid file is not written yet
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def spawn_daemon(paths: Paths, lifeline: bool = False) -> None:
    """Start a detached daemon (it forks into the background and exits this child at once).

    `lifeline`: the daemon stops (and stops its emulators) when this process ends, however it
    ends (virsim.private)."""
    paths.ensure()
    env = dict(os.environ)
    if paths.home is not None:
        env["VIRSIM_HOME"] = str(paths.home)
    args = [sys.executable, "-m", "virsim.daemon", "--detach"]
    keep: tuple[int, ...] = ()
    if lifeline:
        read_end = new_lifeline(paths)
        args += ["--lifeline", str(read_end)]
        keep = (read_end,)
    try:
        with paths.daemon_log.open("ab") as logf:
            child = subprocess.Popen(args, stdin=subprocess.DEVNULL, env=env, stdout=logf, stderr=logf,
                                     start_new_session=True, close_fds=True, pass_fds=keep, cwd="/")
    finally:
        for fd in keep:
            os.close(fd)  # the daemon has its copy; ours would keep the pipe from ever reaching EOF
    try:
        code = child.wait(START_TIMEOUT)
    except subprocess.TimeoutExpired as err:
        child.kill()
        raise DaemonUnavailable(f"the daemon did not detach within {START_TIMEOUT:.0f}s; see {paths.daemon_log}",
                                log=str(paths.daemon_log)) from err
    if code != 0:
        raise DaemonUnavailable(f"the daemon failed to start (exit {code}); see {paths.daemon_log}",
                                log=str(paths.daemon_log))


def install_mismatch(reply: p.HelloReply) -> str | None:
    """Why a daemon that answered `reply` is not of this install, or None if it is."""
    if reply.install == INSTALL and reply.daemon_version == __version__:
        return None
    where = reply.install or "an older install that does not say where"
    return (f"the running daemon (pid {reply.pid}) is virsim {reply.daemon_version} from {where}, but this is "
            f"virsim {__version__} from {INSTALL}")


# ---------------------------------------------------------------------------------------------- client


class Subscription:
    """Events from the daemon's PUB socket for one session (or all, with session=None)."""

    def __init__(self, ctx: zmq.Context[Any], paths: Paths, session: str | None) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        topic = f"session.{session}" if session else "session."
        self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self.sock.connect(f"ipc://{paths.events_socket}")

    def recv(self, timeout: float) -> tuple[p.Event, bytes] | None:
        if not self.sock.poll(int(timeout * 1000)):
            return None
        _topic, header, data = self.sock.recv_multipart()
        return p.Event.model_validate_json(header), data

    def close(self) -> None:
        self.sock.close(0)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client:
    def __init__(self, paths: Paths | None = None, timeout: float = DEFAULT_TIMEOUT, autostart: bool = True,
                 lifeline: bool = False, check_install: bool = True) -> None:
        self.paths = paths or get_paths()
        self.timeout = timeout
        self.autostart = autostart
        self.lifeline = lifeline  # a daemon this client starts lives only as long as this process
        # False: talk to a daemon of another install anyway (daemon status/stop, doctor report it).
        self.check_install = check_install
        self.mismatch: str | None = None  # why the connected daemon is not of this install, if it is not
        self.ctx: zmq.Context[Any] = zmq.Context.instance()
        self.sock: zmq.Socket[Any] | None = None
        self.daemon: p.HelloReply | None = None

    # --------------------------------------------------------------------------------- connection

    def connect(self) -> Client:
        """Connect to the daemon (starting one if none runs) and say hello.

        A daemon that dies while we wait for its hello (killed a moment ago, still holding its
        lock when we looked) is noticed by its lock going free, and a new one is started. A daemon
        of another virsim install or version (the install was replaced while it ran: it would
        fail as soon as it imports a file that is gone) is stopped and started again from this
        install when it has no live session; with live sessions, DaemonMismatch says what to do.
        """
        if self.sock is not None:
            return self
        self.paths.ensure()  # ours alone, or refused: a socket another user planted is never spoken to
        deadline = time.monotonic() + max(self.timeout, START_TIMEOUT)
        for _attempt in range(3):
            if daemon_pid(self.paths) is None:
                if not self.autostart:
                    raise DaemonUnavailable("the virsim daemon is not running (start it: virsim daemon start)")
                spawn_daemon(self.paths, lifeline=self.lifeline)
            while not self.paths.control_socket.exists():
                if time.monotonic() > deadline:
                    raise DaemonUnavailable(f"the daemon did not create {self.paths.control_socket} in time; "
                                            f"see {self.paths.daemon_log}", log=str(self.paths.daemon_log))
                time.sleep(0.005)
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(f"ipc://{self.paths.control_socket}")
            try:
                reply = self._hello(sock, deadline)
            except BaseException:
                sock.close(0)
                raise
            if reply is None:  # it died: start another
                sock.close(0)
                if time.monotonic() >= deadline:
                    break
                continue
            self.mismatch = install_mismatch(reply)
            if self.mismatch and self.check_install:
                if self.autostart and not reply.sessions_active:
                    self._stop_stale(sock, reply)
                    continue
                sock.close(0)
                raise DaemonMismatch(
                    f"{self.mismatch}; it has {reply.sessions_active or 'some'} live session(s), so it was left "
                    "running: finish them, then run 'virsim daemon stop' (their emulators are powered off; "
                    "'virsim session power-on' brings each back) and run this command again",
                    pid=reply.pid, daemon_version=reply.daemon_version, daemon_install=reply.install,
                    client_version=__version__, client_install=INSTALL)
            self.sock = sock
            self.daemon = reply
            return self
        raise DaemonUnavailable(f"the daemon did not answer in time; see {self.paths.daemon_log}",
                                log=str(self.paths.daemon_log))

    def _hello(self, sock: zmq.Socket[Any], deadline: float) -> p.HelloReply | None:
        """The daemon's hello reply; None if the daemon died while we waited."""
        hello = p.Hello(pid=os.getpid(), user=getpass.getuser()[:64], version=__version__, install=INSTALL)
        request_id = p.new_id()
        sock.send(p.encode("hello", hello, request_id))
        while time.monotonic() < deadline:
            if sock.poll(200):
                env = p.decode_envelope(sock.recv())
                if env.get("id") != request_id:
                    continue
                if env["type"] == "error":
                    if env["payload"].get("code") == InvalidInput.code and hello.install is not None:
                        # A daemon older than protocol 1.7 refuses the version fields: ask it plainly
                        # (its reply, without an install, then counts as another install).
                        hello = p.Hello(pid=os.getpid(), user=getpass.getuser()[:64])
                        request_id = p.new_id()
                        sock.send(p.encode("hello", hello, request_id))
                        continue
                    raise VirsimError.from_wire(env["payload"])
                return p.HelloReply.model_validate(env["payload"])
            if daemon_pid(self.paths) is None:
                return None
        raise DaemonUnavailable(f"the daemon did not answer in time; see {self.paths.daemon_log}",
                                log=str(self.paths.daemon_log))

    def _stop_stale(self, sock: zmq.Socket[Any], reply: p.HelloReply) -> None:
        """Stop an idle daemon of another install, so that the next attempt starts ours."""
        request_id = p.new_id()
        sock.send(p.encode("daemon.stop", {}, request_id))
        sock.poll(int(START_TIMEOUT * 1000))
        sock.close(0)
        try:
            still = wait_gone([psutil.Process(reply.pid)], 15.0)
        except psutil.NoSuchProcess:
            still = []
        if still:
            raise DaemonUnavailable(f"the daemon of another install (pid {reply.pid}) did not stop within 15s: "
                                    f"{self.mismatch}", pid=reply.pid)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def __enter__(self) -> Client:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, frames: list[bytes], timeout: float | None = None) -> dict[str, Any]:
        """Send raw frames and return the decoded reply envelope (for protocol tests)."""
        self.connect()
        assert self.sock is not None
        for attempt in range(2):
            self.sock.send_multipart(frames)
            if not self.sock.poll(int((timeout or self.timeout) * 1000)):
                raise DaemonUnavailable("no reply from the daemon")
            env = p.decode_envelope(self.sock.recv())
            if attempt == 0 and self._hello_again(env, timeout):
                continue
            return env
        raise AssertionError("unreachable")

    def _check_daemon_alive(self, request: str) -> None:
        """DaemonUnavailable at once when the daemon that took `request` has died (killed, crashed):
        its answer will never come, so waiting out the timeout would only hide that."""
        pid = self.daemon.pid if self.daemon is not None else None
        if pid is None:
            return
        try:
            gone = is_gone(psutil.Process(pid))
        except psutil.NoSuchProcess:
            gone = True
        if gone:
            self.close()
            raise DaemonUnavailable(f"the daemon (pid {pid}) died while handling {request}; see {self.paths.daemon_log} "
                                    "(the next command starts a new one)", request=request, pid=pid)

    def _hello_again(self, env: dict[str, Any], timeout: float | None) -> bool:
        """After ZeroMQ reconnected this socket (the daemon restarted, or reset the connection), the
        daemon knows it as a new connection and wants a hello first: say it; True if it did."""
        payload = env.get("payload") or {}
        if env.get("type") != "error" or not (payload.get("details") or {}).get("hello_required"):
            return False
        assert self.sock is not None
        reply = self._hello(self.sock, time.monotonic() + (timeout or self.timeout))
        if reply is None:
            raise DaemonUnavailable("the daemon stopped while this client reconnected")
        self.daemon = reply
        return True

    def call(self, type_: str, payload: p.Message | dict[str, Any] | None = None,
             timeout: float | None = None) -> p.Message:
        if self.sock is None:
            if type_ == "hello":
                raise ProtocolError("connect() before hello")
            self.connect()
        assert self.sock is not None
        request_id = p.new_id()
        waits = timeout or self.timeout
        self.sock.send(p.encode(type_, payload if payload is not None else {}, request_id, deadline=time.time() + waits))
        deadline = time.monotonic() + waits
        said_hello = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DaemonUnavailable(f"the daemon did not answer {type_} within {timeout or self.timeout:.0f}s; "
                                        f"see {self.paths.daemon_log}", request=type_)
            if not self.sock.poll(int(min(remaining, DEATH_CHECK) * 1000)):
                self._check_daemon_alive(type_)
                continue
            env = p.decode_envelope(self.sock.recv())
            if env.get("id") != request_id:
                continue  # a late reply to an earlier request that timed out
            if not said_hello and self._hello_again(env, timeout):
                said_hello = True
                self.sock.send(p.encode(type_, payload if payload is not None else {}, request_id,
                                        deadline=time.time() + max(0.0, deadline - time.monotonic())))
                continue
            if env["type"] == "error":
                raise VirsimError.from_wire(env["payload"])
            return p.REQUESTS[type_][1].model_validate(env["payload"])

    # ------------------------------------------------------------------------------- typed requests

    def status(self) -> p.DaemonInfo:
        return self.call("daemon.status")  # type: ignore[return-value]

    def stop_daemon(self, wait: float = 15.0) -> p.DaemonInfo:
        """Ask the daemon to stop and wait until its process has exited (emulators stopped)."""
        info: p.DaemonInfo = self.call("daemon.stop")  # type: ignore[assignment]
        self.close()
        try:
            still = wait_gone([psutil.Process(info.pid)], wait)
        except psutil.NoSuchProcess:
            still = []
        if still:
            raise DaemonUnavailable(f"the daemon (pid {info.pid}) did not stop within {wait:.0f}s", pid=info.pid)
        return info

    def session_create(self, board: str, firmware: str | Path | None = None, **options: Any) -> p.SessionInfo:
        if options.get("from_snapshot"):
            options["from_snapshot"] = _abs(options["from_snapshot"])
        req = p.SessionCreate(board=_board_ref(board) if board else "", firmware=_abs(firmware), **options)
        return self.call("session.create", req)  # type: ignore[return-value]

    def session_list(self, all: bool = False) -> list[p.SessionInfo]:
        reply: p.SessionListReply = self.call("session.list", p.SessionList(all=all))  # type: ignore[assignment]
        return reply.sessions

    def session(self, action: str, session: str) -> p.SessionInfo:
        """show | pause | resume | reset | power_off | power_on."""
        return self.call(f"session.{action}", p.SessionRef(session=session))  # type: ignore[return-value]

    def snapshot(self, action: str, session: str, **fields: Any) -> Any:
        """create (name) | list | restore (snapshot) | delete (snapshot) | export (snapshot, out)."""
        return self.request(f"snapshot.{action}", session, **fields)

    def request(self, type_: str, session: str, **fields: Any) -> Any:
        """A request about one session, e.g. coverage.report or trace.start (level, ranges, limit);
        an `out` path is made absolute (the daemon writes it)."""
        if "out" in fields:
            fields["out"] = _abs(fields["out"])
        model, _ = p.REQUESTS[type_]
        return self.call(type_, model(session=session, **fields))

    def wait_job(self, job: p.JobInfo, progress: Callable[[p.JobInfo], None] | None = None,
                 poll: float = 0.05) -> p.JobInfo:
        """Poll a daemon job until it ends; its error is raised as the VirsimError it was."""
        while job.state == "running":
            if progress is not None:
                progress(job)
            time.sleep(poll)
            job = self.call("job.show", p.JobRef(job=job.id))  # type: ignore[assignment]
        if progress is not None:
            progress(job)
        if job.state == "failed":
            raise VirsimError.from_wire(job.error or {})
        return job

    def session_replay(self, recording: str | Path, **options: Any) -> p.SessionInfo:
        req = p.SessionReplay(recording=_abs(recording), **options)
        return self.call("session.replay", req)  # type: ignore[return-value]

    def clock(self, session: str) -> p.Clock:
        return self.call("session.clock", p.SessionRef(session=session))  # type: ignore[return-value]

    def session_delete(self, session: str, purge: bool = False) -> p.DeleteReply:
        return self.call("session.delete", p.SessionDelete(session=session, purge=purge))  # type: ignore[return-value]

    def console_read(self, session: str, offset: int = 0, tail: int | None = None,
                     limit: int = 256 * 1024) -> p.ConsoleChunk:
        req = p.ConsoleRead(session=session, offset=offset, tail=tail, limit=limit)
        return self.call("console.read", req)  # type: ignore[return-value]

    def console_text(self, session: str) -> bytes:
        """The whole console log so far."""
        out, offset = b"", 0
        while True:
            chunk = self.console_read(session, offset=offset)
            out += chunk.data.encode("latin-1")
            if chunk.end >= chunk.size or chunk.end == offset:
                return out
            offset = chunk.end

    def console_send(self, session: str, data: bytes) -> p.SendReply:
        return self.call("console.send", p.ConsoleSend(session=session, data=data.decode("latin-1")))  # type: ignore[return-value]

    def program_upload(self, session: str, path: str | Path, format: str = "auto",
                       load_address: int | None = None) -> p.ProgramInfo:
        req = p.ProgramUpload(session=session, path=str(_abs(path)), format=format,  # type: ignore[arg-type]
                              load_address=load_address)
        return self.call("program.upload", req)  # type: ignore[return-value]

    def program_start(self, session: str, program: str) -> p.SessionInfo:
        return self.call("program.start", p.ProgramStart(session=session, program=program))  # type: ignore[return-value]

    def program_source(self, session: str, file: str | None = None) -> p.SourceFile:
        """A source file of the session's program (default: where it stopped) and its lines with code."""
        return self.call("program.source", p.SourceRef(session=session, file=file))  # type: ignore[return-value]

    def debug(self, action: str, session: str, **fields: Any) -> Any:
        """debug.<action> (break, watch, list, delete, continue, step, where, regs, reg_set, mem,
        mem_write, eval, disasm, gdb) with its fields; returns the typed result."""
        type_ = f"debug.{action}"
        req = p.make_request(type_, {"session": session, **fields})
        wait = float(getattr(req, "timeout", 0) or 0)
        return self.call(type_, req, timeout=max(self.timeout, wait + 10))

    # ------------------------------------------------------------------------------------------ events

    def subscribe(self, session: str | None = None) -> Subscription:
        self.connect()
        return Subscription(self.ctx, self.paths, session)

    def follow_console(self, session: str, tail: int | None = None, poll: float = 0.5,
                       stop_when_down: bool = False) -> Iterator[bytes]:
        """History (all, or the last `tail` bytes) then live console bytes, joined by offset.

        Yields b"" every `poll` seconds while the console is quiet, so callers can keep deadlines.
        """
        sid = self.session("show", session).id
        with self.subscribe(sid) as sub:
            first = self.console_read(sid, tail=tail)
            if first.data:
                yield first.data.encode("latin-1")
            pos = first.end
            while True:
                got = sub.recv(poll)
                if got is None or (got[0].type == "console" and (got[0].offset or 0) > pos):
                    # quiet, or a gap (events dropped or not yet subscribed): read the log from pos
                    chunk = self.console_read(sid, offset=pos)
                    if chunk.data:
                        yield chunk.data.encode("latin-1")
                        pos = chunk.end
                    if got is None:
                        yield b""  # an idle tick: lets the caller check its own deadline
                        if stop_when_down and self.session("show", sid).state not in ("created", "running", "paused"):
                            return
                        continue
                event, data = got
                if event.type != "console" or event.offset is None:
                    continue
                end = event.offset + len(data)
                if end > pos:
                    yield data[pos - event.offset:]
                    pos = end


def _abs(path: str | Path | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path is not None else None


def _board_ref(board: str) -> str:
    """Board files are sent as absolute paths (the daemon has its own cwd); names as they are."""
    path = Path(board).expanduser()
    if path.suffix in (".yaml", ".yml", ".json") or os.sep in board or path.exists():
        return str(path.resolve())
    return board
