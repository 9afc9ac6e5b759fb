"""An instance that is one supervised emulator process: what QEMU and the built-in engine share.

The process is started halted, with its sockets in the session's runtime dir: a control channel
(QMP for QEMU, engine.sock for the built-in engine) and the console socket (the emulator itself
appends console output to the session's log; the socket brings input and says "bytes arrived").
Once both are connected the CPU is started, unless the spec says paused. A firmware that ends
the process the moment it runs (a lockup) still counts as started: supervision then reports the
session failed with the reason. A backend supplies its command line and its control channel.
"""

from __future__ import annotations

import socket
import time
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from virsim.backends.base import Instance, InstanceSpec
from virsim.backends.process import EmulatorProcess, ExitStatus
from virsim.errors import EmulatorError

T = TypeVar("T", bound="SupervisedInstance")


class SupervisedInstance(Instance):
    emulator: ClassVar[str] = "the emulator"  # how messages name it
    sockets: ClassVar[tuple[str, ...]] = ("console.sock", "gdbstub.sock")  # in the runtime dir
    start_timeout: ClassVar[float] = 10.0

    def __init__(self, spec: InstanceSpec) -> None:
        super().__init__(spec)
        self.proc: EmulatorProcess | None = None
        # Processes that run beside the emulator for as long as it runs (QEMU's console keeper):
        # saved in the handle, re-attached, counted as the instance's, stopped after it.
        self.companions: dict[str, EmulatorProcess] = {}
        self.console: socket.socket | None = None
        self.command: list[str] = []

    # ---------------------------------------------------------------- what a backend provides
    @abstractmethod
    def _command(self) -> list[str]:
        """The command line (and anything to prepare before it runs)."""

    @abstractmethod
    def _open_control(self, deadline: float) -> None:
        """Connect the control channel; raise EmulatorError if it does not answer by `deadline`."""

    @abstractmethod
    def _close_control(self) -> None: ...

    @abstractmethod
    def _control_open(self) -> bool: ...

    @abstractmethod
    def _start(self) -> None:
        """Let the halted CPU run."""

    @abstractmethod
    def _quit(self) -> None:
        """Ask the process to exit (it is stopped anyway if it does not)."""

    def _console_written(self) -> None:
        """After console input was written (QEMU nudges its main loop here)."""

    def _after_launch(self) -> None:
        """The emulator process was just started (or re-attached): start what runs beside it and
        is not running (QEMU's console keeper), into `self.companions`."""

    def _console_path(self) -> Path | None:
        """The console socket the daemon connects to; None: this instance has no console channel."""
        return self.spec.rundir / "console.sock"

    # ---------------------------------------------------------------- supervision
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def pids(self) -> list[int]:
        return ([self.proc.pid] if self.proc else []) + [c.pid for c in self.companions.values()]

    def handle(self) -> dict[str, Any]:
        return {"process": self.proc.info() if self.proc else None, "command": self.command,
                "companions": {name: c.info() for name, c in self.companions.items()}}

    def exit_status(self) -> ExitStatus | None:
        if self.proc is None:
            return None
        status = self.proc.poll()
        if status is not None:
            return status
        for name, companion in self.companions.items():
            gone = companion.poll()
            if gone is not None:  # the emulator lives on, but without it (e.g. its console unlogged)
                return ExitStatus(gone.returncode, f"lost its {name}: it {gone.reason}", gone.stderr_tail)
        return None

    def poll_fds(self) -> list[int]:
        return [self.console.fileno()] if self.console is not None else []

    def on_readable(self, fd: int) -> None:
        # The console log (written by the emulator) is the record; this socket says bytes arrived.
        assert self.console is not None
        try:
            data = self.console.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_channels()

    def _connect(self, deadline: float) -> None:
        try:
            self._open_control(deadline)
        except EmulatorError as err:
            status = self.exit_status()
            if status is not None:
                raise EmulatorError(f"{self.emulator} {status.reason} while starting: "
                                    f"{status.stderr_tail or 'no output'}", stderr_tail=status.stderr_tail,
                                    returncode=status.returncode) from err
            raise
        path = self._console_path()
        if path is None:
            return
        while True:  # the console's listener may come up a moment after the control channel
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                status = self.exit_status()
                if status is not None or time.monotonic() > deadline:
                    raise EmulatorError(f"the console of {self.emulator} ({path}) did not come up"
                                        + (f": {status.reason}" if status else ""),
                                        stderr_tail=status.stderr_tail if status else None)
                time.sleep(0.002)
        sock.setblocking(False)
        self.console = sock

    def _close_channels(self) -> None:
        self._close_control()
        if self.console is not None:
            self.console.close()
            self.console = None

    @classmethod
    def reattach(cls: type[T], spec: InstanceSpec, handle: dict[str, Any]) -> T | None:
        """The instance of a process still running from before a daemon restart, or None."""
        proc_info = handle.get("process")
        if not proc_info:
            return None
        proc = EmulatorProcess.attach(proc_info, spec.stderr_log)
        if proc is None:
            return None
        inst = cls(spec)
        inst.proc = proc
        inst.command = list(handle.get("command") or [])
        for name, info in (handle.get("companions") or {}).items():
            companion = EmulatorProcess.attach(info, spec.stderr_log)
            if companion is not None:
                inst.companions[name] = companion
        try:
            inst._after_launch()  # a companion that died with the old daemon is started again
            inst._connect(time.monotonic() + 3.0)
        except (EmulatorError, OSError):
            # Alive but unreachable: an orphan we cannot control. Stop it rather than leak it.
            inst._close_channels()
            proc.stop()
            inst._stop_companions()
            return None
        return inst

    # ---------------------------------------------------------------- power
    def power_on(self) -> None:
        run = self.spec.rundir
        run.mkdir(parents=True, exist_ok=True)
        for name in self.sockets:
            (run / name).unlink(missing_ok=True)
        self.command = self._command()
        self.proc = EmulatorProcess.launch(self.command, self.spec.stderr_log, self.spec.workdir)
        try:
            self._after_launch()
            self._connect(time.monotonic() + self.start_timeout)
        except BaseException:
            self.power_off()
            raise
        if not self.spec.start_paused:
            try:
                self._start()
            except EmulatorError:
                assert self.proc is not None
                if not self.proc.wait(2.0):
                    self.power_off()
                    raise
                # The firmware ended the process as soon as it ran (e.g. a Cortex-M lockup): the
                # instance did start, and supervision reports the session as failed with the reason.

    def power_off(self) -> None:
        if self.proc is None:
            return
        if self._control_open() and self.proc.poll() is None:
            try:
                self._quit()
            except EmulatorError:
                pass  # it may already be going away; stop() below makes sure
            self.proc.wait(2.0)
        self._close_channels()
        self.proc.stop()
        self._stop_companions()

    def _stop_companions(self) -> None:
        for companion in self.companions.values():
            if not companion.wait(1.0):  # they end on their own once the emulator is gone
                companion.stop()
        self.companions.clear()

    def destroy(self) -> None:
        self.power_off()
        for name in self.sockets:
            (self.spec.rundir / name).unlink(missing_ok=True)
        try:
            self.spec.rundir.rmdir()
        except OSError:
            pass

    # ---------------------------------------------------------------- console
    def console_write(self, data: bytes) -> int:
        if self.console is None:
            raise EmulatorError(f"the console of {self.emulator} is not connected")
        self.console.setblocking(True)
        self.console.settimeout(2.0)
        try:
            self.console.sendall(data)
        finally:
            self.console.setblocking(False)
        self._console_written()
        return len(data)

    def gdb_endpoint(self) -> str | None:
        return str(self.spec.rundir / "gdbstub.sock")
