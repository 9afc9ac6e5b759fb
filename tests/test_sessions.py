"""Sessions end to end: the real daemon, the real CLI and real QEMU running the example firmware."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import (GREETING, HELLO, HELLO_SYSTICK, JITTER, LM3S_HELLO, CLI, chosen_backend, need_tool, session_progress,
                      wait_console, wait_progress, wait_state)
from virsim.client import Client

pytestmark = pytest.mark.usefixtures("qemu")


@pytest.fixture(params=["qemu", "builtin", "renode"])
def backend(request: pytest.FixtureRequest) -> str:
    """The session service on every backend that runs mps2-an385."""
    return chosen_backend(request)


def test_create_prints_id_and_console_shows_greeting(cli: CLI, client: Client) -> None:
    proc = cli("session", "create", "--board", "mps2-an385", "--firmware", str(HELLO), "--name", "demo")
    sid = proc.stdout.strip()
    assert len(sid) == 8 and all(c in "0123456789abcdef" for c in sid)
    wait_console(client, sid, b"tick 2\n")
    text = cli("console", "demo").stdout
    assert text.startswith(GREETING.decode())
    assert "tick 1\ntick 2\n" in text
    listed = cli.json("session", "list")
    assert [(s["id"], s["name"], s["board"], s["backend"], s["state"]) for s in listed] == \
        [(sid, "demo", "mps2-an385", "qemu", "running")]
    assert listed[0]["uptime_s"] >= 0
    table = cli("session", "list").stdout
    assert sid in table and "running" in table and "mps2-an385" in table


def test_every_session_command_speaks_json(cli: CLI) -> None:
    created = cli.json("session", "create", "--board", "mps2-an385", "--firmware", str(HELLO))
    sid = created["id"]
    assert created["state"] == "running" and created["pid"] > 0
    for action, state in (("pause", "paused"), ("resume", "running"), ("reset", "running"),
                          ("power-off", "stopped"), ("power-on", "running")):
        assert cli.json("session", action, sid)["state"] == state, action
    shown = cli.json("session", "show", sid)
    assert shown["endpoints"]["gdb"].endswith("gdb.sock")
    assert "deterministic" in shown["capabilities"]
    assert cli.json("console", sid, "--tail", "5")["end"] >= 5
    deleted = cli.json("session", "delete", sid)
    assert deleted == {"session": sid, "purged": False, "console_log": shown["console_log"]}


def test_pause_stops_output_and_resume_continues(client: Client, backend: str) -> None:
    info = client.session_create("mps2-an385", HELLO, backend=backend)
    wait_console(client, info.id, b"tick 1\n")
    client.session("pause", info.id)
    frozen = client.console_text(info.id)
    import time

    time.sleep(0.3)  # ~6 ticks would print in this time if it still ran
    assert client.console_text(info.id) == frozen
    client.session("resume", info.id)
    wait_progress(lambda: len(client.console_text(info.id)) > len(frozen), progress=session_progress(client, info.id),
                  what="output after resume")


def test_wrong_state_is_a_typed_error_naming_both_states(cli: CLI) -> None:
    sid = cli("session", "create", "-b", "mps2-an385", "-f", str(HELLO), "--paused").stdout.strip()
    assert cli.json("session", "show", sid)["state"] == "created"
    proc = cli("session", "pause", sid, check=4)
    assert "it is created" in proc.stderr and "needs running" in proc.stderr
    err = cli.json("session", "power-on", sid, check=4)
    assert err["code"] == "INVALID_STATE"
    assert err["details"] == {"session": sid, "operation": "power-on", "current": "created",
                              "required": ["failed", "lost", "stopped"]}
    assert cli.json("session", "resume", sid)["state"] == "running"


def test_unknown_session_id(cli: CLI) -> None:
    proc = cli("session", "show", "nosuch", check=3)
    assert "no session 'nosuch'" in proc.stderr
    err = cli.json("console", "deadbeef", check=3)
    assert err["code"] == "NOT_FOUND" and err["details"]["kind"] == "session"


def test_console_send_reaches_the_uart(client: Client, cli: CLI, backend: str) -> None:
    info = client.session_create("mps2-an385", HELLO, backend=backend)
    wait_console(client, info.id, b"tick 1\n")
    cli("console", info.id, "--send", r"ping 42\n")
    wait_console(client, info.id, b"echo: ping 42\n")


def test_reset_restarts_the_firmware(client: Client, backend: str) -> None:
    info = client.session_create("mps2-an385", HELLO, backend=backend)
    wait_console(client, info.id, b"tick 2\n")
    client.session("reset", info.id)
    wait_progress(lambda: client.console_text(info.id).count(GREETING) == 2, progress=session_progress(client, info.id),
                  what="a second greeting after reset")


def test_program_upload_and_start(cli: CLI, client: Client, tmp_path: Path) -> None:
    sid = cli("session", "create", "-b", "mps2-an385", "-f", str(HELLO)).stdout.strip()
    prog = cli.json("program", "upload", sid, str(HELLO_SYSTICK))
    assert prog["format"] == "elf" and prog["machine"] == "ARM" and prog["size"] == HELLO_SYSTICK.stat().st_size
    cli("program", "start", sid, prog["id"])
    wait_console(client, sid, b"(SysTick)\ntick 1\n")
    assert cli.json("session", "show", sid)["program"] == prog["id"]


@pytest.mark.parametrize("fmt", ["hex", "bin"])
def test_hex_and_bin_images_run(fmt: str, client: Client, tmp_path: Path, backend: str) -> None:
    need_tool("arm-none-eabi-objcopy")
    import subprocess

    image = tmp_path / f"hello.{fmt}"
    subprocess.run(["arm-none-eabi-objcopy", "-O", "ihex" if fmt == "hex" else "binary", str(HELLO), str(image)],
                   check=True)
    extra = {"load_address": 0} if fmt == "bin" else {}
    info = client.session_create("mps2-an385", image, backend=backend, **extra)
    wait_console(client, info.id, GREETING + b"tick 1\n")
    assert client.program_upload(info.id, image, **extra).format == fmt


def test_session_without_firmware_waits_for_a_program(cli: CLI, client: Client) -> None:
    sid = cli("session", "create", "-b", "mps2-an385").stdout.strip()
    assert cli.json("session", "show", sid)["state"] == "created"
    proc = cli("session", "resume", sid, check=4)
    assert "no program" in proc.stderr
    pid = client.program_upload(sid, HELLO).id
    assert client.program_start(sid, pid).state == "running"
    wait_console(client, sid, GREETING)


def test_bad_firmware_is_refused_and_leaves_nothing(cli: CLI, tmp_path: Path) -> None:
    err = cli.json("session", "create", "-b", "mps2-an385", "-f", "/bin/true", check=2)
    assert err["code"] == "FIRMWARE_INVALID"
    assert "x86-64" in err["error"] and "cortex-m3" in err["error"]
    missing = cli("session", "create", "-b", "mps2-an385", "-f", str(tmp_path / "nope.elf"), check=2)
    assert "does not exist" in missing.stderr
    assert cli.json("session", "list", "--all") == []


def test_other_board_lm3s811evb(client: Client, backend: str) -> None:
    info = client.session_create("lm3s811evb", LM3S_HELLO, backend=backend)
    wait_console(client, info.id, b"Hello from virsim on lm3s811evb\ntick 1\n")
    # The mps2 image is linked for 4 MiB of SSRAM at 0x0: its RAM lies outside lm3s811evb's 8 KiB.
    with pytest.raises(Exception) as excinfo:
        client.program_upload(info.id, HELLO)
    assert getattr(excinfo.value, "code", "") == "FIRMWARE_INVALID"


def test_a_profile_board_and_profile_check(client: Client) -> None:
    virt_hello = HELLO.parents[1] / "virt-a15" / "hello.elf"
    info = client.session_create("virt-a15", virt_hello)
    wait_console(client, info.id, b"Hello from virsim on virt (Cortex-A15)\ntick 1\n")
    for board, image, built_for in (("virt-a15", HELLO, "M-profile"), ("mps2-an385", virt_hello, "A-profile")):
        with pytest.raises(Exception) as excinfo:
            client.session_create(board, image)
        assert getattr(excinfo.value, "code", "") == "FIRMWARE_INVALID"
        assert built_for in str(excinfo.value)


def test_multi_node_board_with_a_node_no_lockstep_backend_runs_is_refused(cli: CLI, tmp_path: Path) -> None:
    """Multi-node sessions (tests/test_sync.py) run their nodes on the built-in engine, QEMU or
    Renode; a node on another backend is refused, naming it."""
    board = tmp_path / "two.yaml"
    node = ("  - id: {id}\n    backend: skyeye\n    processor: {{type: cortex-m3, frequency: 25MHz}}\n"
            "    memory: [{{type: RAM, address: 0, size: 4M}}]\n")
    board.write_text("system_id: two\nname: Two\nnodes:\n" + node.format(id="a") + node.format(id="b"))
    cli("board", "validate", str(board))
    err = cli.json("session", "create", "-b", str(board), "-f", str(HELLO), check=2)
    assert err["code"] == "INVALID_INPUT" and "--firmware NODE=IMAGE" in err["error"]
    err = cli.json("session", "create", "-b", str(board), "-f", f"a={HELLO}", "-f", f"b={HELLO}", check=5)
    assert err["code"] == "NOT_SUPPORTED" and "node 'a' runs on skyeye" in err["error"]


def test_delete_keeps_the_console_log_unless_purged(cli: CLI, client: Client) -> None:
    a = client.session_create("mps2-an385", HELLO, name="keep")
    b = client.session_create("mps2-an385", HELLO, name="purge")
    wait_console(client, a.id, b"tick 1\n")
    pid_a, pid_b = a.pid, b.pid
    kept = cli.json("session", "delete", "keep")
    log = Path(kept["console_log"])
    assert log.read_bytes().startswith(GREETING)
    assert cli("console", a.id).stdout.startswith(GREETING.decode())  # still readable by id
    assert [s["id"] for s in cli.json("session", "list")] == [b.id]
    assert {s["id"]: s["state"] for s in cli.json("session", "list", "--all")}[a.id] == "deleted"
    assert cli.json("session", "delete", "purge", "--purge")["purged"] is True
    assert not Path(b.console_log).exists()
    import psutil

    assert not psutil.pid_exists(pid_a) and not psutil.pid_exists(pid_b)
    # A deleted name can be reused.
    assert client.session_create("mps2-an385", HELLO, name="keep").name == "keep"


def test_duplicate_name_is_refused(client: Client) -> None:
    client.session_create("mps2-an385", HELLO, name="twin")
    with pytest.raises(Exception) as excinfo:
        client.session_create("mps2-an385", HELLO, name="twin")
    assert getattr(excinfo.value, "code", "") == "INVALID_INPUT"
    assert len(client.session_list()) == 1


def test_console_follow_streams_live_output(cli: CLI, client: Client, backend: str) -> None:
    import subprocess
    import sys

    info = client.session_create("mps2-an385", HELLO, backend=backend)
    proc = subprocess.Popen([sys.executable, "-m", "virsim", "console", info.id, "--follow", "--json"],
                            env=cli.env, stdout=subprocess.PIPE, text=True)
    try:
        seen = ""
        assert proc.stdout is not None
        while "tick 5\n" not in seen:
            line = proc.stdout.readline()
            assert line, "follow ended early"
            seen += json.loads(line)["data"]
    finally:
        proc.terminate()
        proc.wait(5)
    # History and live bytes joined without loss or duplication:
    assert seen.startswith(GREETING.decode() + "tick 1\ntick 2\ntick 3\ntick 4\ntick 5\n")


def test_follow_joins_history_and_live_without_gaps(client: Client) -> None:
    info = client.session_create("mps2-an385", HELLO)
    wait_console(client, info.id, b"tick 2\n")
    got = b""
    for data in client.follow_console(info.id, poll=0.1):
        got += data
        if b"tick 8\n" in got:
            break
    expected = GREETING + b"".join(b"tick %d\n" % n for n in range(1, 9))
    assert got.startswith(expected)


def _jitter_output(client: Client, deterministic: bool) -> bytes:
    info = client.session_create("mps2-an385", JITTER, deterministic=deterministic)
    wait_console(client, info.id, b"tick 12 ")
    client.session("pause", info.id)
    text = client.console_text(info.id)
    client.session_delete(info.id, purge=True)
    return text[:text.index(b"tick 12 ")]


def test_deterministic_mode_gives_identical_output(client: Client) -> None:
    # jitter.elf prints how many loop iterations fit between SysTick interrupts: host timing shows.
    plain = [_jitter_output(client, deterministic=False) for _ in range(2)]
    assert plain[0] != plain[1], "plain runs should differ, or this test proves nothing"
    runs = [_jitter_output(client, deterministic=True) for _ in range(2)]
    assert runs[0] == runs[1]
    assert runs[0].startswith(b"jitter\ntick 1 loops ") and runs[0].count(b"\n") == 12


def test_console_input_sent_before_the_firmware_listens_arrives(client: Client, backend: str) -> None:
    # Sent at once, before the firmware has enabled its UART receiver: QEMU must still get it.
    info = client.session_create("mps2-an385", HELLO, deterministic=True, backend=backend)
    client.console_send(info.id, b"early\n")
    wait_console(client, info.id, b"echo: early\n")


def test_stop_at_stops_on_the_firmware_clock_after_it_ran_that_long(client: Client, backend: str) -> None:
    """session.stop_at while the firmware runs: the CPU stops at the deadline, and the virtual time
    up to it was run, not skipped (hello never sleeps: its ticks count the time). Regression: arming
    QEMU's timer with the vCPU paused warped the clock past the deadline at once."""
    info = client.session_create("mps2-an385", HELLO, backend=backend, deterministic=True)
    wait_console(client, info.id, b"tick 1\n")
    ticks_before = client.console_text(info.id).count(b"tick ")
    clock = client.request("session.stop_at", info.id, after_ns=3_000_000_000)
    assert clock.stop_at_ns is not None
    stopped = wait_state(client, info.id, "paused")
    assert clock.stop_at_ns <= stopped.virtual_ns < clock.stop_at_ns + 1_000_000, (clock, stopped.virtual_ns)
    ticks = client.console_text(info.id).count(b"tick ") - ticks_before
    assert ticks >= 2, f"3 s of hello's time printed {ticks} ticks (one a second or faster)"
    client.session("resume", info.id)
    wait_console(client, info.id, f"tick {ticks_before + ticks + 1}\n".encode())
