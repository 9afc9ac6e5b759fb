"""A session's user-facing gdb endpoint: forwards one external debugger to the backend's stub.

The backend's gdb stub takes one client at a time and virsim's own debugger is usually that
client. When an external debugger (gdb-multiarch, an IDE) connects here, virsim's debugger
detaches first (`on_attach`), then bytes are forwarded both ways until either side closes; while
that lasts, virsim's debug commands answer DEBUGGER_BUSY. Only the session's user can connect:
the socket lives in the 0700 runtime dir and is 0600 itself (TCP, when asked for, binds 127.0.0.1).
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
        path.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        os.chmod(path, 0o600)
        self.listener.listen(2)
        self.listener.setblocking(False)
        self.tcp: socket.socket | None = None
        self.client: socket.socket | None = None
        self.upstream: socket.socket | None = None

    @property
    def held(self) -> bool:
        return self.client is not None

    def listen_tcp(self) -> str:
        if self.tcp is None:
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.tcp.bind(("127.0.0.1", 0))
            self.tcp.listen(2)
            self.tcp.setblocking(False)
        return self.tcp_address() or ""

    def tcp_address(self) -> str | None:
        if self.tcp is None:
            return None
        host, port = self.tcp.getsockname()
        return f"{host}:{port}"

    def watched(self) -> dict[int, Callable[[], None]]:
        out: dict[int, Callable[[], None]] = {self.listener.fileno(): lambda: self._accept(self.listener)}
        if self.tcp is not None:
            tcp = self.tcp
            out[tcp.fileno()] = lambda: self._accept(tcp)
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
        if data:
            try:
                dst.setblocking(True)
                dst.settimeout(2.0)
                dst.sendall(data)
                dst.setblocking(False)
                return
            except OSError:
                pass
        self._drop()

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
        for sock in (self.listener, self.tcp):
            if sock is not None:
                sock.close()
        self.path.unlink(missing_ok=True)

    def client_detach_silently(self) -> None:
        for sock in (self.client, self.upstream):
            if sock is not None:
                sock.close()
        self.client = self.upstream = None
