"""A small synchronous QMP client over a Unix socket (QEMU's JSON machine protocol).

The daemon is single-threaded and its QMP calls are short (stop/cont/system_reset/query-status),
so a blocking client with a deadline is all it needs. Asynchronous QMP events that arrive while
waiting for a reply are kept in `events` for the instance to look at.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from virsim.errors import EmulatorError


class QMPError(EmulatorError):
    """QEMU answered a QMP command with an error."""

    code = "EMULATOR_FAILED"


class QMPClient:
    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._sock: socket.socket | None = None
        self._buf = b""
        self._next_id = 0

    def connect(self, deadline: float) -> None:
        """Connect (retrying until `deadline` while QEMU creates the socket) and negotiate."""
        last: OSError | None = None
        while time.monotonic() < deadline:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
            except OSError as err:
                sock.close()
                last = err
                time.sleep(0.002)
                continue
            self._sock = sock
            sock.settimeout(self.timeout)
            greeting = self._read_message()
            if "QMP" not in greeting:
                raise EmulatorError(f"unexpected QMP greeting from {self.path}: {greeting}")
            self.version = greeting["QMP"].get("version", {}).get("qemu", {})
            self.execute("qmp_capabilities")
            return
        raise EmulatorError(f"QMP socket {self.path} did not accept a connection in time: {last}")

    def fileno(self) -> int:
        assert self._sock is not None
        return self._sock.fileno()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _read_message(self) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout as err:
                raise EmulatorError(f"QEMU did not answer on QMP within {self.timeout}s") from err
            except OSError as err:  # e.g. reset: QEMU died while we waited
                raise EmulatorError(f"QMP connection lost: {err}") from err
            if not chunk:
                raise EmulatorError("QEMU closed the QMP connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        return msg

    def drain_events(self) -> list[dict[str, Any]]:
        """Read whatever events are waiting without blocking; return and clear the event list."""
        assert self._sock is not None
        self._sock.setblocking(False)
        try:
            while True:
                try:
                    chunk = self._sock.recv(65536)
                except BlockingIOError:
                    break
                except OSError:
                    break
                if not chunk:
                    break
                self._buf += chunk
        finally:
            self._sock.settimeout(self.timeout)
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            msg = json.loads(line)
            if "event" in msg:
                self.events.append(msg)
        out, self.events = self.events, []
        return out

    def _send(self, command: str, arguments: dict[str, Any]) -> str:
        if self._sock is None:
            raise EmulatorError("QMP is not connected")
        self._next_id += 1
        ident = f"virsim-{self._next_id}"
        msg: dict[str, Any] = {"execute": command, "id": ident}
        if arguments:
            msg["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as err:
            raise EmulatorError(f"QMP {command} failed: {err}") from err
        return ident

    def _result(self, command: str, ident: str) -> Any:
        while True:
            reply = self._read_message()
            if "event" in reply:
                self.events.append(reply)
                continue
            if reply.get("id") != ident:
                continue  # the reply of an earlier post()
            if "error" in reply:
                raise QMPError(f"QMP {command} failed: {reply['error'].get('desc')}", qmp_error=reply["error"])
            return reply.get("return")

    def execute(self, command: str, **arguments: Any) -> Any:
        return self._result(command, self._send(command, arguments))

    def pipeline(self, *commands: tuple[str, dict[str, Any]]) -> list[Any]:
        """Send several commands in one write, then collect their results in order: QEMU runs
        them one after the other, and the caller waits one round trip instead of one each."""
        idents = [self._send(command, arguments) for command, arguments in commands]
        return [self._result(command, ident) for (command, _), ident in zip(commands, idents)]

    def post(self, command: str, **arguments: Any) -> None:
        """Send without waiting; the next call skips its reply. For commands whose failure would
        change nothing the caller does next (`cont` after a restore)."""
        self._send(command, arguments)

    def hmp(self, command_line: str) -> str:
        return str(self.execute("human-monitor-command", **{"command-line": command_line}))
