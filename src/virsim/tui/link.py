"""The TUI's connection to the daemon: a pool of clients for requests made from worker threads,
and the event pump, a thread that follows the daemon's event stream and posts Textual messages.

Console bytes do not queue up as messages: the pump appends them to a per-session buffer and posts
one ConsoleBytes notice while none is pending; the UI takes everything buffered when it handles
the notice (`take_console`). So a UI slower than the firmware's output sees fewer, bigger chunks,
never a growing queue; past MAX_PENDING the oldest buffered bytes are skipped on screen (they stay
in the console log on disk) and the chunk says how many. A session's buffered bytes are handed
over before its next state or stop event is posted. It watches the daemon's process: when that is gone
it posts DaemonLost once and waits for `reconnect()`; nothing the app shows is then called live.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psutil
from textual.message import Message

from virsim.client import Client, Subscription
from virsim.errors import VirsimError
from virsim.paths import Paths, get_paths
from virsim.tui.messages import ConsoleBytes, DaemonBack, DaemonEvent, DaemonLost

COALESCE_S = 0.05  # console bytes reach the screen at most this late
MAX_PENDING = 4 * 1024 * 1024  # console bytes held per session while the UI catches up; older ones are skipped
ALIVE_CHECK_S = 0.5  # how often the pump looks whether the daemon process still lives
IDLE_CLIENTS = 4


class Link:
    def __init__(self, paths: Paths | None = None) -> None:
        self.paths = paths or get_paths()
        self._idle: queue.LifoQueue[Client] = queue.LifoQueue()
        self._all: list[Client] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reconnect = threading.Event()
        self._thread: threading.Thread | None = None
        self.daemon_pid: int | None = None
        self.lost: str | None = None
        self._console: dict[str, list[Any]] = {}  # session -> [offset, bytearray, skipped]
        self._console_lock = threading.Lock()

    # ------------------------------------------------------------------------------ requests
    @contextmanager
    def client(self) -> Iterator[Client]:
        """A connected client for one request (or a few), returned to the pool afterwards; a
        client whose request failed on the connection is dropped, not reused."""
        try:
            c = self._idle.get_nowait()
        except queue.Empty:
            c = Client(self.paths).connect()
            with self._lock:
                self._all.append(c)
        ok = False
        try:
            yield c
            ok = True
        except VirsimError as err:
            ok = err.code not in ("DAEMON_UNAVAILABLE", "PROTOCOL_ERROR", "TIMEOUT")
            raise
        finally:
            if ok and self._idle.qsize() < IDLE_CLIENTS:
                self._idle.put(c)
            else:
                self._drop(c)

    def call(self, fn: Callable[[Client], Any]) -> Any:
        with self.client() as c:
            return fn(c)

    def _drop(self, c: Client) -> None:
        with self._lock:
            if c in self._all:
                self._all.remove(c)
        c.close()

    # ------------------------------------------------------------------------------ events
    def start(self, post: Callable[[Message], Any]) -> None:
        """Connect (starting the daemon if none runs) and start the pump. Raises when the daemon
        cannot be reached, so the caller can say why."""
        self.daemon_pid = self.call(lambda c: c.status().pid)
        self._thread = threading.Thread(target=self._pump, args=(post,), name="virsim-tui-events", daemon=True)
        self._thread.start()

    def reconnect(self) -> None:
        """After DaemonLost: start the daemon again if needed; the pump then posts DaemonBack."""
        while not self._idle.empty():
            self._drop(self._idle.get_nowait())
        self.daemon_pid = self.call(lambda c: c.status().pid)
        self.lost = None
        self._reconnect.set()

    def close(self) -> None:
        self._stop.set()
        self._reconnect.set()
        if self._thread is not None:
            self._thread.join(2)
        with self._lock:
            clients, self._all = list(self._all), []
        for c in clients:
            c.close()

    def _alive(self) -> bool:
        try:
            proc = psutil.Process(self.daemon_pid or -1)
            return proc.status() != psutil.STATUS_ZOMBIE
        except (psutil.NoSuchProcess, ValueError):
            return False

    def _pump(self, post: Callable[[Message], Any]) -> None:
        while not self._stop.is_set():
            try:
                sub_client = Client(self.paths, autostart=False)
                sub = sub_client.subscribe()
            except VirsimError as err:
                self.lost = str(err)
            else:
                try:
                    self._follow(sub, post)
                finally:
                    sub.close()
                    sub_client.close()
            if self._stop.is_set():
                return
            post(DaemonLost(self.lost or "the daemon went away"))
            self._reconnect.wait()
            self._reconnect.clear()
            if not self._stop.is_set():
                post(DaemonBack())

    def take_console(self, session: str) -> tuple[int, bytes, int] | None:
        """Everything buffered for `session`: (offset of its first byte, bytes, bytes skipped just
        before them), or None. The next bytes post a new notice."""
        with self._console_lock:
            chunk = self._console.pop(session, None)
        return None if chunk is None else (chunk[0], bytes(chunk[1]), chunk[2])

    def _buffer(self, session: str, offset: int, data: bytes) -> bool:
        """Add console bytes; True if the UI must be told (nothing of this session was pending)."""
        with self._console_lock:
            chunk = self._console.get(session)
            fresh = chunk is None
            if chunk is None or chunk[0] + len(chunk[1]) != offset:
                # a gap (dropped events) before these bytes: the UI reads the log for it
                if chunk is not None:
                    return False  # the UI has a notice already; it will find the gap itself
                chunk = self._console[session] = [offset, bytearray(), 0]
            chunk[1] += data
            if len(chunk[1]) > MAX_PENDING:
                cut = len(chunk[1]) - MAX_PENDING
                del chunk[1][:cut]
                chunk[0] += cut
                chunk[2] += cut
            return fresh

    def _follow(self, sub: Subscription, post: Callable[[Message], Any]) -> None:
        unposted: set[str] = set()
        last_flush = last_alive = time.monotonic()

        def flush(session: str | None = None) -> None:
            for sid in [session] if session is not None else list(unposted):
                if sid in unposted:
                    unposted.discard(sid)
                    post(ConsoleBytes(sid))

        while not self._stop.is_set():
            got = sub.recv(COALESCE_S)
            now = time.monotonic()
            if got is not None:
                event, data = got
                if event.type == "console":
                    if self._buffer(event.session, event.offset or 0, data):
                        unposted.add(event.session)
                else:
                    flush(event.session)
                    post(DaemonEvent(event))
            if now - last_flush >= COALESCE_S:
                flush()
                last_flush = now
            if now - last_alive >= ALIVE_CHECK_S:
                last_alive = now
                if not self._alive():
                    flush()
                    self.lost = f"the daemon (pid {self.daemon_pid}) is gone"
                    return
