"""A daemon keeps importing from the install it started from. When that install is replaced (a
plain `pip install .` followed by `scripts/setup.sh`'s editable install), the next command must not
meet an INTERNAL FileNotFoundError from the old files: the hello handshake carries the client's
version and install, an idle daemon of another install is restarted from this one, and one with
live sessions is left running with an error saying exactly what to do. `virsim doctor` reports it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import virsim
from conftest import CLI, HELLO, ROOT


def old_install(tmp_path: Path) -> dict[str, str]:
    """A second copy of the package (another install); env that makes a process import it."""
    shutil.copytree(ROOT / "src" / "virsim", tmp_path / "old" / "virsim",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return {"PYTHONPATH": str(tmp_path / "old")}


def with_env(cli: CLI, extra: dict[str, str]) -> CLI:
    other = CLI.__new__(CLI)
    other.env = {**cli.env, **extra}
    return other


def test_an_idle_daemon_of_a_replaced_install_is_restarted(cli: CLI, tmp_path: Path) -> None:
    old = with_env(cli, old_install(tmp_path))
    first = old.json("daemon", "start")
    assert first["install"] == str(tmp_path / "old" / "virsim")
    shutil.rmtree(tmp_path / "old")  # the install it runs from is gone, as after a re-install
    info = cli.json("session", "create", "--board", "mps2-an385", "--firmware", str(HELLO), "--backend", "builtin")
    assert info["state"] == "running"
    now = cli.json("daemon", "status")
    assert now["install"] == virsim.INSTALL and now["pid"] != first["pid"] and now["mismatch"] is None


def test_a_busy_daemon_of_another_install_is_kept_and_the_error_says_what_to_do(cli: CLI, tmp_path: Path) -> None:
    old = with_env(cli, old_install(tmp_path))
    sid = old.json("session", "create", "--board", "mps2-an385", "--firmware", str(HELLO), "--backend", "builtin")["id"]
    refused = cli.json("session", "list", check=7)
    assert refused["code"] == "DAEMON_MISMATCH"
    assert str(tmp_path / "old" / "virsim") in refused["error"] and virsim.INSTALL in refused["error"]
    assert "virsim daemon stop" in refused["error"] and "1 live session" in refused["error"]
    doctor = cli.json("doctor", check=False)
    daemon = next(c for c in doctor["checks"] if c["name"] == "daemon")
    assert not daemon["ok"] and "virsim daemon stop" in daemon["install"]
    status = cli.json("daemon", "status")  # status and stop work across installs
    assert status["mismatch"] and status["install"] == str(tmp_path / "old" / "virsim")
    assert old.json("session", "show", sid)["state"] == "running"  # nothing was disturbed
    cli.json("daemon", "stop")
    assert cli.json("session", "show", sid)["state"] == "stopped"  # a new daemon of this install


def test_demo_stops_the_daemon_it_started(cli: CLI) -> None:
    cli.json("demo")
    assert cli.json("daemon", "status")["running"] is False
    cli.json("daemon", "start")
    cli.json("demo")
    assert cli.json("daemon", "status")["running"] is True  # one that was already running stays
