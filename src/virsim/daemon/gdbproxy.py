"""A session's user-facing gdb endpoint: forwards one external debugger to the backend's stub.

The backend's gdb stub takes one client at a time and virsim's own debugger is usually that
client. When an external debugger (gdb-multiarch, an IDE) connects here, virsim's debugger
detaches first (`on_attach`), then bytes are forwarded both ways until either side closes; while
that lasts, virsim's debug commands answer DEBUGGER_BUSY. Only the session's user can connect:
the sockets live in the 0700 runtime dir and are 0600 themselves (TCP, when asked for, binds
127.0.0.1). Several addresses can lead to the one stub: the session's `gdb.sock`, its per-name
socket and a TCP port; still one debugger at a time.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("virsim.daemon.gdbproxy")


class GdbProxy:
    def __init__(self, path: Path, upstream: str, on_attach: Callable[[], None],
                 on_detach: Callable[[], None]) -> None:
        self.path = path
        self.upstream_address = upstream
        self.on_attach = on_attach
        self.on_detach = on_detach
        self.listeners: list[socket.socket] = []
        self._unix: list[tuple[Path, int]] = []  # socket paths we bound, with their inode
        self.listen_unix(path)
        self.tcp: socket.socket | None = None
        self.client: socket.socket | None = None
        self.upstream: socket.socket | None = None

    @property
    def held(self) -> bool:
        return self.client is not None

    def listen_unix(self, path: Path) -> None:
        """Accept debuggers on one more socket path (mode 0600), e.g. the session's per-name one."""
        path.unlink(missing_ok=True)  # a socket a daemon that died left behind
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)
            sock.listen(2)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.listeners.append(sock)
        self._unix.append((path, path.stat().st_ino))

    def listen_tcp(self, port: int = 0) -> str:
        """Listen on 127.0.0.1:`port` (0: a free one); raises OSError when it cannot (port taken)."""
        if self.tcp is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # Rebinding a fixed port right after an earlier session's connections closed (TIME_WAIT)
            # must work; a port another socket listens on stays refused (EADDRINUSE) on Linux.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                sock.listen(2)
            except OSError:
                sock.close()
                raise
            sock.setblocking(False)
            self.tcp = sock
        return self.tcp_address() or ""

    def tcp_address(self) -> str | None:
        if self.tcp is None:
            return None
        host, port = self.tcp.getsockname()
        return f"{host}:{port}"

    def watched(self) -> dict[int, Callable[[], None]]:
        out: dict[int, Callable[[], None]] = {}
        for listener in [*self.listeners, *([self.tcp] if self.tcp is not None else [])]:
            out[listener.fileno()] = lambda listener=listener: self._accept(listener)
        if self.client is not None and self.upstream is not None:
            client, upstream = self.client, self.upstream
            out[client.fileno()] = lambda: self._forward(client, upstream)
            out[upstream.fileno()] = lambda: self._forward(upstream, client)
        return out

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        if self.client is not None:
            conn.close()  # one external debugger at a time, as the stub itself allows
            return
        try:
            self.on_attach()
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            up.connect(self.upstream_address)
        except Exception:
            log.exception("attaching an external debugger")
            conn.close()
            self.on_detach()
            return
        conn.setblocking(False)
        up.setblocking(False)
        self.client, self.upstream = conn, up
        log.info("external debugger attached via %s", self.path)

    def _forward(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            data = src.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data and self._send(dst, data):
            return
        self._drop()

    @staticmethod
    def _send(dst: socket.socket, data: bytes) -> bool:
        if not data:
            return True
        try:
            dst.setblocking(True)
            dst.settimeout(2.0)
            dst.sendall(data)
            dst.setblocking(False)
            return True
        except OSError:
            return False

    def _drop(self) -> None:
        for sock in (self.client, self.upstream):
            if sock is not None:
                sock.close()
        was_held = self.client is not None
        self.client = self.upstream = None
        if was_held:
            log.info("external debugger detached")
            self.on_detach()

    def close(self) -> None:
        self.client_detach_silently()
        for sock in (*self.listeners, self.tcp):
            if sock is not None:
                sock.close()
        for path, inode in self._unix:
            try:
                if path.stat().st_ino == inode:  # not a socket someone bound there since
                    path.unlink()
            except FileNotFoundError:
                pass

    def client_detach_silently(self) -> None:
        for sock in (self.client, self.upstream):
            if sock is not None:
                sock.close()
        self.client = self.upstream = None
