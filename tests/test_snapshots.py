"""Snapshots through the real daemon and the built-in engine: create/list/restore/delete/export,
sessions from an exported file, exact replay after a restore, and refusal of bad files."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import (HELLO, HELLO_SYSTICK, LM3S_HELLO, CLI, chosen_backend, cli_debug_stop, debug_stop, need_tool,
                      reverse_walk, session_progress, wait_console, wait_for, wait_progress, wait_state)
from virsim import snapshot
from virsim.client import Client, Subscription
from virsim.daemon.snapshots import SnapshotService
from virsim.errors import SnapshotInvalid


@pytest.fixture(params=["qemu", "builtin", "renode"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every backend with snapshots (Renode: its Save/Load; skipped with the reason where it is not installed)."""
    return chosen_backend(request)


@pytest.fixture(autouse=True)
def gdb() -> None:
    need_tool("gdb-multiarch")  # the replay checks stop at breakpoints


def ram_digest(client: Client, sid: str) -> str:
    chunk = client.debug("mem", sid, address="0x20000000", size=0x1000)
    return hashlib.sha256(bytes.fromhex(chunk.data)).hexdigest()


def run_ticks(client: Client, sid: str, n: int) -> None:
    for _ in range(n):
        stop = debug_stop(client, sid).stop
        assert stop is not None and stop.function == "on_tick"


def test_restore_replays_exactly_what_ran_the_first_time(client: Client, backend: str) -> None:
    sid = client.session_create("mps2-an385", HELLO_SYSTICK, backend=backend, paused=True, deterministic=True).id
    client.debug("break", sid, location="on_tick")
    run_ticks(client, sid, 1)
    snap = client.snapshot("create", sid, name="at-tick-1")
    n_at_snapshot = client.debug("eval", sid, expression="n").value
    assert snap.virtual_ns > 0 and snap.size > 0 and Path(snap.path).exists()
    mark = len(client.console_text(sid))
    run_ticks(client, sid, 3)
    first = client.console_text(sid)[mark:]
    first_ram = ram_digest(client, sid)
    assert first.count(b"tick ") == 3
    restored = client.snapshot("restore", sid, snapshot="at-tick-1")
    assert restored.id == snap.id
    assert client.debug("eval", sid, expression="n").value == n_at_snapshot  # the debugger sees the restored CPU
    text = client.console_text(sid)
    assert text.endswith(b"[virsim: restored snapshot at-tick-1 at %.6f s virtual time]\n" % (snap.virtual_ns / 1e9))
    mark = len(text)
    run_ticks(client, sid, 3)  # breakpoints survived the restore
    assert client.console_text(sid)[mark:] == first
    assert ram_digest(client, sid) == first_ram


def test_snapshot_of_a_running_session_list_delete_and_names(cli: CLI, client: Client, backend: str) -> None:
    sid = client.session_create("mps2-an385", HELLO, backend=backend, deterministic=True).id
    wait_console(client, sid, b"tick 1\n")
    made = cli.json("snapshot", "create", sid)
    assert made["name"] == "snap-1" and made["virtual_ns"] > 0
    assert client.session("show", sid).state == "running"  # taken between instructions, not stopped
    dup = cli.json("snapshot", "create", sid, "--name", "snap-1", check=2)
    assert dup["code"] == "INVALID_INPUT" and "already has a snapshot" in dup["error"]
    cli.json("snapshot", "create", sid, "--name", "second")
    listed = cli.json("snapshot", "list", sid)["snapshots"]
    assert [s["name"] for s in listed] == ["snap-1", "second"]
    assert listed[0]["virtual_ns"] < listed[1]["virtual_ns"]
    human = cli("snapshot", "list", sid).stdout
    assert "snap-1" in human and "KiB" in human
    cli.json("snapshot", "restore", sid, "snap-1")
    assert client.session("show", sid).state == "running"
    cli.json("snapshot", "delete", sid, listed[0]["id"])
    assert not Path(listed[0]["path"]).exists()
    assert [s["name"] for s in cli.json("snapshot", "list", sid)["snapshots"]] == ["second"]
    missing = cli.json("snapshot", "restore", sid, "nope", check=3)
    assert missing["code"] == "NOT_FOUND"


def test_export_outlives_the_session_and_starts_a_new_one(cli: CLI, client: Client, tmp_path: Path,
                                                           backend: str) -> None:
    sid = client.session_create("mps2-an385", HELLO_SYSTICK, backend=backend, paused=True, deterministic=True).id
    client.debug("break", sid, location="on_tick")
    run_ticks(client, sid, 2)
    snap = client.snapshot("create", sid, name="two")
    n_at_snapshot = client.debug("eval", sid, expression="n").value
    out = tmp_path / "exports" / "two.vsnap"
    exported = cli.json("snapshot", "export", sid, "two", "--out", str(out))
    assert exported["path"] == str(out) and out.stat().st_size == exported["size"]
    mark = len(client.console_text(sid))
    run_ticks(client, sid, 2)
    continuation = client.console_text(sid)[mark:]
    client.session_delete(sid)
    assert not Path(snap.path).exists() and out.exists()  # snapshots go with the session, exports stay
    new = cli.json("session", "create", "--from-snapshot", str(out), "--paused")
    assert new["backend"] == backend and new["board"] == "mps2-an385" and new["deterministic"]
    client.debug("break", new["id"], location="on_tick")
    assert client.debug("eval", new["id"], expression="n").value == n_at_snapshot
    mark = len(client.console_text(new["id"]))
    run_ticks(client, new["id"], 2)
    assert client.console_text(new["id"])[mark:] == continuation


def test_bad_snapshot_files_are_refused_and_change_nothing(cli: CLI, client: Client, tmp_path: Path) -> None:
    sid = client.session_create("mps2-an385", HELLO, backend="builtin").id
    wait_console(client, sid, b"Hello")
    client.snapshot("create", sid, name="s")
    good = tmp_path / "s.vsnap"
    client.snapshot("export", sid, snapshot="s", out=good)
    raw = good.read_bytes()
    truncated, flipped = tmp_path / "t.vsnap", tmp_path / "f.vsnap"
    truncated.write_bytes(raw[: len(raw) - 100])
    flipped.write_bytes(raw[:-10] + bytes([raw[-10] ^ 0xFF]) + raw[-9:])
    for path, why in ((truncated, "truncated"), (flipped, "corrupted"), (HELLO, "not a virsim snapshot")):
        err = cli.json("session", "create", "--from-snapshot", str(path), check=2)
        assert err["code"] == "SNAPSHOT_INVALID" and why in err["error"], err
    err = cli.json("session", "create", "--from-snapshot", str(good), "--backend", "qemu", check=2)
    assert err["code"] == "SNAPSHOT_INVALID" and "backend" in err["error"]
    err = cli.json("session", "create", "--from-snapshot", str(good), "--board", "mps2-an385", check=2)
    assert "drop --board" in err["error"]
    assert [s["id"] for s in cli.json("session", "list")] == [sid]  # nothing was created
    with pytest.raises(SnapshotInvalid, match="of board 'mps2-an385'"):
        SnapshotService.check(None, good, "lm3s811evb", "builtin")  # type: ignore[arg-type]
    with pytest.raises(SnapshotInvalid, match="taken on backend 'builtin'"):
        SnapshotService.check(None, good, "mps2-an385", "qemu")  # type: ignore[arg-type]
    meta, sections = snapshot.read(good)
    assert set(sections) == {"state", "memory", "program"} and meta["board"] == "mps2-an385"


def test_qemu_machine_that_breaks_loadvm_is_refused(cli: CLI, client: Client, tmp_path: Path) -> None:
    need_tool("qemu-system-arm")
    board = tmp_path / "lm3s6965.yaml"
    board.write_text("""system_id: lm3s6965evb
name: Stellaris LM3S6965 EVB
nodes:
  - id: cpu0
    backend: qemu
    processor: {type: cortex-m3, frequency: 50MHz}
    memory:
      - {type: Flash, address: 0x0, size: 256K, access: RO}
      - {type: RAM, address: 0x20000000, size: 64K}
    peripherals: [{id: uart0, type: pl011, address: 0x4000C000, irq: 5, console: true}]
    qemu: {machine: lm3s6965evb}
""")
    sid = client.session_create(str(board), LM3S_HELLO).id
    err = cli.json("snapshot", "create", sid, check=5)
    assert err["code"] == "NOT_SUPPORTED" and "SD card" in err["error"]
    assert client.session("show", sid).state == "running"  # refused, not crashed
    err = cli.json("session", "create", "-b", str(board), "-f", str(LM3S_HELLO), "--record", check=5)
    assert err["code"] == "NOT_SUPPORTED" and "cannot record on lm3s6965evb" in err["error"]


# ------------------------------------------------------------------------------ record / replay

def refuses_a_recording_in_progress(cli: CLI, sid: str, recording: str) -> None:
    """Replaying the recording of a session still live (still writing it) is refused at once."""
    err = cli.json("session", "replay", recording, check=4)
    assert err["code"] == "INVALID_STATE" and err["error"].startswith("recording in progress: ")
    assert f"power off or delete session {sid} first" in err["error"] and recording in err["error"]
    assert [s["id"] for s in cli.json("session", "list")] == [sid]  # no replay session was made


def state_reasons(events: Subscription, sid: str) -> Callable[[], list[str]]:
    """Polls `events` and returns the reasons of the state events of `sid` seen so far."""
    seen: list[str] = []

    def poll() -> list[str]:
        while (got := events.recv(0.05)) is not None:
            if got[0].type == "state" and got[0].session == sid and got[0].reason:
                seen.append(got[0].reason)
        return seen
    return poll


def test_record_then_replay_gives_the_same_console_bytes(cli: CLI, client: Client, tmp_path: Path) -> None:
    made = cli.json("session", "create", "-b", "mps2-an385", "-f", str(HELLO), "--backend", "builtin", "--record")
    sid = made["id"]
    assert made["deterministic"] and made["recording"].endswith("recording.vrec")
    wait_console(client, sid, b"Hello")
    refuses_a_recording_in_progress(cli, sid, made["recording"])
    client.console_send(sid, b"ping\n")
    wait_console(client, sid, b"echo: ping\n")
    client.console_send(sid, b"pong\n")
    wait_console(client, sid, b"echo: pong\n")
    client.session("power_off", sid)
    original = client.console_text(sid)
    replay = cli.json("session", "replay", made["recording"])
    assert replay["replaying"] == made["recording"] and replay["backend"] == "builtin"
    wait_progress(lambda: len(client.console_text(replay["id"])) >= len(original),
                  progress=session_progress(client, replay["id"]), what="the replay to print what the original did")
    assert client.console_text(replay["id"]).startswith(original)  # same bytes, byte for byte
    client.console_send(replay["id"], b"live\n")  # a replay takes its input from the recording only
    assert b"echo: live" not in client.console_text(replay["id"])
    # --until: a second replay pauses exactly there; named by the session that recorded it, this time.
    until = cli.json("session", "replay", made["name"], "--until", "2000000")
    assert until["replaying"] == made["recording"]
    wait_state(client, until["id"], "paused")
    assert client.clock(until["id"]).virtual_ns == 2_000_000 * 40  # 25 MHz: 40 ns per instruction
    with client.subscribe() as events:
        by_time = cli.json("session", "replay", made["recording"], "--until", "30ms")
        wait_state(client, by_time["id"], "paused")
        assert client.clock(by_time["id"]).virtual_ns == 30_000_000
        # Messages about --until quote it as typed (not as the 30000000ns the engine is given).
        poll = state_reasons(events, by_time["id"])
        reasons = wait_for(lambda: [r for r in poll() if "until" in r])
        assert reasons == ["replay reached --until 30ms"]


def record_qemu_session(cli: CLI, client: Client, refusal: bool = False) -> tuple[str, str, bytes]:
    """A recorded QEMU session of hello.elf that echoed one line, powered off: (id, recording, console).
    `refusal`: check on the way that its recording cannot be replayed while it is being written."""
    need_tool("qemu-system-arm")
    made = cli.json("session", "create", "-b", "mps2-an385", "-f", str(HELLO), "--backend", "qemu", "--record")
    sid = made["id"]
    assert made["deterministic"] and made["recording"].endswith("recording.vrec")
    wait_console(client, sid, b"tick 1\n")
    if refusal:
        refuses_a_recording_in_progress(cli, sid, made["recording"])
    client.console_send(sid, b"ping\n")  # paced a byte at a time under rr=record: no byte lost
    wait_console(client, sid, b"echo: ping\n")
    wait_console(client, sid, b"tick 8\n")
    client.session("power_off", sid)
    return sid, made["recording"], client.console_text(sid)


def test_qemu_record_then_replay_gives_the_same_console_bytes(cli: CLI, client: Client) -> None:
    sid, recording, original = record_qemu_session(cli, client, refusal=True)
    replay = cli.json("session", "replay", recording)
    assert replay["replaying"] == recording and replay["backend"] == "qemu"
    # QEMU ends the replay where the recording ended (its recorded shutdown): the session stops.
    wait_state(client, replay["id"], "stopped")
    assert client.console_text(replay["id"]) == original  # byte for byte, nothing more
    # --until: QEMU's replay-break pauses at exactly that instruction (the example of the help).
    until = cli.json("session", "replay", recording, "--until", "5000000")
    wait_state(client, until["id"], "paused")
    assert client.clock(until["id"]).instructions == 5_000_000
    # A time is refused at once, quoting what was typed.
    err = cli.json("session", "replay", recording, "--until", "30ms", check=5)
    assert err["code"] == "NOT_SUPPORTED" and err["details"]["value"] == "30ms"
    assert err["error"] == ("--until 30ms: qemu replays stop at an instruction count, not at a virtual time: "
                            "give a count, e.g. --until 5000000")
    # A recording or replaying QEMU takes no snapshots (the replay seeks from them).
    err = cli.json("snapshot", "create", until["id"], check=5)
    assert err["code"] == "NOT_SUPPORTED" and "recording or replaying" in err["error"]


def test_qemu_reverse_debugging_on_a_replay(cli: CLI, client: Client) -> None:
    sid, recording, original = record_qemu_session(cli, client)
    rid = cli.json("session", "replay", recording, "--paused")["id"]
    reverse_walk(cli, client, rid)
    # QEMU re-ran the recording from its start for each reverse command; the log shows it once.
    assert client.console_text(rid) == original[:original.index(b"tick 3\n")]
    for _ in range(4):  # forward again, past the furthest point reached before
        cli_debug_stop(cli, client, rid, "continue")
    assert client.console_text(rid) == original[:original.index(b"tick 5\n")]


def test_record_and_replay_refusals(cli: CLI, tmp_path: Path) -> None:
    bogus = tmp_path / "recording.vrec"
    bogus.write_text("{}")
    err = cli.json("session", "replay", str(bogus), check=2)
    assert "not a virsim recording" in err["error"]
    err = cli.json("session", "replay", str(bogus), "--until", "soon", check=2)
    assert "not a virsim recording" in err["error"]  # the file is checked first
    err = cli.json("session", "replay", str(tmp_path / "missing.vrec"), check=2)
    assert "not a readable recording" in err["error"]
    err = cli.json("session", "replay", "nosuchsession", check=2)
    assert err["error"] == "nosuchsession: neither a recording file nor a session"
    assert cli.json("session", "list") == []
    plain = cli.json("session", "create", "-b", "mps2-an385", "--backend", "builtin", "--name", "plain")
    err = cli.json("session", "replay", "plain", check=2)
    assert err["error"] == "session plain has no recording: create a session with --record to replay it"
    assert [s["id"] for s in cli.json("session", "list")] == [plain["id"]]  # no replay session was made
