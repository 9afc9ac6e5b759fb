"""Faults leave nothing half-done: a full disk, a daemon killed at a bad moment, a write cut short.
Whatever happens, store, files and emulators agree afterwards, and the error says what to do."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from conftest import CLI, HELLO, ROOT, session_progress, wait_console, wait_for, wait_progress
from virsim.atomic import TMP_MARK, atomic_file, write_atomic
from virsim.client import Client, daemon_pid
from virsim.errors import DaemonUnavailable, StorageError, VirsimError
from virsim.paths import get_paths

pytestmark = pytest.mark.usefixtures("qemu")


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "report.xml"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target, "w") as f:
            f.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    assert write_atomic(target, b"new") == 3 and target.read_bytes() == b"new"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (CI runs as root): a disk that fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Fill `disk` to the last byte; the file that does it (delete it to free the space)."""
    ballast = disk / "ballast"
    with ballast.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    try:
        with ballast.open("ab") as f:
            while True:
                f.write(b"\0")
                f.flush()
    except OSError:
        pass
    return ballast


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_a_full_disk_fails_cleanly_and_loses_nothing(small_disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = small_disk / "h"
    monkeypatch.setenv("VIRSIM_HOME", str(home))
    client = Client(get_paths()).connect()
    try:
        running = client.session_create("mps2-an385", HELLO)
        builtin = client.session_create("mps2-an385", HELLO, backend="builtin", paused=True)
        wait_console(client, running.id, b"tick 1\n")
        ballast = fill(small_disk)
        # create: a typed error, and no session, row or directory left
        with pytest.raises(StorageError, match="disk is full"):
            client.session_create("mps2-an385", HELLO)
        assert sorted(s.id for s in client.session_list()) == sorted([running.id, builtin.id])
        assert sorted(d.name for d in get_paths().sessions_dir.iterdir()) == sorted([running.id, builtin.id])
        # pause: refused, and the emulator was not left paused behind a store that says running
        with pytest.raises(StorageError):
            client.session("pause", running.id)
        ballast.unlink()
        info = client.session("show", running.id)
        assert info.state == "running"
        before = info.console_bytes
        wait_progress(lambda: client.session("show", running.id).console_bytes > before,
                      progress=session_progress(client, running.id), what="the firmware still running")
        # a snapshot on a full disk: an error that says so, no temp file, no snapshot row
        fill(small_disk)
        with pytest.raises(VirsimError) as failed:
            client.call("snapshot.create", {"session": builtin.id, "name": "s1"})
        assert "full" in str(failed.value) or "space" in str(failed.value), failed.value
        assert client.call("snapshot.list", {"session": builtin.id}).snapshots == []
    finally:
        for leftover in small_disk.rglob(f"*{TMP_MARK}*"):
            raise AssertionError(f"a temp file was left: {leftover}")
        (small_disk / "ballast").unlink(missing_ok=True)
        try:
            client.stop_daemon()
        except Exception:
            pass


def test_restart_removes_what_a_killed_daemon_left_half_done(client: Client) -> None:
    paths = get_paths()
    info = client.session_create("mps2-an385", HELLO, backend="builtin", paused=True)
    snapshots = paths.session_dir(info.id) / "snapshots"
    snapshots.mkdir(exist_ok=True)
    orphan_snapshot = snapshots / "deadbeef.vsnap"  # written, then the daemon died before its row
    orphan_snapshot.write_bytes(b"VSNAP1\n" + b"x" * 41_000)
    orphan_dir = paths.sessions_dir / "0badc0de"  # a create killed before its row was written
    orphan_dir.mkdir()
    temp = paths.session_dir(info.id) / f".trace.json{TMP_MARK}1234"  # an export cut short
    temp.write_text('{"half": ')
    pid = daemon_pid(paths)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
             what="the daemon to die")
    client.close()
    assert client.session("show", info.id).id == info.id  # a new daemon, the session re-attached
    assert not orphan_snapshot.exists() and not orphan_dir.exists() and not temp.exists()
    log = paths.daemon_log.read_text()
    assert "left half-done" in log and "0badc0de" in log


def test_a_daemon_killed_during_create_leaves_no_orphan(cli: CLI, client: Client) -> None:
    """kill -9 of the daemon while `session create` runs, at whatever moment it lands: afterwards
    no emulator runs that no session accounts for, no session dir lacks a row, and a session
    the dead daemon had begun says why it is lost."""
    paths = get_paths()
    env = dict(cli.env)
    creating = subprocess.Popen([sys.executable, "-m", "virsim", "session", "create", "-b", "mps2-an385", "-f",
                                 str(HELLO), "--json"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    pid = daemon_pid(paths)
    wait_for(lambda: any(paths.sessions_dir.iterdir()) or creating.poll() is not None, what="the create to begin")
    os.kill(pid, signal.SIGKILL)
    creating.communicate(timeout=120)
    client.close()
    sessions = client.session_list()  # a new daemon: it reconciled
    rows = {s.id for s in client.session_list(all=True)}
    assert {d.name for d in paths.sessions_dir.iterdir()} <= rows
    emulators = [p for p in psutil.process_iter(["cmdline"]) if str(paths.runtime) in " ".join(p.info["cmdline"] or [])
                 and "qemu-system" in " ".join(p.info["cmdline"] or [])]
    live = {s.pid for s in sessions if s.state in ("running", "paused", "created")}
    assert {p.pid for p in emulators} <= live, (f"an emulator no session accounts for is still running: "
                                                f"{[s.model_dump() for s in sessions]}\n{paths.daemon_log.read_text()[-3000:]}")
    for s in sessions:
        if s.state == "lost" and s.started_at is None:  # killed before its emulator had started
            assert s.error == "the daemon stopped while it was starting this session's emulator", s.error


def test_the_cli_notices_a_dead_daemon_at_once(cli: CLI, client: Client) -> None:
    info = client.session_create("mps2-an385", HELLO)
    waiting = subprocess.Popen([sys.executable, "-m", "virsim", "debug", "continue", info.id, "--wait", "--timeout",
                                "600s"], env=cli.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    def parked() -> bool:  # its audit row is written before it runs: it is in the daemon now
        db = sqlite3.connect(f"file:{get_paths().database}?mode=ro", uri=True)
        try:
            return db.execute("select count(*) from events where request = 'debug.continue'").fetchone()[0] > 0
        finally:
            db.close()
    wait_for(lambda: parked() or waiting.poll() is not None, what="the request to reach the daemon")
    pid = daemon_pid(get_paths())
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    _out, err = waiting.communicate(timeout=120)
    noticed = time.monotonic() - killed
    assert waiting.returncode == DaemonUnavailable.exit_code, err
    assert f"the daemon (pid {pid}) died" in err
    assert noticed < 30, f"the CLI took {noticed:.1f}s to notice; its wait was 600 s"
    client.close()
    assert client.session("show", info.id).state in ("running", "paused")  # a new daemon took the emulator back
