"""The wire protocol (virsim.protocol) on its own, and the real daemon's answers to bad frames.

Whatever a client sends, the daemon must answer with an error envelope (or, for a message ZeroMQ
itself refuses, drop the connection) and keep serving everyone else.
"""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from virsim import protocol as p
from virsim.client import Client, daemon_pid
from virsim.errors import (
    BoardConfigError,
    DaemonUnavailable,
    InvalidInput,
    NotFound,
    ProtocolError,
    VersionMismatch,
    VirsimError,
    error_codes,
)
from virsim.paths import get_paths

STATUS = b'{"v":"1.0","id":"st","type":"daemon.status","payload":{}}'


def frame(type_: str, payload: object, v: str = "1.0", id_: str = "req1") -> bytes:
    return json.dumps({"v": v, "id": id_, "type": type_, "payload": payload}).encode()


# ------------------------------------------------------------------------------------------ unit


def test_encode_decode_round_trip() -> None:
    req = p.SessionCreate(board="mps2-an385", firmware="/x/hello.elf", load_address=0x8000, paused=True)
    raw = p.encode("session.create", req, "abc123")
    env = p.decode_envelope(raw)
    assert env == {"v": p.PROTOCOL_VERSION, "id": "abc123", "type": "session.create",
                   "payload": req.model_dump(mode="json")}
    assert p.parse_request(env) == req


def test_encode_makes_an_id() -> None:
    a, b = (p.decode_envelope(p.encode("daemon.status", {})) for _ in range(2))
    assert a["id"] and b["id"] and a["id"] != b["id"]


def test_reply_frames() -> None:
    info = p.SendReply(session="s1", sent=3)
    env = p.decode_envelope(p.reply_frame("r1", result=info))
    assert env["type"] == "result" and env["id"] == "r1"
    assert p.SendReply.model_validate(env["payload"]) == info
    err = NotFound("no session 'x'", kind="session", id="x")
    env = p.decode_envelope(p.reply_frame("r2", error=err.to_wire()))
    assert env["type"] == "error" and env["id"] == "r2"
    assert env["payload"] == {"error": "no session 'x'", "code": "NOT_FOUND", "details": {"kind": "session", "id": "x"}}


def test_minor_version_is_compatible() -> None:
    env = p.decode_envelope(frame("daemon.status", {}, v="1.9"))
    assert env["type"] == "daemon.status"


@pytest.mark.parametrize("v", ["2.0", "0.9", "9"])
def test_major_version_mismatch(v: str) -> None:
    with pytest.raises(VersionMismatch) as info:
        p.decode_envelope(frame("daemon.status", {}, v=v))
    assert info.value.code == "PROTOCOL_VERSION_MISMATCH"
    assert info.value.details == {"theirs": v, "ours": p.PROTOCOL_VERSION}
    assert isinstance(info.value, ProtocolError)


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe\x00garbage", b"not json", b"{", "\u00e9t\u00e9".encode("latin-1")])
def test_non_json_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        p.decode_envelope(raw)
    assert type(info.value) is ProtocolError
    assert "JSON" in str(info.value)


@pytest.mark.parametrize("raw", [b"[1,2]", b"42", b'"hello"', b"null", b'{"v":"1.0"}', b'{"type":"hello"}',
                                 b'{"v":1,"type":"hello"}'])
def test_non_envelope_json_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        p.decode_envelope(raw)
    assert "envelope" in str(info.value)


def test_payload_must_be_an_object() -> None:
    with pytest.raises(ProtocolError, match="payload"):
        p.decode_envelope(frame("daemon.status", [1, 2]))


def test_missing_id_and_payload_get_defaults() -> None:
    env = p.decode_envelope(b'{"v":"1.0","type":"daemon.status"}')
    assert env["id"] == "" and env["payload"] == {}


def test_oversized_frames() -> None:
    big = "x" * p.MAX_FRAME
    with pytest.raises(ProtocolError) as info:
        p.encode("console.send", {"session": "s", "data": big})
    assert info.value.details["limit"] == p.MAX_FRAME
    assert info.value.details["size"] > p.MAX_FRAME
    with pytest.raises(ProtocolError) as info:
        p.decode_envelope(b" " * (p.MAX_FRAME + 1))
    assert "exceeds" in str(info.value)
    # Exactly at the limit is still a frame.
    padding = p.MAX_FRAME - len(frame("daemon.status", {}))
    assert p.decode_envelope(frame("daemon.status", {}) + b" " * padding)["type"] == "daemon.status"


def test_unknown_type() -> None:
    with pytest.raises(ProtocolError) as info:
        p.parse_request(p.decode_envelope(frame("session.explode", {})))
    assert "session.explode" in str(info.value)
    assert info.value.details["known"] == sorted(p.REQUESTS)


@pytest.mark.parametrize("type_, payload, path", [
    ("session.pause", {"sesion": "abc"}, "session"),
    ("session.create", {"board": "mps2-an385", "firmware_format": "zip"}, "firmware_format"),
    ("console.read", {"session": "s", "offset": -1}, "offset"),
    ("console.read", {"session": "s", "limit": 10**9}, "limit"),
    ("session.list", {"all": "maybe"}, "all"),
    ("program.upload", {"session": "s", "path": "/x", "load_address": "0x8000"}, "load_address"),
])
def test_invalid_payload_names_the_field(type_: str, payload: dict, path: str) -> None:
    with pytest.raises(InvalidInput) as info:
        p.parse_request(p.decode_envelope(frame(type_, payload)))
    assert info.value.code == "INVALID_INPUT"
    assert f"{type_} request: {path}:" in str(info.value)
    assert path in [pr["path"] for pr in info.value.details["problems"]]


def test_unknown_payload_field_is_reported() -> None:
    with pytest.raises(InvalidInput) as info:
        p.parse_request(p.decode_envelope(frame("session.pause", {"session": "a", "force": True})))
    assert info.value.details["problems"] == [{"path": "force", "message": "Extra inputs are not permitted",
                                               "value": True}]


def test_schema_covers_every_request() -> None:
    schema = p.schema()
    assert schema["protocol"] == p.PROTOCOL_VERSION and schema["max_frame"] == p.MAX_FRAME
    assert set(schema["requests"]) == set(p.REQUESTS)
    for type_, entry in schema["requests"].items():
        req, res = p.REQUESTS[type_]
        assert entry["payload"]["title"] == req.__name__
        assert entry["result"]["title"] == res.__name__
    assert "session" in schema["requests"]["session.pause"]["payload"]["properties"]
    assert set(schema["event"]["properties"]["type"]["enum"]) == {"console", "state", "stop", "fault", "clock"}
    json.dumps(schema)  # serialisable as-is for `virsim daemon schema`


def test_mutating_requests() -> None:
    assert "hello" not in p.MUTATING
    assert {"session.create", "session.pause", "session.delete", "console.send", "program.upload",
            "daemon.stop"} <= p.MUTATING
    assert not {"daemon.status", "session.list", "session.show", "console.read"} & p.MUTATING


@pytest.mark.parametrize("code", sorted(error_codes()))
def test_from_wire_maps_codes_back_to_classes(code: str) -> None:
    cls = error_codes()[code]
    assert cls.code == code
    original = cls("something went wrong", id="x", kind="session", skipped=None)
    wire = json.loads(json.dumps(original.to_wire()))
    assert wire["details"] == {"id": "x", "kind": "session"}  # None details are dropped
    back = VirsimError.from_wire(wire)
    assert type(back) is cls
    assert back.code == code and back.exit_code == cls.exit_code
    assert str(back) == "something went wrong"
    assert back.details == {"id": "x", "kind": "session"}


def test_from_wire_specific_classes() -> None:
    assert type(VirsimError.from_wire({"error": "e", "code": "BOARD_INVALID"})) is BoardConfigError
    assert isinstance(VirsimError.from_wire({"error": "e", "code": "BOARD_INVALID"}), InvalidInput)
    assert type(VirsimError.from_wire({"error": "e", "code": "PROTOCOL_VERSION_MISMATCH"})) is VersionMismatch


def test_from_wire_unknown_code() -> None:
    err = VirsimError.from_wire({"error": "from the future", "code": "QUANTUM_FLUX", "details": {"a": 1}})
    assert type(err) is VirsimError
    assert err.exit_code == 70
    assert err.details == {"a": 1, "unknown_code": "QUANTUM_FLUX"}
    assert str(VirsimError.from_wire({})) == "unknown error"


# ------------------------------------------------------------------------------------- live daemon


def assert_alive(client: Client, pid: int) -> None:
    """The daemon still serves: the same process answers a brand-new client."""
    fresh = Client(client.paths, timeout=10, autostart=False).connect()
    try:
        assert fresh.status().pid == pid
    finally:
        fresh.close()
    assert daemon_pid(client.paths) == pid


def error_of(reply: dict) -> dict:
    assert reply["type"] == "error", reply
    assert reply["v"] == p.PROTOCOL_VERSION
    return reply["payload"]


@pytest.mark.parametrize("raw", [b"\xff\xfe\x00garbage", b"definitely not json", b""])
def test_daemon_answers_garbage(client: Client, raw: bytes) -> None:
    pid = client.status().pid
    payload = error_of(client.send_raw([raw]))
    assert payload["code"] == "PROTOCOL_ERROR"
    assert "JSON" in payload["error"]
    assert_alive(client, pid)


@pytest.mark.parametrize("raw", [b"[1,2,3]", b"42", b'"daemon.status"', b"null"])
def test_daemon_answers_non_object_json(client: Client, raw: bytes) -> None:
    pid = client.status().pid
    payload = error_of(client.send_raw([raw]))
    assert payload["code"] == "PROTOCOL_ERROR"
    assert "envelope" in payload["error"]
    assert_alive(client, pid)


def test_daemon_refuses_another_major_version(client: Client) -> None:
    pid = client.status().pid
    reply = client.send_raw([frame("daemon.status", {}, v="2.0", id_="v2req")])
    payload = error_of(reply)
    assert payload["code"] == "PROTOCOL_VERSION_MISMATCH"
    assert payload["details"] == {"theirs": "2.0", "ours": p.PROTOCOL_VERSION}
    assert "2.0" in payload["error"] and "upgrade" in payload["error"]
    # The reply carries the request's id, so the (newer) client can match it to its request
    # instead of discarding it and timing out.
    assert reply["id"] == "v2req"
    assert_alive(client, pid)


def test_daemon_reply_to_a_non_object_payload_keeps_the_id(client: Client) -> None:
    reply = client.send_raw([frame("daemon.status", [1, 2], id_="arr1")])
    assert error_of(reply)["code"] == "PROTOCOL_ERROR"
    assert reply["id"] == "arr1"


def test_daemon_answers_unknown_type(client: Client) -> None:
    pid = client.status().pid
    reply = client.send_raw([frame("session.explode", {}, id_="u1")])
    payload = error_of(reply)
    assert reply["id"] == "u1"
    assert payload["code"] == "PROTOCOL_ERROR"
    assert "session.explode" in payload["error"]
    assert "session.create" in payload["details"]["known"]
    assert_alive(client, pid)


def test_daemon_answers_invalid_payload(client: Client) -> None:
    pid = client.status().pid
    reply = client.send_raw([frame("console.read", {"session": "x", "offset": "soon"}, id_="bad1")])
    payload = error_of(reply)
    assert reply["id"] == "bad1"
    assert payload["code"] == "INVALID_INPUT"
    assert "offset" in payload["error"]
    assert [pr["path"] for pr in payload["details"]["problems"]] == ["offset"]
    with pytest.raises(InvalidInput) as info:  # the same through the typed client
        client.call("session.pause", {"sesion": "x"})
    assert "session" in str(info.value)
    assert_alive(client, pid)


def test_daemon_refuses_two_frames_in_one_message(client: Client) -> None:
    pid = client.status().pid
    payload = error_of(client.send_raw([STATUS, STATUS]))
    assert payload["code"] == "PROTOCOL_ERROR"
    assert "one frame" in payload["error"] and "2" in payload["error"]
    assert_alive(client, pid)


def test_daemon_refuses_a_frame_over_max_frame(client: Client) -> None:
    # Larger than MAX_FRAME but within the socket's MAXMSGSIZE: the daemon reads it and says why.
    pid = client.status().pid
    raw = frame("console.send", {"session": "x", "data": "a" * p.MAX_FRAME}, id_="big1")
    assert p.MAX_FRAME < len(raw) <= p.MAX_FRAME + 4096
    payload = error_of(client.send_raw([raw]))
    assert payload["code"] == "PROTOCOL_ERROR"
    assert payload["details"] == {"size": len(raw), "limit": p.MAX_FRAME}
    assert_alive(client, pid)


def test_message_over_maxmsgsize_is_dropped_and_daemon_survives(client: Client) -> None:
    # ZeroMQ enforces MAXMSGSIZE below the daemon: it drops the message and resets the connection,
    # so there is no reply at all. The daemon must not notice beyond that, and the same client
    # socket recovers (ZeroMQ reconnects) and gets answers again.
    pid = client.status().pid
    with pytest.raises(DaemonUnavailable):
        client.send_raw([b"a" * (p.MAX_FRAME + 64 * 1024)], timeout=1.0)
    assert_alive(client, pid)
    reply = client.send_raw([STATUS], timeout=10)
    assert reply["type"] == "result" and reply["id"] == "st"
    assert reply["payload"]["pid"] == pid
    assert client.status().pid == pid


def test_hello_with_another_major_version_is_refused(client: Client) -> None:
    pid = client.status().pid
    with pytest.raises(VersionMismatch) as info:
        client.call("hello", p.Hello(protocol="9.0", pid=os.getpid()))
    err = info.value
    assert err.code == "PROTOCOL_VERSION_MISMATCH" and err.exit_code == 7
    assert "9.0" in str(err) and p.PROTOCOL_VERSION in str(err)
    assert "upgrade virsim" in str(err)
    assert err.details == {"theirs": "9.0", "ours": p.PROTOCOL_VERSION}
    assert_alive(client, pid)


def test_hello_reply(client: Client) -> None:
    assert client.daemon is not None
    assert client.daemon.protocol == p.PROTOCOL_VERSION
    assert client.daemon.pid == client.status().pid == daemon_pid(client.paths)
    reply = client.call("hello", p.Hello(protocol="1.7", client="test"))
    assert isinstance(reply, p.HelloReply) and reply.protocol == p.PROTOCOL_VERSION


def read_events(where: str = "1", args: tuple = ()) -> list[dict]:
    db = sqlite3.connect(f"file:{get_paths().database}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(f"select * from events where {where} order by id", args)]
    finally:
        db.close()


def test_failed_request_is_in_the_event_log(client: Client) -> None:
    with pytest.raises(NotFound) as info:
        client.session("pause", "no-such-session")
    assert info.value.details == {"kind": "session", "id": "no-such-session"}
    rows = read_events("request = ?", ("session.pause",))
    assert len(rows) == 1
    row = rows[0]
    assert row["result"] == "error" and row["code"] == "NOT_FOUND"
    assert row["session"] == "no-such-session"
    assert row["client_pid"] == os.getpid()  # from this client's hello
    assert row["user"]
    assert row["duration_ms"] >= 0 and row["time"] > 0


def test_event_log_records_invalid_mutations_but_not_reads(client: Client) -> None:
    client.send_raw([frame("session.resume", {"session": "x", "bogus": 1})])
    client.status()
    client.session_list()
    with pytest.raises(NotFound):
        client.session("show", "no-such-session")
    rows = read_events()
    assert [(r["request"], r["result"], r["code"]) for r in rows] == [("session.resume", "error", "INVALID_INPUT")]
