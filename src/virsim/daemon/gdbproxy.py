"""A session's user-facing gdb endpoint: forwards one external debugger to the backend's stub.

The backend's gdb stub takes one client at a time and virsim's own debugger is usually that
client. When an external debugger (gdb-multiarch, an IDE) connects here, virsim's debugger
detaches first (`on_attach`), then bytes are forwarded both ways until either side closes; while
that lasts, virsim's debug commands answer DEBUGGER_BUSY. Only the session's user can connect:
the sockets live in the 0700 runtime dir and are 0600 themselves; TCP, when asked for, binds
127.0.0.1 and accepts a connection only when the kernel's socket table says the connecting socket
belongs to this user (`tcp_peer_uid`, from /proc/net/tcp): another local user's gdb is refused
before a byte reaches the stub. Several addresses can lead to the one stub: the session's `gdb.sock`, its per-name
socket and a TCP port; still one debugger at a time.

On the way to the stub, the packets that would end the emulator are answered here instead: the
emulator belongs to its virsim session, and only the session may stop it (`virsim session
power-off`). QEMU's stub quits QEMU on `monitor quit` (`qRcmd`, its HMP monitor), on `vKill`
and on `k`; the built-in engine's would not, but the rule is the same for every backend.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("virsim.daemon.gdbproxy")

QUIT_MONITOR_COMMANDS = {"quit", "q"}  # QEMU's HMP: `quit|q` ends QEMU


def tcp_peer_uid(conn: socket.socket) -> int | None:
    """The uid owning the other end of an accepted loopback TCP connection: the socket whose local
    address is our peer's and whose remote address is ours, in /proc/net/tcp; None if not found."""
    try:
        ours, theirs = conn.getsockname(), conn.getpeername()
    except OSError:
        return None

    def hexaddr(addr: tuple[str, int]) -> str:
        return socket.inet_aton(addr[0])[::-1].hex().upper() + f":{addr[1]:04X}"
    want_local, want_remote = hexaddr(theirs), hexaddr(ours)
    try:
        with open("/proc/net/tcp") as table:
            next(table)
            for line in table:
                fields = line.split()
                if len(fields) > 7 and fields[1] == want_local and fields[2] == want_remote:
                    return int(fields[7])
    except (OSError, ValueError, StopIteration):
        return None
    return None


def packet(body: bytes) -> bytes:
    """One GDB remote-protocol packet (`body` needs no escaping: hex text, OK, Enn)."""
    return b"$%s#%02x" % (body, sum(body) & 0xFF)


class GdbProxy:
    def __init__(self, path: Path, upstream: str, on_attach: Callable[[], None],
                 on_detach: Callable[[], None], session: str = "") -> None:
        self.path = path
        self.upstream_address = upstream
        self.on_attach = on_attach
        self.on_detach = on_detach
        self.session = session  # how the refusal messages name the session (its name)
        self.listeners: list[socket.socket] = []
        self._unix: list[tuple[Path, int]] = []  # socket paths we bound, with their inode
        self.listen_unix(path)
        self.tcp: socket.socket | None = None
        self.client: socket.socket | None = None
        self.upstream: socket.socket | None = None
        self._partial = b""  # the start of a client packet whose end has not arrived
        self._noack = False  # the client and the stub agreed on QStartNoAckMode
        self._noack_asked = False

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
        if conn.family == socket.AF_INET:
            uid = tcp_peer_uid(conn)
            if uid != os.getuid():
                log.warning("refused a debugger on TCP %s: it is uid %s's, not this user's", self.tcp_address(), uid)
                conn.close()
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
        self._partial, self._noack, self._noack_asked = b"", False, False
        log.info("external debugger attached via %s", self.path)

    def _forward(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            data = src.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            if src is self.client:
                data = self._filter(data)
            elif self._noack_asked and b"$" in data:  # the stub's answer to QStartNoAckMode
                self._noack, self._noack_asked = b"$OK#9a" in data, False
            if self._send(dst, data):
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

    def _filter(self, data: bytes) -> bytes:
        """The client's bytes to pass on to the stub; packets that would end the emulator are
        answered here. Acks and Ctrl-C pass as they are; a packet is held until its checksum is in."""
        buf, out, i = self._partial + data, bytearray(), 0
        while i < len(buf):
            start = buf.find(b"$", i)
            if start < 0:
                out += buf[i:]
                i = len(buf)
                break
            out += buf[i:start]
            end = buf.find(b"#", start)  # '#' inside a packet is always escaped
            if end < 0 or end + 3 > len(buf):
                i = start
                break
            body = buf[start + 1:end]
            if body == b"QStartNoAckMode":
                self._noack_asked = True
            answer = self._refuse(body)
            if answer is None:
                out += buf[start:end + 3]
            else:
                # Whatever came before goes first; the client waits for this answer anyway.
                if self.upstream is not None and not self._send(self.upstream, bytes(out)):
                    break
                out.clear()
                reply = (b"" if self._noack else b"+") + b"".join(packet(p) for p in answer)
                if self.client is not None and not self._send(self.client, reply):
                    break
            i = end + 3
        self._partial = buf[i:]
        return bytes(out)

    def _refuse(self, body: bytes) -> list[bytes] | None:
        """The packets answering `body` here, or None to pass it on. A stray `+` that the client
        sends to ack our answer reaches the stub, which ignores it (gdb sends these packets only
        to a stopped target)."""
        hint = f"virsim session power-off {self.session}".rstrip()
        if body.startswith(b"qRcmd,"):
            try:
                command = bytes.fromhex(body[6:].decode("ascii")).decode(errors="replace")
            except ValueError:
                return None
            words = command.split()
            if not words or words[0] not in QUIT_MONITOR_COMMANDS:
                return None
            log.info("external debugger: refused 'monitor %s' (it would end the emulator)", command.strip())
            text = (f"virsim: 'monitor {command.strip()}' would end the emulator behind virsim's back, so it "
                    f"was not passed on; the session keeps running. To stop it: {hint}\n")
            # Output, then OK: qRcmd's `E NN` means a malformed request (gdb: "Protocol error
            # with Rcmd") and would hide the text.
            return [b"O" + text.encode().hex().encode(), b"OK"]
        if body.startswith(b"vKill"):
            log.info("external debugger: refused vKill (it would end the emulator)")
            return [b"E01"]  # gdb: "Can't kill process"; the emulator and the connection stay
        if body == b"k":
            # No reply is expected; a plain `target remote` gdb closes the connection after it.
            log.info("external debugger: dropped k (it would end the emulator)")
            return []
        return None

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
