"""ARM semihosting, off unless asked for: the firmware's file calls land in the session folder
(confined there on the built-in engine), its debug console in semihosting.log, SYS_EXIT ends it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import ROOT, wait_console, wait_state
from virsim.client import Client

pytestmark = pytest.mark.usefixtures("qemu")
SEMIHOST = ROOT / "tests" / "firmware" / "semihost.elf"


def folder(client: Client, sid: str) -> Path:
    return Path(client.session("show", sid).console_log).parent


def test_file_calls_console_and_exit(client: Client, backend: str) -> None:
    sid = client.session_create("mps2-an385", SEMIHOST, backend=backend, semihosting=True, paused=True).id
    (folder(client, sid) / "input.txt").write_text("from the host\n")
    client.session("resume", sid)
    info = wait_state(client, sid, "stopped")
    assert info.error is None
    console = client.console_text(sid).decode()
    assert "note: written\ninput: from the host\n" in console and console.endswith("exiting\n"), console
    assert "still running after SYS_EXIT" not in console
    assert (folder(client, sid) / "note.txt").read_text() == "written by the firmware\n"
    assert (folder(client, sid) / "semihosting.log").read_bytes() == b"semihosting: hello\n"
    # The built-in engine keeps the firmware inside the session folder; QEMU's semihosting does not
    # (docs/boardconfig.md says so: semihosting gives the firmware the user's files there).
    assert ("outside: refused\n" if backend == "builtin" else "outside: opened\n") in console


def test_off_by_default(client: Client, backend: str) -> None:
    sid = client.session_create("mps2-an385", SEMIHOST, backend=backend).id
    with pytest.raises(AssertionError):
        wait_console(client, sid, b"note:", virtual_s=2.0, stall=30.0)
    assert not (folder(client, sid) / "note.txt").exists()
    assert not (folder(client, sid) / "semihosting.log").exists()


def test_the_board_field_turns_it_on(client: Client, tmp_path: Path) -> None:
    board = yaml.safe_load((ROOT / "boards" / "mps2-an385.yaml").read_text())
    board["system_id"] = "mps2-semihosting"
    board["nodes"][0]["semihosting"] = True
    path = tmp_path / "semi.yaml"
    path.write_text(yaml.safe_dump(board))
    sid = client.session_create(str(path), SEMIHOST, backend="builtin").id
    wait_state(client, sid, "stopped")
    assert "note: written" in client.console_text(sid).decode()
