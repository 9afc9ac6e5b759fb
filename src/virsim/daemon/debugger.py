"""A GDB/MI driver: one `gdb-multiarch` per debugged session, attached to the backend's gdb stub.

GDB does what a debugger must get right and virsim should not reimplement: DWARF symbols and
file:line, expressions in the program's terms, conditional/temporary/ignore-count breakpoints,
watchpoints, step/next/finish, backtraces, stepping off a breakpoint before continuing (QEMU's stub
reports the same breakpoint again otherwise). The process is driven here directly (not through
pygdbmi's polling controller, which adds ~200 ms a call) and its records are read by mi.py (not
pygdbmi's parser, ~10x slower; tests check the two agree); gdb's stdout is one more fd in the
daemon's poll loop so asynchronous stops arrive as events.

GDB runs in all-stop mode with `mi-async on`: the daemon can send commands while the target runs.
Breakpoints cannot be inserted into a running remote target, so changes made while it runs go
through `halted()`: interrupt, change, continue — invisible to the user except as a short pause.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from virsim.backends.process import minimal_env, set_parent_death_signal
from virsim.daemon.mi import parse_record
from virsim.errors import DebugCommandFailed, EmulatorError, EmulatorMissing, Timeout

GDB = "gdb-multiarch"
_REG_VALUE = re.compile(r'number="(\d+)",value="(0x[0-9a-fA-F]+)"')
_CONTENTS = re.compile(r'contents="([0-9a-fA-F]*)"')
INSTALL_HINT = "sudo apt-get install -y gdb-multiarch"
Record = dict[str, Any]


GdbError = DebugCommandFailed  # what GDB's ^error becomes


def gdb_binary() -> str:
    path = shutil.which(GDB)
    if path is None:
        raise EmulatorMissing(f"{GDB} is not installed: {INSTALL_HINT}", binary=GDB, install=INSTALL_HINT)
    return path


def mi_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Debugger:
    """One GDB process driving one target over the GDB remote protocol."""

    def __init__(self, elf: Path | None, endpoint: str, on_stop: Callable[[Record], None],
                 log: Path | None = None, cwd: Path | None = None) -> None:
        self.elf = elf
        self.endpoint = endpoint
        self.on_stop = on_stop
        self.running = False
        self._token = 0
        self._buf = b""
        self._pending: list[Record] = []  # async records seen while waiting for a result
        self._names: list[str] | None = None
        self._raw_token: int | None = None
        args = [gdb_binary(), "--interpreter=mi3", "-q", "-nx"]
        if cwd is not None:
            # Runs in the session's runtime dir (the relative paths it is given); it dies with the
            # daemon (PR_SET_PDEATHSIG), so none is left holding the stub after a crash.
            args.append(f"--cd={cwd}")
        self._log = log.open("ab") if log else None
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log or subprocess.DEVNULL, start_new_session=True,
                                     env=minimal_env(),
                                     preexec_fn=set_parent_death_signal)  # no debugger outlives the daemon
        assert self.proc.stdout is not None and self.proc.stdin is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        try:
            for setting in ("pagination off", "confirm off", "mi-async on", "print pretty off",
                            "breakpoint pending off", "remotetimeout 5", "width 0", "height 0"):
                self.command(f"-gdb-set {setting}")
            if elf is not None:
                self.command(f"-file-exec-and-symbols {mi_quote(str(elf))}")
            self.command(f"-target-select remote {endpoint}", timeout=10)
        except BaseException:
            self.close()
            raise
        self.running = False  # QEMU halts the CPU when a debugger connects
        self._pending.clear()  # that initial halt is not a stop anyone asked for

    # ------------------------------------------------------------------------------------- plumbing

    def fileno(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read_records(self, timeout: float) -> list[Record]:
        """Records from whatever GDB has written within `timeout` seconds (maybe none)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        if b"\n" not in self._buf:
            ready, _, _ = select.select([fd], [], [], timeout)
            if ready:
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    chunk = b""
                if not chunk and self.proc.poll() is not None:
                    raise EmulatorError("gdb exited", returncode=self.proc.returncode)
                self._buf += chunk
        records = []
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            text = line.decode(errors="replace").rstrip("\r")
            if self._log:
                self._log.write(b"<- " + line + b"\n")
            if not text or text == "(gdb) ":
                continue
            if self._raw_token is not None and text.startswith(f"{self._raw_token}^done"):
                records.append({"type": "result", "message": "done", "payload": None, "token": self._raw_token,
                                "raw": text})
                continue
            records.append(parse_record(text))
        return records

    def command(self, cmd: str, timeout: float = 5.0, raw: bool = False) -> Record:
        """Send one MI command and return its result record; async records are queued.
        With raw=True a `done` result is not parsed: rec["raw"] is its text, for hot paths."""
        assert self.proc.stdin is not None
        self._token += 1
        token = self._token
        line = f"{token}{cmd}\n".encode()
        self._raw_token = token if raw else None
        if self._log:
            self._log.write(b"-> " + line)
        try:
            self.proc.stdin.write(line)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as err:
            raise EmulatorError(f"gdb is gone ({err})") from err
        deadline = time.monotonic() + timeout
        console: list[str] = []
        result: Record | None = None
        while result is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(f"gdb did not answer {cmd.split()[0]} within {timeout:g}s", command=cmd)
            # Every record of the batch is taken in order, also those after the result: a stop
            # that follows ^running in the same read must not be lost.
            for rec in self._read_records(remaining):
                if result is None and rec["type"] == "result" and rec.get("token") == token:
                    result = rec
                    if rec["message"] == "running":
                        self.running = True
                elif rec["type"] == "console" and result is None:
                    console.append(str(rec.get("payload") or ""))
                elif rec["type"] == "notify":
                    self._note(rec)
        if result["message"] == "error":
            msg = (result.get("payload") or {}).get("msg", "gdb error")
            raise GdbError(msg, gdb_message=msg, command=cmd)
        result["console"] = "".join(console)
        return result

    def _note(self, rec: Record) -> None:
        if rec.get("message") == "running":
            self.running = True
        elif rec.get("message") == "stopped":
            self.running = False
            self._pending.append(rec)

    def pump(self) -> list[Record]:
        """Read what GDB sent on its own (called when its fd is readable) and report stops."""
        for rec in self._read_records(0):
            if rec["type"] == "notify":
                self._note(rec)
        return self.dispatch()

    def dispatch(self) -> list[Record]:
        stops, self._pending = self._pending, []
        reported = []
        for rec in stops:
            payload = rec.get("payload") or {}
            self.on_stop(payload)
            reported.append(payload)
        return reported

    def wait_stopped(self, timeout: float) -> Record:
        """Block until the target stops (used for our own interrupts)."""
        deadline = time.monotonic() + timeout
        while self.running:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(f"the target did not stop within {timeout:g}s")
            for rec in self._read_records(remaining):
                if rec["type"] == "notify":
                    self._note(rec)
        return self._pending[-1].get("payload", {}) if self._pending else {}

    # ----------------------------------------------------------------------------- run control

    def interrupt(self, quiet: bool = False) -> bool:
        """Stop the target; True if it stopped for this interrupt, False if it stopped on its own
        meanwhile (a breakpoint, a fault halt): that stop is a real one and is reported however
        `quiet` is. `quiet`: our own stop is not reported (halted() reads and resumes)."""
        if not self.running:
            return True
        # An interrupt that lands while gdb is still resuming the target (stepping it off a
        # breakpoint) can be lost: ask again every second, for up to 10 s.
        for _attempt in range(10):
            try:
                self.command("-exec-interrupt")
            except DebugCommandFailed:
                pass  # it stopped meanwhile: gdb refuses to interrupt a stopped target
            try:
                payload = self.wait_stopped(1.0)
            except Timeout:
                continue
            ours = payload.get("reason") == "signal-received" and payload.get("signal-name") in ("SIGINT", "0")
            if ours and quiet and self._pending:
                self._pending.pop()
            return ours
        raise Timeout("the target did not stop within 10s of interrupts")

    def resume(self) -> None:
        if not self.running:
            self.command("-exec-continue")

    @contextmanager
    def halted(self) -> Iterator[bool]:
        """Hold the target stopped for the body; resume afterwards if it was running. Yields
        whether it was running."""
        was_running = self.running
        if was_running:
            # A target that stopped on its own while we halted it (a fault, a breakpoint) stays
            # stopped, and that stop is reported: resuming it would lose the stop.
            was_running = self.interrupt(quiet=True)
            self.dispatch()
        try:
            yield was_running
        finally:
            if was_running and self.alive():
                self.command("-exec-continue")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                if self.running:
                    self.interrupt(quiet=True)
                self.command("-target-detach", timeout=2)
            except Exception:  # gdb or the target may already be gone; we only want it to end
                pass
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"-gdb-exit\n")
                self.proc.stdin.flush()
                self.proc.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(2)
        self._release()

    def kill(self) -> None:
        """End gdb at once (its target is going away anyway)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(2)
        self._release()

    def _release(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass  # a write buffered for a gdb that is gone
        if self._log:
            self._log.close()
            self._log = None

    # ---------------------------------------------------------------------------------- queries

    def evaluate(self, expression: str) -> str:
        return str(self.command(f"-data-evaluate-expression {mi_quote(expression)}")["payload"]["value"])

    def cli(self, line: str) -> str:
        """A GDB console command's output (for things MI has no command for)."""
        return str(self.command(f"-interpreter-exec console {mi_quote(line)}")["console"])

    def read_memory(self, address: int, size: int) -> bytes:
        rec = self.command(f"-data-read-memory-bytes {address:#x} {size}", raw=True)
        out = b"".join(bytes.fromhex(block) for block in _CONTENTS.findall(rec["raw"]))
        if len(out) != size:
            raise GdbError(f"could read only {len(out)} of {size} bytes at {address:#x}")
        return out

    def write_memory(self, address: int, data: bytes) -> None:
        self.command(f"-data-write-memory-bytes {address:#x} {data.hex()}")

    def register_names(self) -> list[str]:
        """The target's register names by gdb number (fixed for a connection: asked once)."""
        if self._names is None:
            self._names = list(self.command("-data-list-register-names")["payload"]["register-names"])
        return self._names

    def register_values(self, numbers: list[int] | None = None) -> dict[int, int]:
        which = " " + " ".join(map(str, numbers)) if numbers else ""
        rec = self.command(f"-data-list-register-values x{which}", raw=True)
        # The hot path of `debug regs`: a dedicated pattern instead of the general MI parser.
        # Vector registers print as {…} and do not match: not part of the scopes we show.
        return {int(n): int(v, 16) for n, v in _REG_VALUE.findall(rec["raw"])}

    def frame(self) -> Record:
        return dict(self.command("-stack-info-frame")["payload"]["frame"])

    def backtrace(self, limit: int = 32) -> list[Record]:
        rec = self.command(f"-stack-list-frames 0 {limit - 1}")
        return [dict(f) for f in rec["payload"]["stack"]]
