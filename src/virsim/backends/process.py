"""Supervised emulator processes: launch, re-attach by (pid, start time), poll, stop, kill.

Shaped like Popen (launch, poll, terminate, kill) but able to save and load enough to re-attach
after a daemon restart: a pid alone can be reused, so a process is identified by its pid *and*
its start time from psutil. Output goes to a log file, never to an unread pipe. Stopping kills
the whole process tree: terminate, wait, then kill what is left.

Every process launched is recorded (pid, start time, command) in the daemon's children folder
until it is stopped: a daemon that starts after one was killed stops the recorded ones no session
accounts for (`recorded_strays`), and touches no other process. Children get a minimal
environment (`minimal_env`), not whatever the shell that auto-started the daemon had.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import resource
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from virsim.atomic import write_atomic


# psutil's create_time is rounded; two readings of one process agree far closer than this.
_START_TIME_TOLERANCE = 0.05


@dataclass
class ExitStatus:
    returncode: int | None  # None when the process was not our child (re-attached)
    reason: str
    stderr_tail: str = ""


_DIE_WITH_PARENT = False  # set by a private daemon: its children must not outlive it


def die_with_parent(on: bool) -> None:
    """From now on, start emulators so that the kernel kills them when this process dies (a
    private daemon's; a per-user daemon's emulators survive it and are re-attached)."""
    global _DIE_WITH_PARENT
    _DIE_WITH_PARENT = on


def set_parent_death_signal() -> None:
    """In a child before exec (Linux): SIGKILL it when the process that started it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # elsewhere the next daemon's stray sweep (or virsim.private's reaping) stops it


_CHILDREN: Path | None = None  # where launched processes are recorded (the daemon's runtime dir)
# What a child needs from the environment: where programs are, the locale, a temp dir, and the
# import path and home of the virsim that started it (the built-in engine is virsim's Python).
CHILD_TOKEN = "VIRSIM_CHILD"  # in each child's environment: the record it belongs to
_KEPT_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH", "VIRSIM_HOME")


def record_children_in(folder: Path | None) -> None:
    """From now on, record every launched process in `folder` (the daemon does, at start)."""
    global _CHILDREN
    _CHILDREN = folder
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)


def minimal_env() -> dict[str, str]:
    """The environment a child process gets."""
    env = {k: v for k, v in os.environ.items() if k in _KEPT_ENV}
    env.setdefault("PATH", os.defpath)
    return env


def _record(token: str, **fields: Any) -> None:
    """Write (or complete) the record of the child `token`: written before it is spawned, so a
    daemon killed while spawning it still leaves a record to find it by (its environment)."""
    if _CHILDREN is None:
        return
    write_atomic(_CHILDREN / f"{token}.json", json.dumps({"token": token, **fields}), durable=False)


def _forget(token: str | None) -> None:
    if _CHILDREN is not None and token:
        (_CHILDREN / f"{token}.json").unlink(missing_ok=True)


def recorded_strays(known: set[int]) -> list[EmulatorProcess]:
    """Recorded processes still running that are not in `known` (the live sessions' processes),
    and this user's: found by pid and start time, or, for one whose daemon died before it learnt
    the pid, by the token in its environment. Records of processes gone are dropped."""
    if _CHILDREN is None:
        return []
    strays: list[EmulatorProcess] = []
    unspawned: dict[str, Path] = {}
    for record in sorted(_CHILDREN.glob("*.json")):
        try:
            info = json.loads(record.read_text())
        except (OSError, ValueError):
            record.unlink(missing_ok=True)
            continue
        if "pid" not in info:
            unspawned[str(info.get("token"))] = record
            continue
        proc = EmulatorProcess.attach({**info, "token": record.stem}, Path(os.devnull))
        if proc is None or not _ours(proc.pid):
            record.unlink(missing_ok=True)
        elif proc.pid not in known:
            strays.append(proc)
    if unspawned:
        for candidate in psutil.process_iter(["pid", "uids", "environ", "create_time"]):
            try:
                token = (candidate.info.get("environ") or {}).get(CHILD_TOKEN)
                if token in unspawned and candidate.pid not in known and _ours(candidate.pid):
                    strays.append(EmulatorProcess(candidate.pid, candidate.info["create_time"], Path(os.devnull),
                                                  None, token))
            except (psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):
                continue
        found = {p.token for p in strays}
        for token, record in unspawned.items():
            if token not in found:
                record.unlink(missing_ok=True)
    return strays


def _ours(pid: int) -> bool:
    try:
        return psutil.Process(pid).uids().real == os.getuid()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _child_setup() -> None:
    # An emulator that aborts (QEMU does on a Cortex-M lockup) must not leave a core file per crash.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if _DIE_WITH_PARENT:
        set_parent_death_signal()


def tail(path: Path, max_bytes: int = 2000) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode(errors="replace").strip()
    except OSError:
        return ""


def is_gone(proc: psutil.Process) -> bool:
    """Exited: no such process, or a zombie not yet reaped."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has exited; return those still alive after `timeout` seconds.

    A zombie counts as exited: a process that is not our child (a re-attached emulator, the
    detached daemon) is reaped by init, which on some machines takes seconds.
    """
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if not is_gone(p)]
    delay = 0.001
    while alive and time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
        alive = [p for p in alive if not is_gone(p)]
    return alive


def describe_returncode(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class EmulatorProcess:
    def __init__(self, pid: int, create_time: float, stderr_log: Path, popen: subprocess.Popen[bytes] | None,
                 token: str | None = None) -> None:
        self.pid = pid
        self.create_time = create_time
        self.stderr_log = stderr_log
        self._popen = popen
        self._exit: ExitStatus | None = None
        self.token = token  # its record in the children folder

    @classmethod
    def launch(cls, args: list[str], stderr_log: Path, cwd: Path) -> EmulatorProcess:
        stderr_log.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        _record(token, cmd=args[:8])
        try:
            with stderr_log.open("ab") as err:
                popen = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=cwd,
                                         env={**minimal_env(), CHILD_TOKEN: token}, start_new_session=True,
                                         close_fds=True, preexec_fn=_child_setup)
        except BaseException:
            _forget(token)
            raise
        try:
            create_time = psutil.Process(popen.pid).create_time()
        except psutil.NoSuchProcess:
            create_time = 0.0
        proc = cls(popen.pid, create_time, stderr_log, popen, token)
        _record(token, cmd=args[:8], pid=proc.pid, create_time=create_time)
        return proc

    @classmethod
    def attach(cls, info: dict[str, Any], stderr_log: Path) -> EmulatorProcess | None:
        """The process described by `info` if it still runs (same pid and start time), else None."""
        try:
            proc = psutil.Process(int(info["pid"]))
            if abs(proc.create_time() - float(info["create_time"])) > _START_TIME_TOLERANCE:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
            return None
        return cls(proc.pid, proc.create_time(), stderr_log, None, info.get("token"))

    def info(self) -> dict[str, Any]:
        return {"pid": self.pid, "create_time": self.create_time, **({"token": self.token} if self.token else {})}

    def poll(self) -> ExitStatus | None:
        if self._exit is not None:
            return self._exit
        if self._popen is not None:
            code = self._popen.poll()
            if code is None:
                return None
            self._exit = ExitStatus(code, describe_returncode(code), tail(self.stderr_log))
            _forget(self.token)
            return self._exit
        try:
            proc = psutil.Process(self.pid)
            alive = abs(proc.create_time() - self.create_time) <= _START_TIME_TOLERANCE and \
                proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            alive = False
        if alive:
            return None
        self._exit = ExitStatus(None, "exited (not a child of this daemon: status unknown)", tail(self.stderr_log))
        _forget(self.token)
        return self._exit

    def wait(self, timeout: float) -> bool:
        """True if the process ended within `timeout` seconds."""
        if self._popen is not None:
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            self.poll()
            return True
        try:
            if wait_gone([psutil.Process(self.pid)], timeout):
                return False
        except psutil.NoSuchProcess:
            pass
        self.poll()
        return True

    def stop(self, grace: float = 2.0) -> None:
        """Terminate the process and its children; kill whatever outlives `grace` seconds."""
        if self.poll() is not None:
            return
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            self.wait(0)
            return
        for p in procs:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        for p in wait_gone(procs, grace):
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.wait(grace)
