"""The daemon process: one per user, a ZeroMQ ROUTER for requests and a PUB for events.

A single-threaded loop polls the control socket and every emulator channel (console sockets), so
requests are served one at a time in arrival order and no lock guards the store or the instances.
A lock file (flock) makes a second daemon for the same runtime dir exit at once. A malformed or
oversized frame gets an error reply; no request can kill the loop. SIGTERM or `daemon.stop`
powers every emulator off before the daemon exits.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import zmq

from virsim import INSTALL, __version__
from virsim import protocol as p
from virsim.atomic import as_storage_error
from virsim.backends import process
from virsim.daemon.debug import DebugService
from virsim.daemon.snapshots import SnapshotService
from virsim.daemon.analysis import AnalysisService
from virsim.daemon.faults import FaultService
from virsim.daemon.jobs import JobService
from virsim.daemon.pending import Deferred, PendingReplies, check_client_waiting, serving
from virsim.daemon.sessions import SessionService
from virsim.daemon.store import Store
from virsim.errors import ProtocolError, StorageError, VersionMismatch, VirsimError, clip
from virsim.paths import Paths

log = logging.getLogger("virsim.daemon")

CLOCK_EVENT_INTERVAL = 1.0  # s between `clock` events of a running session (live tables: the TUI)
MAX_CLIENTS = 256  # connections remembered (who said hello); the oldest is forgotten past this


def peer_credentials(fd: int) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the process at the other end of the unix socket `fd`, from the kernel
    (SO_PEERCRED): who a client is, whatever its hello says."""
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            if sock.family != socket.AF_UNIX:
                return None
            return struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except OSError:
        return None


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class AlreadyRunning(Exception):
    pass


class Daemon:
    def __init__(self, paths: Paths, lifeline: int | None = None) -> None:
        self.paths = paths.ensure()
        self._lock_fd = self._lock()
        # A private daemon (virsim.private) watches its owner's pipe: end-of-file means the owner
        # is gone, however it ended, and the daemon stops. Its emulators die with it if it is killed.
        self.lifeline = lifeline
        if lifeline is not None:
            os.set_blocking(lifeline, False)
            process.die_with_parent(True)
        process.record_children_in(self.paths.runtime / "children")  # what a next daemon may stop
        self.started_at = time.time()
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.pub = self.ctx.socket(zmq.PUB)
        # A little linger so the reply to daemon.stop still leaves before the sockets close.
        self.router.setsockopt(zmq.LINGER, 500)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.MAXMSGSIZE, p.MAX_FRAME + 4096)
        self.pub.setsockopt(zmq.SNDHWM, 100_000)
        for path, sock in ((paths.control_socket, self.router), (paths.events_socket, self.pub)):
            path.unlink(missing_ok=True)  # stale after a crash; the lock says no daemon owns it
            sock.bind(f"ipc://{path}")
            os.chmod(path, 0o600)
        self.store = Store(paths.database)
        self.sessions = SessionService(paths, self.store, self.publish)
        self.pending = PendingReplies(self._send_reply)
        self.debug = DebugService(self.sessions, self.store, self.pending)
        self.snapshots = SnapshotService(self.sessions, self.store, self.debug)
        self.sessions.snapshots = self.snapshots
        self.jobs = JobService()
        self.analysis = AnalysisService(self.sessions, self.store, self.jobs)
        self.sessions.analysis = self.analysis
        self.faults = FaultService(self.sessions, self.store, self.analysis)
        # Who said hello on each connection, from the kernel; bounded (ZeroMQ does not say when a
        # peer leaves without the draft API), so a client that floods connections cannot grow it.
        self.clients: OrderedDict[bytes, dict[str, Any]] = OrderedDict()
        self.stopping = False
        self.handlers: dict[str, Callable[[Any], p.Message]] = {
            "hello": self._hello,
            "daemon.status": lambda _req: self.status(),
            "daemon.stop": self._stop,
            "session.create": self.sessions.create,
            "session.list": self.sessions.list,
            "session.show": self.sessions.show,
            "session.pause": self.sessions.pause,
            "session.resume": self.sessions.resume,
            "session.reset": self.sessions.reset,
            "session.power_off": self.sessions.power_off,
            "session.power_on": self.sessions.power_on,
            "session.delete": self.sessions.delete,
            "session.clock": self.sessions.clock,
            "session.stop_at": self.sessions.stop_at,
            "session.replay": self.sessions.replay,
            "session.exceptions": self.faults.exceptions,
            "console.read": self.sessions.console_read,
            "console.send": self.sessions.console_send,
            "snapshot.create": self.snapshots.create,
            "snapshot.list": self.snapshots.list,
            "snapshot.restore": self.snapshots.restore,
            "snapshot.delete": self.snapshots.delete,
            "snapshot.export": self.snapshots.export,
            "program.upload": self.sessions.program_upload,
            "program.start": self.sessions.program_start,
            "program.source": self.analysis.source,
            "debug.break": self.debug.break_,
            "debug.watch": self.debug.watch,
            "debug.list": self.debug.list_,
            "debug.delete": self.debug.delete,
            "debug.enable": self.debug.enable,
            "debug.continue": self.debug.continue_,
            "debug.step": self.debug.step,
            "debug.where": self.debug.where,
            "debug.regs": self.debug.regs,
            "debug.reg_set": self.debug.reg_set,
            "debug.mem": self.debug.mem,
            "debug.mem_write": self.debug.mem_write,
            "debug.eval": self.debug.eval,
            "debug.disasm": self.debug.disasm,
            "debug.gdb": self.debug.gdb,
            "coverage.start": self.analysis.coverage_start,
            "coverage.stop": self.analysis.coverage_stop,
            "coverage.reset": self.analysis.coverage_reset,
            "coverage.report": self.analysis.coverage_report,
            "coverage.export": self.analysis.coverage_export,
            "trace.start": self.analysis.trace_start,
            "trace.stop": self.analysis.trace_stop,
            "trace.show": self.analysis.trace_show,
            "trace.export": self.analysis.trace_export,
            "job.show": self.jobs.show,
        }
        missing = set(p.REQUESTS) ^ set(self.handlers)
        assert not missing, f"protocol and handlers disagree on {missing}"

    def _lock(self) -> int:
        fd = os.open(self.paths.lock_file, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(fd)
            raise AlreadyRunning(f"another virsim daemon holds {self.paths.lock_file}") from err
        self.paths.pid_file.write_text(f"{os.getpid()}\n")
        return fd

    # ------------------------------------------------------------------------------------------ events

    def publish(self, event: p.Event, data: bytes) -> None:
        topic = f"session.{event.session}".encode()
        self.pub.send_multipart([topic, event.model_dump_json(exclude_none=True).encode(), data], copy=False)

    # ---------------------------------------------------------------------------------------- handlers

    def status(self) -> p.DaemonInfo:
        active, total = self.sessions.counts()
        return p.DaemonInfo(pid=os.getpid(), version=__version__, protocol=p.PROTOCOL_VERSION,
                            started_at=self.started_at, uptime_s=time.time() - self.started_at,
                            control_socket=str(self.paths.control_socket),
                            events_socket=str(self.paths.events_socket), data_dir=str(self.paths.data),
                            sessions_active=active, sessions_total=total, install=INSTALL)

    def _hello(self, req: p.Hello) -> p.HelloReply:
        if p.major(req.protocol) != p.major(p.PROTOCOL_VERSION):
            raise VersionMismatch(f"client speaks protocol {req.protocol}, this daemon speaks {p.PROTOCOL_VERSION}: "
                                  "upgrade virsim so both match, then run 'virsim daemon stop'",
                                  theirs=req.protocol, ours=p.PROTOCOL_VERSION)
        return p.HelloReply(protocol=p.PROTOCOL_VERSION, daemon_version=__version__, pid=os.getpid(), install=INSTALL,
                            sessions_active=len(self.sessions.live))

    def _stop(self, _req: p.Empty) -> p.DaemonInfo:
        self.stopping = True
        return self.status()

    # -------------------------------------------------------------------------------------------- loop

    def _send_reply(self, identity: bytes, request_id: str, answer: p.Message | VirsimError) -> None:
        if isinstance(answer, VirsimError):
            frame = p.reply_frame(request_id, error=answer.to_wire())
        else:
            frame = p.reply_frame(request_id, result=answer)
        self.router.send_multipart([identity, frame])

    def handle_frames(self, identity: bytes, frames: list[bytes],
                      peer: Callable[[], tuple[int, int, int] | None] | None = None) -> bytes | None:
        """One request's frames -> one reply frame, or None when the reply is deferred. Never raises.
        `peer`: the connection's (pid, uid, gid) from the kernel, asked for at hello."""
        request_id = ""
        started = time.monotonic()
        env: dict[str, Any] | None = None
        audit: int | None = None
        try:
            if len(frames) != 1:
                raise ProtocolError(f"expected one frame per request, got {len(frames)}")
            env = p.decode_envelope(frames[0])
            request_id = str(env.get("id", ""))
            req = p.parse_request(env)
            if env["type"] == "hello":
                self._remember(identity, req, peer() if peer else None)
            elif identity not in self.clients:
                raise ProtocolError(f"{env['type']} before hello: a connection starts with a hello request",
                                    type=env["type"], hello_required=True)
            audit = self._audit_start(identity, env, req)
            with serving(env.get("deadline")):
                check_client_waiting(env["type"])  # queued behind others until its client gave up: not run
                result = self.handlers[env["type"]](req)
            if isinstance(result, Deferred):
                self.pending.add(identity, request_id, result)
                self._audit_end(audit, "ok", None, started)
                return None
            reply = p.reply_frame(request_id, result=result)
            self._audit_end(audit, "ok", None, started)
            return reply
        except VirsimError as err:
            if not request_id and len(frames) == 1 and len(frames[0]) <= p.MAX_FRAME:
                try:  # echo the id even when the envelope is refused (version, payload), if there is one
                    raw = json.loads(frames[0])
                    request_id = str(raw.get("id", ""))[:64] if isinstance(raw, dict) else ""
                except (ValueError, RecursionError):
                    pass
            if audit is None and env is not None:
                self._audit_refused(identity, env, err.code, started)
            else:
                self._audit_end(audit, "error", err.code, started)
            return p.reply_frame(request_id, error=err.to_wire())
        except Exception as err:  # a bug must not take the daemon down
            internal = as_storage_error(err)  # a full disk is the user's to fix, not a bug
            if internal is None:
                log.exception("internal error handling %s", env.get("type") if env else "a frame")
                internal = VirsimError(f"internal daemon error: {type(err).__name__}: {err}")
            else:
                log.warning("%s failed: %s", env.get("type") if env else "a frame", internal)
            self._audit_end(audit, "error", internal.code, started)
            return p.reply_frame(request_id, error=internal.to_wire())

    def _remember(self, identity: bytes, req: p.Hello, cred: tuple[int, int, int] | None) -> None:
        """Who is on this connection: the kernel's word (SO_PEERCRED) where there is one, the
        hello's (bounded by the protocol) otherwise."""
        if cred is not None:
            pid, uid, _gid = cred
            client = {"user": user_name(uid), "uid": uid, "pid": pid}
        else:
            client = {"user": req.user, "uid": None, "pid": req.pid}
        self.clients[identity] = client
        self.clients.move_to_end(identity)
        while len(self.clients) > MAX_CLIENTS:
            self.clients.popitem(last=False)

    def _audit_start(self, identity: bytes, env: dict[str, Any], req: Any) -> int | None:
        """The audit row of a mutating request, written before it runs: a request that cannot be
        audited is not served (StorageError)."""
        if env.get("type") not in p.MUTATING:
            return None
        client = self.clients.get(identity, {})
        session = getattr(req, "session", None)
        try:
            return self.store.log_event(user=client.get("user"), client_pid=client.get("pid"), request=env["type"],
                                        session=session, result="started")
        except Exception as err:
            log.exception("writing the audit log")
            raise StorageError(f"{env['type']} was not run: its audit record could not be written ({err})",
                               reason=str(err)) from err

    def _audit_refused(self, identity: bytes, env: dict[str, Any], code: str, started: float) -> None:
        """The audit row of a mutating request refused before it ran (invalid, before hello): one write."""
        if env.get("type") not in p.MUTATING:
            return
        client = self.clients.get(identity, {})
        session = env.get("payload", {}).get("session")
        try:
            self.store.log_event(user=client.get("user"), client_pid=client.get("pid"), request=env["type"],
                                 session=clip(session, 256) if isinstance(session, str) else None, result="error",
                                 code=code, duration_ms=(time.monotonic() - started) * 1000)
        except Exception:  # it was refused anyway
            log.exception("writing the audit log")

    def _audit_end(self, audit: int | None, result: str, code: str | None, started: float) -> None:
        if audit is None:
            return
        try:
            self.store.end_event(audit, result=result, code=code, duration_ms=(time.monotonic() - started) * 1000)
        except Exception:  # done is done: the row says "started", the log says why
            log.exception("completing the audit record %s", audit)

    def serve(self) -> None:
        self.sessions.reconcile()
        log.info("daemon %s listening on %s (pid %d)", __version__, self.paths.control_socket, os.getpid())
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        if self.lifeline is not None:
            poller.register(self.lifeline, zmq.POLLIN)
        registered: set[int] = set()
        last_tick = last_clock = 0.0
        while not self.stopping:
            watched = {**self.sessions.watched(), **self.debug.watched()}
            for fd in registered - watched.keys():
                poller.unregister(fd)
            for fd in watched.keys() - registered:
                poller.register(fd, zmq.POLLIN)
            registered = set(watched)
            timeout = 2 if self.sessions.hot() else (100 if self.sessions.live else 1000)
            deadline = self.pending.next_deadline()
            if deadline is not None:
                timeout = max(0, min(timeout, int((deadline - time.monotonic()) * 1000) + 1))
            try:
                events = dict(poller.poll(timeout))
            except zmq.ZMQError as err:
                if err.errno == zmq.EINTR:
                    continue
                raise
            if self.lifeline is not None and events.pop(self.lifeline, None):
                self._check_lifeline()
            if events.pop(self.router, None):
                self._serve_requests()
                self.debug.flush()
            for fd in events:
                callback = watched.get(fd) if isinstance(fd, int) else None
                if callback is not None:
                    try:
                        callback()
                    except Exception:  # one broken channel must not take the daemon down
                        log.exception("handling fd %s", fd)
            self.pending.expire()
            now = time.monotonic()
            if self.sessions.hot() or now - last_tick >= 0.1:
                self.sessions.tick()
                self.faults.tick()
                last_tick = now
            if now - last_clock >= CLOCK_EVENT_INTERVAL:
                self.sessions.publish_clocks()
                last_clock = now

    def _check_lifeline(self) -> None:
        assert self.lifeline is not None
        try:
            data = os.read(self.lifeline, 64)
        except BlockingIOError:
            return
        if not data:
            log.info("the process that owns this private daemon is gone: stopping")
            self.router.setsockopt(zmq.LINGER, 0)  # no one is left to read a reply: do not wait for one
            self.stopping = True

    def _serve_requests(self) -> None:
        while self.router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                msg = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            identity, frames = msg[0].bytes, [f.bytes for f in msg[1:]]
            last = msg[-1]

            def peer() -> tuple[int, int, int] | None:
                try:
                    return peer_credentials(last.get(zmq.SRCFD))  # the connection this message came on
                except zmq.ZMQError:
                    return None
            reply = self.handle_frames(identity, frames, peer)
            if reply is not None:
                self.router.send_multipart([identity, reply])

    def close(self) -> None:
        try:
            self.sessions.shutdown()
        finally:
            self.router.close()
            self.pub.close()
            self.ctx.term()
            for path in (self.paths.control_socket, self.paths.events_socket, self.paths.pid_file):
                path.unlink(missing_ok=True)
            os.close(self._lock_fd)
            log.info("daemon stopped")


def _detach() -> None:
    """Fork into the background: the parent returns to its caller at once, the child is reparented."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()


def run(argv: list[str]) -> int:
    """Entry point of `python -m virsim.daemon [--detach] [--lifeline FD]`."""
    from virsim.paths import get_paths

    lifeline = int(argv[argv.index("--lifeline") + 1]) if "--lifeline" in argv else None
    if "--detach" in argv:
        _detach()
    paths = get_paths().ensure()
    logging.basicConfig(filename=paths.daemon_log, level=os.environ.get("VIRSIM_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    try:
        daemon = Daemon(paths, lifeline)
    except AlreadyRunning as err:
        log.info("not starting: %s", err)
        return 0

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        daemon.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        daemon.serve()
    except Exception:
        log.exception("daemon loop failed")
        raise
    finally:
        daemon.close()
        if lifeline is not None and paths.home is not None:
            # A private daemon's home is its owner's scratch space: whoever ends first removes it,
            # so that an owner killed by SIGKILL leaves nothing behind either.
            shutil.rmtree(paths.home, ignore_errors=True)
            if paths.runtime != paths.home / "run":
                shutil.rmtree(paths.runtime, ignore_errors=True)
    return 0
