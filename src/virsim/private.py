"""Private daemons: a temporary VIRSIM_HOME whose daemon lives exactly as long as its owner.

`virsim run` and the pytest plugin each start a daemon of their own in a fresh home. Such a
daemon must never outlive the process that started it, however that process ends:

- **Lifeline.** `spawn_daemon(paths, lifeline=True)` hands the daemon the read end of a pipe
  whose write end only the owner holds (close-on-exec, so no other child inherits it). When the
  owner exits, even by SIGKILL, the kernel closes it; the daemon sees end-of-file, powers its
  emulators off and exits. A private daemon also starts its emulators with PR_SET_PDEATHSIG, so
  they die with it if it is killed itself (a per-user daemon does not: its emulators survive a
  daemon restart and are re-attached).
- **Closing.** `PrivateDaemon.close()` drops the lifeline (the daemon's cue to stop), waits for
  every process of the home to end, kills what is left after the grace time and removes the
  home. It works whether or not a client ever connected: a run interrupted while its daemon was
  still starting cleans up the same way.

`processes_of(paths)` is the one walk of the process table for "everything that belongs to this
home" (the daemon by its VIRSIM_HOME, emulators, console keepers and gdbs by the session paths
on their command lines); tests use it to assert nothing was left behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psutil

from virsim.backends.process import wait_gone
from virsim.paths import Paths, paths_for_home

# Write ends of the lifelines of the daemons this process started, by home: kept open until
# close() (or until this process ends, which is the point).
_LIFELINES: dict[str, int] = {}


def new_lifeline(paths: Paths) -> int:
    """A pipe for a daemon of `paths` to watch: returns the read end (to pass to the daemon); this
    process keeps the write end."""
    read_end, write_end = os.pipe()  # both close-on-exec: only the daemon gets read_end (pass_fds)
    old = _LIFELINES.pop(str(paths.runtime), None)
    if old is not None:
        os.close(old)
    _LIFELINES[str(paths.runtime)] = write_end
    return read_end


def drop_lifeline(paths: Paths) -> bool:
    """Close the lifeline of the daemon of `paths`: it stops as if its owner had exited."""
    fd = _LIFELINES.pop(str(paths.runtime), None)
    if fd is None:
        return False
    os.close(fd)
    return True


def processes_of(paths: Paths) -> list[psutil.Process]:
    """Every live process that belongs to the home of `paths` (not this one, not zombies)."""
    markers = [str(paths.runtime) + os.sep]
    if paths.home is not None:
        markers.append(str(paths.home) + os.sep)
    home = str(paths.home) if paths.home is not None else None
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "environ", "status"]):
        try:
            if proc.pid == os.getpid() or proc.info.get("status") == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(proc.info.get("cmdline") or []) + " "
            env = proc.info.get("environ") or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(m in cmd for m in markers) or (home is not None and env.get("VIRSIM_HOME") == home):
            found.append(proc)
    return found


def reap(paths: Paths, grace: float) -> list[str]:
    """Wait up to `grace` s for the processes of the home to end, then kill the rest; returns the
    command lines of those that had to be killed."""
    alive = wait_gone(processes_of(paths), grace)
    alive += [p for p in processes_of(paths) if p not in alive]  # started meanwhile
    killed = []
    for proc in alive:
        try:
            killed.append(" ".join(proc.cmdline()) or str(proc.pid))
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    wait_gone(alive, 1.0)
    return killed


class PrivateDaemon:
    """A fresh home under /tmp (or TMPDIR) for a daemon tied to this process's life."""

    def __init__(self, prefix: str) -> None:
        self.home = Path(tempfile.mkdtemp(prefix=prefix))
        self.paths = paths_for_home(self.home)

    def close(self, grace: float = 1.5, stop_requested: bool = False) -> list[str]:
        """Stop the daemon and everything it runs, remove the home. `stop_requested`: the caller
        already asked it to stop (daemon.stop), so only the waiting is left. Returns what had to be
        killed (empty when everything ended in time)."""
        dropped = drop_lifeline(self.paths)
        if not dropped and not stop_requested:
            # Not started through a lifeline (or already dropped): ask by signal, as a user would.
            for proc in processes_of(self.paths):
                try:
                    if "virsim.daemon" in " ".join(proc.cmdline()):
                        proc.terminate()
                except psutil.NoSuchProcess:
                    continue
        killed = reap(self.paths, grace)
        shutil.rmtree(self.home, ignore_errors=True)
        if self.paths.runtime != self.home / "run":
            shutil.rmtree(self.paths.runtime, ignore_errors=True)
        return killed
