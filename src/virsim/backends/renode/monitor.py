"""Talking to Renode's monitor: one command, one reply, never a hang.

The monitor is a line protocol meant for people: it may open with telnet negotiation and colour
codes, echoes each command, prints output, and ends with a prompt, `(monitor) ` or `(<machine>) `.
An error is a line starting "There was an error executing command", "No such command or
device" or "Errors during compilation or loading". `Monitor` sends one command at a time
(refusing one with a newline in it), reads from its echo to the next prompt with a timeout on
every command, strips the negotiation and colours,
and raises EmulatorError with Renode's own words for an error. It works over any byte stream: `write(bytes)`
and `read(timeout)` returning what arrived, None when nothing did in time, b"" at the end (Renode's
`--console` pipes in the adapter).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from virsim.errors import EmulatorError, InvalidInput, Timeout

PROMPT = re.compile(rb"\((?:monitor|[A-Za-z][\w-]*)\) $")
TELNET = re.compile(rb"\xff[\xfb-\xfe].|\xff[\xf0-\xfa]")  # IAC WILL/WONT/DO/DONT x, IAC other
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
# The last: `include` of a C# file that does not compile (Renode prints the compiler's errors after it).
ERRORS = ("There was an error executing command", "No such command or device", "Errors during compilation or loading")
DEFAULT_TIMEOUT = 10.0


def clean(data: bytes) -> bytes:
    """Monitor output without telnet negotiation, colour codes and carriage returns."""
    return ANSI.sub(b"", TELNET.sub(b"", data)).replace(b"\r", b"")


class Monitor:
    def __init__(self, write: Callable[[bytes], None], read: Callable[[float], bytes | None],
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self._write, self._read, self.timeout = write, read, timeout
        self._buffer = b""

    def handshake(self, timeout: float = 30.0) -> str:
        """Wake the monitor (it may swallow the first line) and wait for its answer to `version`;
        the version. Prompts printed before (at start-up, for the blank line) are passed over: a
        reply counts from the echo of its own command."""
        self._write(b"\n")
        return self.command("version", timeout=timeout)

    def command(self, command: str, timeout: float | None = None) -> str:
        """Run one monitor command; its output (echo and prompt removed). The reply is what follows
        the monitor's echo of this command up to the next prompt: output left over from an earlier
        command (one that timed out, a late log line) never passes for this one's."""
        if any(c in command for c in "\r\n\x00"):
            raise InvalidInput(f"a Renode monitor command is one line: {command!r}", command=command)
        try:
            self._write(command.encode() + b"\n")
            reply = self._until_prompt(self.timeout if timeout is None else timeout, what=command,
                                       echo=command.strip().encode())
        except OSError as err:  # Renode (or the jail that carries its monitor) is gone
            raise EmulatorError(f"Renode's monitor is gone ({err.strerror or err}) while running {command!r}",
                                command=command) from err
        lines = reply.decode("utf-8", "replace").split("\n")
        text = "\n".join(lines).strip("\n")
        for line in lines:
            if line.strip().startswith(ERRORS):
                said = "; ".join(part.strip() for part in lines if part.strip())
                raise EmulatorError(f"Renode refused {command!r}: {said}", command=command, reply=text.strip()[-2000:])
        return text

    def _until_prompt(self, timeout: float, what: str = "", echo: bytes = b"") -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            data = clean(self._buffer)
            start = 0
            if echo:
                at = data.find(echo + b"\n")
                start = at + len(echo) + 1 if at >= 0 else -1
            match = PROMPT.search(data, start) if start >= 0 else None
            if match is not None:
                self._buffer = data[match.end():]
                return data[start:match.start()]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(f"Renode's monitor did not answer {what!r} within {timeout:g}s", command=what,
                              output=data.decode("utf-8", "replace")[-500:])
            chunk = self._read(remaining)
            if chunk is None:  # nothing yet
                continue
            if chunk == b"":  # end of stream: Renode is gone
                raise EmulatorError(f"Renode exited while running {what!r}", command=what,
                                    output=data.decode("utf-8", "replace")[-500:])
            self._buffer += chunk
