"""Where virsim keeps things on disk: one small module over platformdirs.

`VIRSIM_HOME` overrides every location (tests isolate a whole daemon with it):
  $VIRSIM_HOME/run   runtime: sockets, lock and pid file (mode 0700)
  $VIRSIM_HOME/data  the SQLite store and artifacts (console logs, programs, ...)
  $VIRSIM_HOME/log   the daemon's own log
Without it, platformdirs' per-user runtime, data and log directories are used.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from virsim.errors import UnsafeDirectory

APP = "virsim"
# sockaddr_un.sun_path is 108 bytes on Linux; keep margin for the longest socket name we create.
_MAX_SOCKET_DIR = 80


@dataclass(frozen=True)
class Paths:
    runtime: Path
    data: Path
    log: Path
    home: Path | None = None  # the VIRSIM_HOME these paths derive from, if any

    @property
    def control_socket(self) -> Path:
        return self.runtime / "control.sock"

    @property
    def events_socket(self) -> Path:
        return self.runtime / "events.sock"

    @property
    def lock_file(self) -> Path:
        return self.runtime / "daemon.lock"

    @property
    def pid_file(self) -> Path:
        return self.runtime / "daemon.pid"

    @property
    def database(self) -> Path:
        return self.data / "virsim.db"

    @property
    def sessions_dir(self) -> Path:
        return self.data / "sessions"

    @property
    def daemon_log(self) -> Path:
        return self.log / "daemon.log"

    def session_dir(self, session_id: str) -> Path:
        return self.sessions_dir / session_id

    def session_runtime(self, session_id: str) -> Path:
        """Per-session sockets (QMP, serial, gdb) live under the short runtime dir."""
        return self.runtime / "s" / session_id

    def ensure(self) -> Paths:
        """Create the dirs, this user's alone (mode 0700); refuse one another user owns (or a
        symlink): whoever owns the runtime dir could plant a control socket there and receive
        this user's requests (UnsafeDirectory)."""
        for d in (self.runtime, self.data, self.log):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            private_dir(d)
        self.sessions_dir.mkdir(exist_ok=True)
        return self


def private_dir(d: Path) -> None:
    """`d` is a real directory owned by this user with no access for others (fixed if it is
    ours); UnsafeDirectory otherwise."""
    st = os.lstat(d)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectory(f"{d} is not a directory (a symlink or a file is there): virsim will not use it; "
                              "remove it, or set VIRSIM_HOME to a directory of yours", path=str(d))
    if st.st_uid != os.getuid():
        raise UnsafeDirectory(f"{d} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}): another user may "
                              "have created it to intercept virsim; virsim will not use it: remove it, or set "
                              "VIRSIM_HOME (or XDG_RUNTIME_DIR) to a directory of yours", path=str(d), owner=st.st_uid)
    if st.st_mode & 0o077:
        os.chmod(d, 0o700)


def _short_runtime(preferred: Path) -> Path:
    """Unix socket paths are short; fall back to a per-user dir in /tmp when `preferred` is too long."""
    if len(str(preferred)) <= _MAX_SOCKET_DIR:
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"virsim-{os.getuid()}-{digest}"


def paths_for_home(home: Path) -> Paths:
    """Everything under one directory, as with VIRSIM_HOME=home."""
    base = home.expanduser().resolve()
    return Paths(runtime=_short_runtime(base / "run"), data=base / "data", log=base / "log", home=base)


def get_paths() -> Paths:
    home = os.environ.get("VIRSIM_HOME")
    if home:
        return paths_for_home(Path(home))
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_dir():
        runtime = Path(platformdirs.user_runtime_dir(APP))
    else:
        # No per-user runtime dir (e.g. a CI container): a private dir in /tmp instead.
        runtime = Path(tempfile.gettempdir()) / f"{APP}-{os.getuid()}"
    return Paths(
        runtime=_short_runtime(runtime),
        data=Path(platformdirs.user_data_dir(APP)),
        log=Path(platformdirs.user_log_dir(APP)),
    )
