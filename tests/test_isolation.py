"""Other users stay out, and what virsim starts is virsim's alone: its directories, its processes,
its emulators' environment and command line, the gdb TCP port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import CLI, HELLO, ROOT, wait_for
from virsim.backends.process import _KEPT_ENV, CHILD_TOKEN
from virsim.client import Client, daemon_pid
from virsim.paths import get_paths, paths_for_home

pytestmark = pytest.mark.usefixtures("qemu")
NOBODY = 65534


def as_root() -> bool:
    return os.geteuid() == 0


def virsim(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "virsim", *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_a_runtime_dir_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRSIM_HOME", "XDG_RUNTIME_DIR")}
    env.update(HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_STATE_HOME=str(tmp_path / "state"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    planted = tmp_path / f"virsim-{os.getuid()}"
    # A symlink there (anyone can plant one in a shared /tmp) is never followed.
    os.symlink(tmp_path / "elsewhere", planted)
    (tmp_path / "elsewhere").mkdir()
    proc = virsim(env, "session", "list")
    assert proc.returncode == 77 and "UNSAFE_DIRECTORY" in proc.stderr and "symlink" in proc.stderr, proc.stderr
    assert not any((tmp_path / "elsewhere").iterdir())
    planted.unlink()
    if as_root():  # CI runs as root: a directory another user pre-created, with a socket of theirs in it
        planted.mkdir(mode=0o777)
        os.chown(planted, NOBODY, NOBODY)
        proc = virsim(env, "session", "list")
        assert proc.returncode == 77 and f"belongs to uid {NOBODY}, not to you" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        assert list(planted.iterdir()) == []  # nothing of ours went there


def test_stray_sweep_stops_only_what_a_daemon_recorded(client: Client, tmp_path: Path) -> None:
    paths = get_paths()
    # Someone else's process that merely names our runtime dir: never touched.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(paths.runtime / "s" / "x")])
    # A process a daemon launched and recorded, then died without stopping: stopped at the next start.
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        record = paths.runtime / "children" / f"{orphan.pid}.json"
        record.write_text(json.dumps({"pid": orphan.pid, "create_time": psutil.Process(orphan.pid).create_time(),
                                      "cmd": ["sleep"]}))
        pid = daemon_pid(paths)
        client.stop_daemon()
        record.write_text(json.dumps({"pid": orphan.pid, "create_time": psutil.Process(orphan.pid).create_time(),
                                      "cmd": ["sleep"]}))  # a clean stop leaves none: as after a kill -9
        client.connect()
        assert daemon_pid(paths) != pid
        assert orphan.wait(30) is not None
        assert bystander.poll() is None, "the stray sweep killed a process it did not start"
        assert not record.exists()
    finally:
        for proc in (bystander, orphan):
            proc.kill()
            proc.wait()


def test_emulators_get_a_minimal_environment(home: Path) -> None:
    env = dict(os.environ, VIRSIM_HOME=str(home), AWS_SECRET_ACCESS_KEY="hunter2", SSH_AUTH_SOCK="/tmp/agent")
    created = virsim(env, "session", "create", "-b", "mps2-an385", "-f", str(HELLO), "--json")
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    qemu = psutil.Process(info["pid"])
    seen = qemu.environ()
    assert "AWS_SECRET_ACCESS_KEY" not in seen and "SSH_AUTH_SOCK" not in seen
    assert set(seen) - {CHILD_TOKEN} <= set(_KEPT_ENV), sorted(set(seen) - set(_KEPT_ENV))
    assert "-sandbox" in qemu.cmdline()  # QEMU's seccomp filter is on
    keeper = [p for p in qemu.parent().children() if "keeper.py" in " ".join(p.cmdline())] if qemu.parent() else []
    for proc in keeper:
        assert "AWS_SECRET_ACCESS_KEY" not in proc.environ()
    Client(paths_for_home(home), autostart=False).connect().stop_daemon()


def unsafe_board(tmp_path: Path, extra: list[str]) -> Path:
    board = yaml.safe_load((ROOT / "boards" / "mps2-an385.yaml").read_text())
    board["system_id"] = "mps2-unsafe"
    board["nodes"][0]["qemu"]["extra_args"] = extra
    path = tmp_path / "unsafe.yaml"
    path.write_text(yaml.safe_dump(board))
    return path


@pytest.mark.parametrize("extra,index", [
    (["-netdev", "user,id=n0", "-device", "virtio-net-device,netdev=n0"], 0),
    (["-d", "guest_errors", "-semihosting-config", "enable=on,target=native"], 2),
    (["-chardev", "socket,id=c1,host=0.0.0.0,port=4444,server=on,wait=off"], 1),
    (["-serial", "tcp::5555,server=on,wait=off"], 1),
    (["-s"], 0),
])
def test_qemu_args_that_open_the_host_are_refused(cli: CLI, client: Client, tmp_path: Path, extra: list[str],
                                                  index: int) -> None:
    board = unsafe_board(tmp_path, extra)
    proc = cli("board", "validate", str(board), check=2)
    assert f"nodes[0].qemu.extra_args[{index}]" in proc.stderr and "--allow-unsafe-qemu-args" in proc.stderr
    cli("board", "validate", str(board), "--allow-unsafe-qemu-args")
    proc = cli("session", "create", "-b", str(board), "-f", str(HELLO), check=2)
    assert f"nodes[0].qemu.extra_args[{index}]" in proc.stderr and "opens the host" in proc.stderr
    assert client.session_list() == []


def test_harmless_qemu_args_still_run_and_unsafe_ones_run_when_allowed(client: Client, tmp_path: Path) -> None:
    board = unsafe_board(tmp_path, ["-d", "guest_errors,unimp"])
    info = client.session_create(str(board), HELLO)
    assert info.state == "running"
    client.session("delete", info.id)
    board = unsafe_board(tmp_path, ["-semihosting-config", "enable=on,target=native"])
    info = client.session_create(str(board), HELLO, allow_unsafe_qemu_args=True)
    assert "-semihosting-config" in psutil.Process(info.pid).cmdline()


@pytest.mark.skipif(not as_root(), reason="needs root to connect as another user (CI runs as root)")
def test_gdb_over_tcp_refuses_other_users(cli: CLI, client: Client) -> None:
    info = client.session_create("mps2-an385", HELLO, paused=True)
    endpoint = cli.json("debug", "gdb", info.id, "--tcp")
    host, port = endpoint["tcp"].rsplit(":", 1)
    probe = ("import socket, sys; s = socket.create_connection((%r, %d)); s.settimeout(10);"
             "s.sendall(b'$qSupported#37');"
             "data = b''\n"
             "try:\n    data = s.recv(100)\nexcept OSError:\n    pass\nprint(repr(data))") % (host, int(port))

    def as_user(uid: int) -> str:
        return subprocess.run(["/usr/bin/python3", "-c", probe], capture_output=True, text=True, timeout=60,
                              preexec_fn=(lambda: (os.setgid(uid), os.setuid(uid))) if uid else None).stdout.strip()
    assert as_user(NOBODY) == "b''"  # closed before the stub saw anything
    assert f"uid {NOBODY}'s, not this user's" in get_paths().daemon_log.read_text()
    assert client.session("show", info.id).debugger in (None, "virsim")
    wait_for(lambda: client.session("show", info.id).debugger != "external", what="no external attach")
    reply = as_user(0)
    assert reply.startswith("b'+") or reply.startswith("b'$"), reply  # this user: the stub answers
