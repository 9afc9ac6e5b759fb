"""ARM semihosting for the built-in engine, confined to the session's folder.

Firmware that runs with `semihosting: true` (board node or `--semihosting`) calls the host with
`BKPT 0xAB`: r0 the operation, r1 its argument (usually the address of a parameter block); the
result goes back in r0. What is served: the file calls (SYS_OPEN, CLOSE, READ, WRITE, SEEK, FLEN,
ISTTY, ERRNO), the debug console (WRITEC, WRITE0 and `:tt`, written to semihosting.log in the
session folder, as on QEMU), time (CLOCK, TIME, ELAPSED, TICKFREQ: all virtual, so deterministic),
HEAPINFO and GET_CMDLINE (empty), and SYS_EXIT / SYS_EXIT_EXTENDED, which end the firmware.

Every path is resolved inside the session folder: an absolute path, `..` or a symlink that leads
out of it fails (-1, errno EACCES) instead of reaching the host's files. At most 32 files are open
and at most 256 MiB are written, so firmware cannot fill the disk.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from virsim.backends.base import SEMIHOSTING_LOG

SYS_OPEN, SYS_CLOSE, SYS_WRITEC, SYS_WRITE0, SYS_WRITE, SYS_READ, SYS_READC = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
SYS_ISERROR, SYS_ISTTY, SYS_SEEK, SYS_FLEN, SYS_CLOCK, SYS_TIME, SYS_ERRNO = 0x08, 0x09, 0x0A, 0x0C, 0x10, 0x11, 0x13
SYS_GET_CMDLINE, SYS_HEAPINFO, SYS_EXIT, SYS_EXIT_EXTENDED, SYS_ELAPSED, SYS_TICKFREQ = 0x15, 0x16, 0x18, 0x20, 0x30, 0x31
ADP_STOPPED_APPLICATION_EXIT = 0x20026
MAX_OPEN = 32
MAX_WRITTEN = 256 * 1024 * 1024
# fopen modes by their index (the semihosting spec's table)
_MODES = [os.O_RDONLY, os.O_RDONLY, os.O_RDWR, os.O_RDWR,
          os.O_WRONLY | os.O_CREAT | os.O_TRUNC, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
          os.O_RDWR | os.O_CREAT | os.O_TRUNC, os.O_RDWR | os.O_CREAT | os.O_TRUNC,
          os.O_WRONLY | os.O_CREAT | os.O_APPEND, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
          os.O_RDWR | os.O_CREAT | os.O_APPEND, os.O_RDWR | os.O_CREAT | os.O_APPEND]
CONSOLE_FD = 1  # ':tt', whichever mode


@dataclass
class Exit:
    """SYS_EXIT: the firmware is done; `status` 0 for ADP_Stopped_ApplicationExit."""
    status: int


class Memory:
    """What semihosting needs of the target: words and bytes of its memory."""

    def __init__(self, read: Callable[[int, int], bytes], write: Callable[[int, bytes], None]) -> None:
        self.read, self.write = read, write

    def word(self, address: int) -> int:
        return int.from_bytes(self.read(address, 4), "little")

    def words(self, address: int, n: int) -> list[int]:
        return [self.word(address + 4 * i) for i in range(n)]

    def cstring(self, address: int, limit: int = 4096) -> bytes:
        out = bytearray()
        while len(out) < limit:
            chunk = self.read(address + len(out), 64)
            end = chunk.find(b"\0")
            if end >= 0:
                return bytes(out + chunk[:end])
            out += chunk
        return bytes(out)


class Semihosting:
    def __init__(self, root: Path, clock_ns: Callable[[], int], frequency: int) -> None:
        self.root = root.resolve()
        self.clock_ns = clock_ns
        self.frequency = frequency
        self.files: dict[int, int] = {}  # semihosting handle -> host fd
        self.errno = 0
        self.written = 0
        self.console = open(self.root / SEMIHOSTING_LOG, "ab", buffering=0)  # noqa: SIM115 - engine lifetime

    def close(self) -> None:
        for fd in self.files.values():
            os.close(fd)
        self.files.clear()
        self.console.close()

    def call(self, op: int, arg: int, mem: Memory) -> int | Exit:
        """Serve operation `op` with argument `arg` (r1); the value for r0, or Exit."""
        try:
            return self._call(op, arg, mem)
        except OSError as err:
            self.errno = err.errno or errno.EIO
            return -1

    def _call(self, op: int, arg: int, mem: Memory) -> int | Exit:
        if op == SYS_OPEN:
            name_at, mode, length = mem.words(arg, 3)
            return self._open(mem.read(name_at, min(length, 4096)).decode("utf-8", "replace"), mode)
        if op == SYS_CLOSE:
            handle = mem.word(arg)
            if handle == CONSOLE_FD:
                return 0
            fd = self.files.pop(handle, None)
            if fd is None:
                return self._fail(errno.EBADF)
            os.close(fd)
            return 0
        if op == SYS_WRITEC:
            self._console(mem.read(arg, 1))
            return 0
        if op == SYS_WRITE0:
            self._console(mem.cstring(arg))
            return 0
        if op == SYS_WRITE:
            handle, at, length = mem.words(arg, 3)
            data = mem.read(at, length) if length else b""
            if handle == CONSOLE_FD:
                self._console(data)
                return 0
            fd = self.files.get(handle)
            if fd is None:
                self._fail(errno.EBADF)
                return length  # none of it written
            if self.written + len(data) > MAX_WRITTEN:
                self.errno = errno.EFBIG
                return length
            n = os.write(fd, data)
            self.written += n
            return length - n
        if op == SYS_READ:
            handle, at, length = mem.words(arg, 3)
            fd = self.files.get(handle)
            if fd is None:
                if handle != CONSOLE_FD:
                    self._fail(errno.EBADF)
                return length  # none of it read
            data = os.read(fd, min(length, 1024 * 1024))
            if data:
                mem.write(at, data)
            return length - len(data)
        if op == SYS_READC:
            return -1  # no console input through semihosting: the UART carries it
        if op == SYS_ISERROR:
            return 1 if mem.word(arg) >= 0x80000000 else 0
        if op == SYS_ISTTY:
            return 1 if mem.word(arg) == CONSOLE_FD else 0
        if op == SYS_SEEK:
            handle, position = mem.words(arg, 2)
            fd = self.files.get(handle)
            if fd is None:
                return self._fail(errno.EBADF)
            os.lseek(fd, position, os.SEEK_SET)
            return 0
        if op == SYS_FLEN:
            fd = self.files.get(mem.word(arg))
            return os.fstat(fd).st_size if fd is not None else self._fail(errno.EBADF)
        if op == SYS_CLOCK:
            return self.clock_ns() // 10_000_000  # centiseconds of virtual time
        if op == SYS_TIME:
            return self.clock_ns() // 1_000_000_000  # virtual seconds: the same on every run
        if op == SYS_ELAPSED:
            ticks = self.clock_ns() * self.frequency // 1_000_000_000
            mem.write(arg, (ticks & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"))
            return 0
        if op == SYS_TICKFREQ:
            return self.frequency
        if op == SYS_ERRNO:
            return self.errno
        if op == SYS_GET_CMDLINE:
            at, _length = mem.words(arg, 2)
            mem.write(at, b"\0")
            mem.write(arg + 4, (0).to_bytes(4, "little"))
            return 0
        if op == SYS_HEAPINFO:
            mem.write(mem.word(arg), bytes(16))  # zeros: the C library keeps its linker-script defaults
            return 0
        if op == SYS_EXIT:
            return Exit(0 if arg == ADP_STOPPED_APPLICATION_EXIT else 1)
        if op == SYS_EXIT_EXTENDED:
            reason, subcode = mem.words(arg, 2)
            return Exit(subcode & 0xFF if reason == ADP_STOPPED_APPLICATION_EXIT else 1)
        return self._fail(errno.ENOSYS)

    def _open(self, name: str, mode: int) -> int:
        if name == ":tt":
            return CONSOLE_FD
        if not 0 <= mode < len(_MODES):
            return self._fail(errno.EINVAL)
        if len(self.files) >= MAX_OPEN:
            return self._fail(errno.EMFILE)
        path = (self.root / name).resolve()
        if path != self.root and self.root not in path.parents:
            return self._fail(errno.EACCES)  # outside the session folder: the host's files stay the host's
        fd = os.open(path, _MODES[mode] | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        handle = next(h for h in range(3, 3 + MAX_OPEN + 1) if h not in self.files)
        self.files[handle] = fd
        return handle

    def _console(self, data: bytes) -> None:
        self.console.write(data)

    def _fail(self, code: int) -> int:
        self.errno = code
        return -1
