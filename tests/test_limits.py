"""Inputs are bounded before they are read (virsim.limits): hostile files, hostile frames, and the
real daemon answering every one of them with a typed error naming what is wrong, at once."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CLI, HELLO
from virsim import limits
from virsim import protocol as p
from virsim.client import Client, daemon_pid
from virsim.errors import BoardConfigError, FirmwareError, ScenarioError
from virsim.paths import get_paths

BOMB = "".join(f"{k}: &{k} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
               for prev, k in zip([None, *"abcdefgh"], "abcdefghi"))  # 9^9 values, 400 bytes


def frame(type_: str, payload: object, id_: str = "f1") -> bytes:
    return json.dumps({"v": p.PROTOCOL_VERSION, "id": id_, "type": type_, "payload": payload}).encode()


# ------------------------------------------------------------------------------------------ files

def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    from virsim.board import load_board_file

    board = tmp_path / "bomb.yaml"
    board.write_text(BOMB)
    assert len(BOMB) < 500
    started = time.process_time()
    with pytest.raises(BoardConfigError, match="aliases expanded") as info:
        load_board_file(board)
    assert time.process_time() - started < 1.0  # counted, never built: 387 M values otherwise
    assert len(json.dumps(info.value.to_wire())) < 1000


def test_files_that_are_not_regular_or_too_big_are_named(tmp_path: Path) -> None:
    fifo = tmp_path / "fw.elf"
    os.mkfifo(fifo)
    with pytest.raises(FirmwareError, match=r"fw\.elf is a FIFO \(named pipe\), not a regular file"):
        limits.read_file(fifo, "firmware file", error=FirmwareError)  # returns at once: no writer is awaited
    with pytest.raises(FirmwareError, match="/dev/zero is a character device"):
        limits.read_file("/dev/zero", "firmware file", error=FirmwareError)
    with pytest.raises(FirmwareError, match="is a directory"):
        limits.read_file(tmp_path, "firmware file", error=FirmwareError)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: " + b"x" * (1024 * 1024))
    with pytest.raises(BoardConfigError, match=r"is 1048579 bytes, more than the 1 MiB limit for a board file"):
        limits.read_file(big, "board file", error=BoardConfigError)


def test_non_utf8_board_and_scenario_name_the_line(tmp_path: Path, cli: CLI) -> None:
    board = tmp_path / "b.yaml"
    board.write_bytes(b"name: x\nsystem_id: \xff\n")
    proc = cli("board", "validate", str(board), check=2)
    assert "b.yaml:2: not UTF-8 text (byte 0xff at offset 19)" in proc.stderr and "Traceback" not in proc.stderr
    scenario = tmp_path / "s.yaml"
    scenario.write_bytes(b"steps:\n  - wait-serial: \xc3\x28\n")
    proc = cli("run", str(HELLO), "--scenario", str(scenario), check=2)
    assert "s.yaml:2: not UTF-8 text" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(ScenarioError):
        from virsim.ci.scenario import load_scenario
        load_scenario(scenario)


def test_a_deeply_nested_board_is_an_error_not_a_crash(tmp_path: Path) -> None:
    from virsim.board import load_board_file

    board = tmp_path / "deep.yaml"
    board.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(BoardConfigError):
        load_board_file(board)


def test_error_details_never_carry_unbounded_values(tmp_path: Path) -> None:
    from virsim.board import load_board_file

    board = tmp_path / "long.yaml"
    board.write_text(f"system_id: x\nname: y\nnodes: {'z' * 500_000}\n")
    with pytest.raises(BoardConfigError) as info:
        load_board_file(board)
    assert len(json.dumps(info.value.to_wire())) < 5000, "the 500,000-character value went into the error"


# --------------------------------------------------------------------------------- the real daemon

def test_hostile_files_through_the_daemon_are_typed_errors_and_fast(client: Client, tmp_path: Path) -> None:
    fifo = tmp_path / "fw.elf"
    os.mkfifo(fifo)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    cases = [({"board": "mps2-an385", "firmware": str(fifo)}, "FIRMWARE_INVALID", "FIFO"),
             ({"board": "mps2-an385", "firmware": "/dev/zero"}, "FIRMWARE_INVALID", "character device"),
             ({"board": str(bomb), "firmware": str(HELLO)}, "BOARD_INVALID", "aliases expanded"),
             ({"board": "mps2-an385", "firmware": "/tmp/a\x00b"}, "INVALID_INPUT", "firmware: a path cannot contain a NUL"),
             ({"board": "mps2-an385", "firmware": "/tmp/\udcff"}, "INVALID_INPUT", "firmware:")]
    for payload, code, text in cases:
        reply = client.send_raw([json.dumps({"v": p.PROTOCOL_VERSION, "id": "x", "type": "session.create",
                                             "payload": payload}).encode()], timeout=10)
        assert reply["type"] == "error" and reply["payload"]["code"] == code, (payload, reply)
        assert text in reply["payload"]["error"], (payload, reply)
    assert client.session_list() == []  # nothing half-created


@pytest.mark.parametrize("payload,field", [
    ({"session": "x" * 10}, None),
    ({"session": "\ud800"}, "payload.session"),
    ({"session": "x", "purge": 2**64}, "payload.purge"),
    ({"session": "x", "y": json.loads("[" * 40 + "]" * 40)}, "payload.y"),
])
def test_frames_no_request_can_hold_are_invalid_input_naming_the_field(client: Client, payload: dict,
                                                                      field: str | None) -> None:
    reply = client.send_raw([frame("session.delete", payload)])
    assert reply["type"] == "error"
    assert reply["payload"]["code"] in ("INVALID_INPUT", "NOT_FOUND"), reply
    if field:
        assert reply["payload"]["code"] == "INVALID_INPUT" and reply["payload"]["error"].startswith(field), reply


def test_nan_deep_nesting_and_a_50k_reference(client: Client) -> None:
    for raw in (b'{"v":"%s","id":"n","type":"session.show","payload":{"session":NaN}}' % p.PROTOCOL_VERSION.encode(),
                b'{"v":"%s","id":"n","type":"session.show","payload":{"session":%s}}'
                % (p.PROTOCOL_VERSION.encode(), b"[" * 100_000 + b"]" * 100_000)):
        reply = client.send_raw([raw])
        assert reply["payload"]["code"] == "INVALID_INPUT", reply
    reply = client.send_raw([frame("session.show", {"session": "a" * 50_000})])
    assert reply["payload"]["code"] == "INVALID_INPUT" and "session" in reply["payload"]["error"]


def test_session_references_match_literally(client: Client) -> None:
    info = client.session_create("mps2-an385", HELLO, paused=True)
    for wildcard in ("___", "%", info.id[:3] + "%", "_" * 8):
        reply = client.send_raw([frame("session.delete", {"session": wildcard})])
        assert reply["payload"]["code"] == "NOT_FOUND", (wildcard, reply)
    assert [s.id for s in client.session_list()] == [info.id]
    assert client.session("show", info.id[:4]).id == info.id  # a real prefix still works


def test_requests_before_hello_are_refused_and_hello_is_bounded(client: Client) -> None:
    import zmq

    paths = get_paths()
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(f"ipc://{paths.control_socket}")
    try:
        raw.send(frame("session.delete", {"session": "nope"}))
        assert raw.poll(10_000)
        reply = p.decode_envelope(raw.recv())
        assert reply["payload"]["code"] == "PROTOCOL_ERROR" and "before hello" in reply["payload"]["error"]
        for bad in ({"user": "u" * 900_000}, {"pid": 2**64}, {"pid": -1}):
            raw.send(frame("hello", {"protocol": p.PROTOCOL_VERSION, **bad}))
            assert raw.poll(10_000)
            reply = p.decode_envelope(raw.recv())
            assert reply["payload"]["code"] == "INVALID_INPUT", (bad, reply)
        # a hello that lies about its user: the audit row has the kernel's user and pid
        raw.send(frame("hello", {"protocol": p.PROTOCOL_VERSION, "user": "mallory", "pid": 1}))
        assert raw.poll(10_000) and p.decode_envelope(raw.recv())["type"] == "result"
        raw.send(frame("session.delete", {"session": "nope"}))
        assert raw.poll(10_000) and p.decode_envelope(raw.recv())["payload"]["code"] == "NOT_FOUND"
    finally:
        raw.close()
    import pwd
    import sqlite3

    db = sqlite3.connect(f"file:{paths.database}?mode=ro", uri=True)
    try:
        user, pid = db.execute("select user, client_pid from events order by id desc limit 1").fetchone()
    finally:
        db.close()
    assert (user, pid) == (pwd.getpwuid(os.getuid()).pw_name, os.getpid())


def test_many_connections_do_not_grow_the_daemon(client: Client) -> None:
    import zmq

    paths = get_paths()
    daemon = psutil.Process(daemon_pid(paths))
    ctx = zmq.Context.instance()

    def churn(n: int) -> None:
        for _ in range(n):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(f"ipc://{paths.control_socket}")
            s.send(frame("hello", {"protocol": p.PROTOCOL_VERSION, "user": "u" * 64}))
            assert s.poll(10_000)
            s.recv()
            s.close()
    churn(300)  # past MAX_CLIENTS: the table is full from here on
    before = daemon.memory_info().rss
    churn(600)
    grown = daemon.memory_info().rss - before
    assert grown < 8 * 1024 * 1024, f"600 more connections grew the daemon by {grown / 1e6:.1f} MB"


# Any JSON a client could send, in envelopes of every request type but daemon.stop (which would
# stop the daemon under test, as asked).
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                    max_leaves=12)
FIELDS = sorted({name for req, _ in p.REQUESTS.values() for name in req.model_fields} | {"session"})
PAYLOADS = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), JSON, max_size=5)
TYPES = st.sampled_from(sorted(set(p.REQUESTS) - {"daemon.stop"}))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(type_=TYPES, payload=PAYLOADS)
def test_fuzzed_requests_never_get_internal(client: Client, type_: str, payload: dict) -> None:
    body = json.dumps({"v": p.PROTOCOL_VERSION, "id": "fz", "type": type_, "payload": payload}).encode()
    reply = client.send_raw([body], timeout=60)
    if reply["type"] == "error":
        assert reply["payload"]["code"] != "INTERNAL", (type_, payload, reply)
    for s in client.session_list():  # a fuzzed create that happened to be valid: gone again
        client.session("delete", s.id)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_fuzzed_bytes_never_get_internal(client: Client, raw: bytes) -> None:
    reply = client.send_raw([raw], timeout=60)
    assert reply["type"] == "error" and reply["payload"]["code"] != "INTERNAL", (raw, reply)


def test_the_daemon_log_has_no_traceback_after_the_fuzzing(client: Client) -> None:
    """The worst frames of all, then the daemon's log: every one was answered, none logged a crash."""
    worst = [b"[" * 200_000, b'{"v":"%s","id":"1","type":"hello","payload":{"pid":%d}}'
             % (p.PROTOCOL_VERSION.encode(), 2**70), frame("session.show", {"session": "\udfff"}),
             frame("console.send", {"session": "x", "data": "\x00" * 1000}), b"\xff\xfe" * 100]
    for raw in worst:
        reply = client.send_raw([raw], timeout=30)
        assert reply["payload"]["code"] != "INTERNAL", (raw[:80], reply)
    log = get_paths().daemon_log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def test_a_create_the_client_gave_up_on_is_not_done(client: Client) -> None:
    """A request still queued, or still working, when its client stops waiting is undone: the
    client would never learn of a session created after it gave up."""
    for deadline in (time.time() - 1, time.time() + 0.3):  # gone already / gone while QEMU starts
        body = json.dumps({"v": p.PROTOCOL_VERSION, "id": "late", "type": "session.create", "deadline": deadline,
                           "payload": {"board": "mps2-an385", "firmware": str(HELLO)}}).encode()
        reply = client.send_raw([body], timeout=60)
        assert reply["type"] == "error" and reply["payload"]["code"] == "TIMEOUT", reply
        assert "stopped waiting" in reply["payload"]["error"]
        assert client.session_list() == []
    assert not any(get_paths().sessions_dir.iterdir())


def test_a_reply_never_exceeds_a_frame() -> None:
    big = p.ConsoleChunk(session="s", offset=0, end=2_000_000, size=2_000_000, data="x" * 2_000_000)
    reply = p.reply_frame("r1", result=big)
    assert len(reply) <= p.MAX_FRAME
    env = p.decode_envelope(reply)
    assert env["type"] == "error" and env["payload"]["code"] == "INVALID_INPUT"
    assert "more than the 1048576-byte frame limit" in env["payload"]["error"]
