"""Renode's jail: a network namespace of its own, and Unix sockets as the only way in.

Stock Renode binds its monitor, socket terminals and GDB server to 0.0.0.0 (field notes). This
launcher gives it a network namespace with nothing but a loopback interface, so no port it opens
is reachable from the network or from another user on the machine, and it is the session's only
door to those ports, through Unix sockets in the session's runtime dir (mode 0600):

- `monitor.sock`: Renode's monitor, which runs on Renode's stdin/stdout (`--console`); the newest
  client wins (a restarted daemon reconnects). Output while no client is connected is dropped: the
  monitor is request/response and the client re-synchronises on its prompt.
- `console.sock`: the console keeper, as QEMU's (qemu/keeper.py): the jail connects to Renode's
  server-socket terminal (`--term-port`, inside the namespace) whenever it is listening, appends
  every byte it sends to the session's console log, passes them on to the daemon as a wake-up and
  hands the daemon's input to the terminal. A `Load` drops the terminal: the jail reconnects once
  it is re-created, and counts connections in `term.connected` so the adapter can wait for one.
- `<name>.sock` for each `--forward name=port`: every connection is spliced to 127.0.0.1:port in
  the namespace (Renode's GDB server).

It unshares the network namespace (as root), or a user and network namespace (as anyone else),
before starting Renode, and ends when Renode does, with its exit code; Renode gets SIGKILL if the
jail dies. Stdlib only, run as a plain script (`python -I -S jail.py ...`), like the keeper.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
NAMESPACE_FAILED = 86  # exit code: no namespace could be made (the adapter says so)
_RETRY = 0.02  # s between attempts to reach the terminal while it is not listening


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def isolate() -> str:
    """Move this process into a new network namespace; which kind it made."""
    libc = _libc()
    if libc.unshare(CLONE_NEWNET) == 0:
        how = "network namespace"
    else:
        uid, gid = os.getuid(), os.getgid()
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWUSER|CLONE_NEWNET): {os.strerror(err)}")
        # Renode runs as "root" of its own user namespace: the same user outside it.
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"0 {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"0 {gid} 1")
        how = "user and network namespace"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # bring `lo` up: a new namespace has it down
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH", b"lo", 0))[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))
    return how


def _die_with_parent() -> None:
    _libc().prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _listen(path: str) -> socket.socket:
    tmp = path + ".tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(tmp)
    os.chmod(tmp, 0o600)
    sock.listen(4)
    os.replace(tmp, path)  # the path appears only once it accepts
    sock.setblocking(False)
    return sock


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _send_all(sock: socket.socket, data: bytes) -> None:
    sock.setblocking(True)
    try:
        sock.sendall(data)
    finally:
        sock.setblocking(False)


class Jail:
    def __init__(self, args: argparse.Namespace, renode: subprocess.Popen[bytes]) -> None:
        self.args, self.renode = args, renode
        self.sel = selectors.DefaultSelector()
        self.log = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        assert renode.stdout is not None and renode.stdin is not None
        os.set_blocking(renode.stdout.fileno(), False)
        self.sel.register(renode.stdout, selectors.EVENT_READ, ("renode", None))
        self.monitor: socket.socket | None = None
        self.daemon: socket.socket | None = None  # the console's client
        self.term: socket.socket | None = None
        self.term_next = 0.0
        self.connections = 0
        self.pending = bytearray()  # console input the terminal has not taken yet
        self.pairs: dict[socket.socket, socket.socket] = {}
        self.forwards = dict(f.split("=", 1) for f in args.forward)
        for name, listener in [("monitor", _listen(os.path.join(args.rundir, "monitor.sock"))),
                               ("console", _listen(os.path.join(args.rundir, "console.sock"))),
                               *((name, _listen(os.path.join(args.rundir, f"{name}.sock"))) for name in self.forwards)]:
            self.sel.register(listener, selectors.EVENT_READ, ("listen", name))

    # ------------------------------------------------------------------ connections
    def _drop(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def _accept(self, listener: socket.socket, name: str) -> None:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        if name == "monitor":
            self._drop(self.monitor)  # the newest client wins
            self.monitor = conn
            self.sel.register(conn, selectors.EVENT_READ, ("monitor", None))
        elif name == "console":
            self._drop(self.daemon)
            self.daemon = conn
            self.sel.register(conn, selectors.EVENT_READ, ("daemon", None))
        else:
            inner = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                inner.connect(("127.0.0.1", int(self.forwards[name])))
            except OSError:
                inner.close()
                conn.close()  # nothing listens there (yet): the client sees the connection end
                return
            inner.setblocking(False)
            self.pairs[conn], self.pairs[inner] = inner, conn
            self.sel.register(conn, selectors.EVENT_READ, ("pair", None))
            self.sel.register(inner, selectors.EVENT_READ, ("pair", None))

    def _unpair(self, sock: socket.socket) -> None:
        other = self.pairs.pop(sock, None)
        if other is not None:
            self.pairs.pop(other, None)
            self._drop(other)
        self._drop(sock)

    def _try_terminal(self) -> None:
        if self.term is not None or not self.args.term_port or time.monotonic() < self.term_next:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.connect(("127.0.0.1", self.args.term_port))
        except OSError:
            sock.close()
            self.term_next = time.monotonic() + _RETRY
            return
        sock.setblocking(False)
        self.term = sock
        self.sel.register(sock, selectors.EVENT_READ, ("term", None))
        self.connections += 1
        mark = os.path.join(self.args.rundir, "term.connected")
        with open(mark + ".tmp", "w") as f:
            f.write(str(self.connections))
        os.replace(mark + ".tmp", mark)
        self._flush_input()

    def _flush_input(self) -> None:
        if self.term is None or not self.pending:
            return
        try:
            del self.pending[:self.term.send(self.pending)]
        except BlockingIOError:
            pass
        except OSError:
            self._terminal_gone()

    def _terminal_gone(self) -> None:
        self._drop(self.term)
        self.term = None
        self.term_next = time.monotonic() + _RETRY

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        assert self.renode.stdout is not None and self.renode.stdin is not None
        while True:
            timeout = None
            if self.args.term_port and self.term is None:
                timeout = max(0.0, self.term_next - time.monotonic())
            elif self.pending:
                timeout = _RETRY
            for key, _mask in self.sel.select(timeout):
                kind, name = key.data
                sock = key.fileobj
                if kind == "listen":
                    self._accept(sock, name)  # type: ignore[arg-type]
                elif kind == "renode":
                    try:
                        data = os.read(self.renode.stdout.fileno(), 65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        return self.renode.wait()
                    if self.monitor is not None:
                        try:
                            _send_all(self.monitor, data)
                        except OSError:
                            self._drop(self.monitor)
                            self.monitor = None
                elif kind == "monitor":
                    data = self._recv(sock)  # type: ignore[arg-type]
                    if data is None:
                        continue
                    if not data:
                        self._drop(self.monitor)
                        self.monitor = None
                        continue
                    try:
                        self.renode.stdin.write(data)
                        self.renode.stdin.flush()
                    except OSError:
                        return self.renode.wait()
                elif kind == "daemon":
                    data = self._recv(sock)  # type: ignore[arg-type]
                    if data is None:
                        continue
                    if not data:
                        self._drop(self.daemon)
                        self.daemon = None
                        continue
                    self.pending.extend(data)
                    self._flush_input()
                elif kind == "term":
                    data = self._recv(sock)  # type: ignore[arg-type]
                    if data is None:
                        continue
                    if not data:
                        self._terminal_gone()  # a Load dropped it; it comes back when re-created
                        continue
                    _write_all(self.log, data)
                    if self.daemon is not None:
                        try:
                            self.daemon.send(data)  # a wake-up only: the log is the record
                        except BlockingIOError:
                            pass
                        except OSError:
                            self._drop(self.daemon)
                            self.daemon = None
                elif kind == "pair":
                    data = self._recv(sock)  # type: ignore[arg-type]
                    if data is None:
                        continue
                    other = self.pairs.get(sock)  # type: ignore[arg-type]
                    if not data or other is None:
                        self._unpair(sock)  # type: ignore[arg-type]
                        continue
                    try:
                        _send_all(other, data)
                    except OSError:
                        self._unpair(sock)  # type: ignore[arg-type]
            self._try_terminal()
            self._flush_input()

    @staticmethod
    def _recv(sock: socket.socket) -> bytes | None:
        """What arrived; b"" at the end of the stream; None for nothing after all (a spurious wake-up)."""
        try:
            return sock.recv(65536)
        except BlockingIOError:
            return None
        except OSError:
            return b""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="jail.py")
    parser.add_argument("--rundir", required=True)
    parser.add_argument("--log", required=True, help="the console log to append to")
    parser.add_argument("--term-port", type=int, default=0)
    parser.add_argument("--forward", action="append", default=[], metavar="NAME=PORT")
    parser.add_argument("--tmpdir", help="Renode's TMPDIR (it deletes other instances' renode-* temp dirs)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the daemon's terminal going away is not our end
    try:
        how = isolate()
    except OSError as err:
        print(f"virsim renode jail: cannot give Renode a network namespace of its own ({err}); "
              "virsim does not run Renode without one (it would listen on every interface)", file=sys.stderr)
        return NAMESPACE_FAILED
    print(f"virsim renode jail: Renode runs in a {how} of its own", file=sys.stderr, flush=True)
    env = dict(os.environ, **({"TMPDIR": args.tmpdir} if args.tmpdir else {}))
    renode = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                              preexec_fn=_die_with_parent)

    def stop(*_: object) -> None:
        renode.terminate()
        try:
            renode.wait(3)
        except subprocess.TimeoutExpired:
            renode.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        return Jail(args, renode).run()
    except OSError as err:
        if err.errno == errno.EPIPE:
            return renode.wait()
        raise
    finally:
        if renode.poll() is None:
            renode.kill()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
