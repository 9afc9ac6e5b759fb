"""QEMU's console keeper: the process that writes a QEMU session's console log.

QEMU's own `logfile=` cannot be the record: QEMU 7.2 logs a buffer again whenever the socket it
writes to answers EAGAIN (the UART retries the same bytes later), so a reader that falls behind
doubles bytes in the log. The keeper is the one reader of QEMU's console socket: it appends what
it receives — exactly the bytes QEMU delivered, once — to the log, then passes them on to the
daemon as a wake-up. Input from the daemon is queued and handed to QEMU only while QEMU takes it,
so a UART that does not read never stalls the output.

It runs in a process of its own (started next to QEMU, in its own session), so the log keeps
growing while the daemon is down or restarting; it ends when QEMU closes the console (QEMU exited).

Run as a plain script with the standard library only (`python -I -S keeper.py`), so it starts in a
few milliseconds:  keeper.py QEMU_SOCKET LISTEN_SOCKET LOG_FILE
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import socket
import sys
import time

CONNECT_TIMEOUT = 10.0  # s to wait for QEMU's console socket to appear


def _connect(path: str) -> socket.socket:
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError as err:
            sock.close()
            if err.errno not in (errno.ENOENT, errno.ECONNREFUSED) or time.monotonic() > deadline:
                raise
            time.sleep(0.002)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main(argv: list[str]) -> int:
    qemu_path, listen_path, log_path = argv
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the daemon's terminal going away is not our end
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    qemu = _connect(qemu_path)
    qemu.setblocking(False)
    # Listening only once QEMU's console is ours: the daemon's connect doubles as "keeper ready".
    tmp = listen_path + ".tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(tmp)
    os.chmod(tmp, 0o600)
    listener.listen(2)
    os.replace(tmp, listen_path)
    listener.setblocking(False)

    sel = selectors.DefaultSelector()
    sel.register(qemu, selectors.EVENT_READ, "qemu")
    sel.register(listener, selectors.EVENT_READ, "listener")
    daemon: socket.socket | None = None
    pending = bytearray()  # input the daemon sent that QEMU has not taken yet
    writing = False  # watching QEMU's socket for room to send `pending`

    def close_daemon() -> None:
        nonlocal daemon
        if daemon is not None:
            sel.unregister(daemon)
            daemon.close()
            daemon = None

    while True:
        for key, mask in sel.select():
            if key.data == "qemu":
                if mask & selectors.EVENT_READ:
                    try:
                        data = qemu.recv(65536)
                    except BlockingIOError:
                        data = None
                    if data == b"":
                        return 0  # QEMU closed the console: it has exited
                    if data:
                        _write_all(log, data)
                        if daemon is not None:
                            try:
                                daemon.send(data)  # a wake-up only: the log is the record
                            except BlockingIOError:
                                pass
                            except OSError:
                                close_daemon()
                if mask & selectors.EVENT_WRITE and pending:
                    try:
                        del pending[:qemu.send(pending)]
                    except BlockingIOError:
                        pass
            elif key.data == "listener":
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                close_daemon()  # the newest client wins: a restarted daemon reconnects
                daemon = conn
                daemon.setblocking(False)
                sel.register(daemon, selectors.EVENT_READ, "daemon")
            elif key.data == "daemon" and daemon is not None:
                try:
                    data = daemon.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    close_daemon()
                    continue
                pending.extend(data)
            if writing != bool(pending):
                writing = bool(pending)
                sel.modify(qemu, selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0), "qemu")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
