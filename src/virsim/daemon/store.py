"""The daemon's SQLite store (through sqlite-utils): sessions, programs, artifacts and the event log.

Schema changes are ordered, named migrations recorded in the `migrations` table; a landed migration
is never edited, a new one is appended. Only the daemon writes the database.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlite_utils

from virsim.errors import NotFound


def _m001_initial(db: sqlite_utils.Database) -> None:
    db["sessions"].create({
        "id": str, "name": str, "board": str, "board_source": str, "board_json": str, "node": str,
        "backend": str, "state": str, "deterministic": int, "program": str,
        "created_at": float, "started_at": float, "updated_at": float,
        "pid": int, "pid_create_time": float, "handle_json": str,
        "error": str, "stderr_tail": str,
    }, pk="id", not_null={"name", "board", "backend", "state"})
    db["sessions"].create_index(["name"])
    db["programs"].create({
        "id": str, "session": str, "format": str, "path": str, "source": str, "size": int, "sha256": str,
        "entry": int, "load_address": int, "machine": str, "created_at": float,
    }, pk="id", foreign_keys=[("session", "sessions", "id")])
    db["artifacts"].create({
        "id": int, "session": str, "kind": str, "path": str, "created_at": float,
    }, pk="id", foreign_keys=[("session", "sessions", "id")])
    db["events"].create({
        "id": int, "time": float, "user": str, "client_pid": int, "request": str, "session": str,
        "result": str, "code": str, "duration_ms": float,
    }, pk="id")


def _m002_breakpoints(db: sqlite_utils.Database) -> None:
    db["breakpoints"].create({
        "id": int, "session": str, "kind": str, "location": str, "condition": str, "temporary": int,
        "ignore_count": int, "access": str, "size": int, "address": int, "hits": int, "created_at": float,
    }, pk="id", foreign_keys=[("session", "sessions", "id")])
    db["breakpoints"].create_index(["session"])


def _m003_breakpoint_ids_autoincrement(db: sqlite_utils.Database) -> None:
    # A deleted breakpoint's id must never come back: a script holding it would hit another one.
    db.execute("""create table breakpoints_new (
        id integer primary key autoincrement, session text references sessions(id), kind text,
        location text, condition text, temporary integer, ignore_count integer, access text,
        size integer, address integer, hits integer, created_at float)""")
    db.execute("insert into breakpoints_new select id, session, kind, location, condition, temporary, "
               "ignore_count, access, size, address, hits, created_at from breakpoints")
    db.execute("drop table breakpoints")
    db.execute("alter table breakpoints_new rename to breakpoints")
    db.execute("create index idx_breakpoints_session on breakpoints (session)")


def _m004_snapshots(db: sqlite_utils.Database) -> None:
    db["snapshots"].create({
        "id": str, "session": str, "name": str, "backend": str, "board": str, "path": str, "size": int,
        "virtual_ns": int, "instructions": int, "created_at": float,
    }, pk="id", foreign_keys=[("session", "sessions", "id")])
    db["snapshots"].create_index(["session"])


def _m005_record_replay(db: sqlite_utils.Database) -> None:
    # record: 1 = write a recording of this session's inputs; replay: the recording it replays;
    # replay_until: stop there ("<n>" instructions or "<n>ns" of virtual time).
    db["sessions"].add_column("record", int)
    db["sessions"].add_column("replay", str)
    db["sessions"].add_column("replay_until", str)


def _m006_coverage(db: sqlite_utils.Database) -> None:
    # coverage: 1 = collect block coverage from power-on (session create --coverage, coverage start)
    db["sessions"].add_column("coverage", int)


def _m007_system(db: sqlite_utils.Database) -> None:
    # system_json: a multi-node session's {"sync", "quantum" (cycles), "programs": {node: program id}}
    db["sessions"].add_column("system_json", str)


def _m008_breakpoint_numbers(db: sqlite_utils.Database) -> None:
    # Users see breakpoints numbered per session (1, 2, ... in each, as gdb numbers its own); `id`
    # stays the row key. Rows from before keep their old id as their number, so an id a user or
    # script already holds still names the same breakpoint. `breakpoint_seq` is the last number a
    # session gave out: numbers are never given out twice in a session, even after deletes.
    db.execute("alter table breakpoints add column number integer")
    db.execute("update breakpoints set number = id")
    db.execute("create unique index idx_breakpoints_session_number on breakpoints (session, number)")
    db.execute("alter table sessions add column breakpoint_seq integer")
    db.execute("update sessions set breakpoint_seq = "
               "(select max(number) from breakpoints where breakpoints.session = sessions.id)")


def _m009_faults(db: sqlite_utils.Database) -> None:
    # fault_json: the last fault the firmware took since power-on (decoded); faults: how many
    db["sessions"].add_column("fault_json", str)
    db["sessions"].add_column("faults", int)


def _m010_breakpoint_enabled(db: sqlite_utils.Database) -> None:
    # enabled: 0 keeps a breakpoint without stopping there (debug.enable); file/line: where a
    # breakpoint resolved, for clients that mark source lines (the TUI's source pane).
    db.execute("alter table breakpoints add column enabled integer not null default 1")
    db["breakpoints"].add_column("file", str)
    db["breakpoints"].add_column("line", int)


MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = [
    ("001_initial", _m001_initial),
    ("002_breakpoints", _m002_breakpoints),
    ("003_breakpoint_ids_autoincrement", _m003_breakpoint_ids_autoincrement),
    ("004_snapshots", _m004_snapshots),
    ("005_record_replay", _m005_record_replay),
    ("006_coverage", _m006_coverage),
    ("007_system", _m007_system),
    ("008_breakpoint_numbers", _m008_breakpoint_numbers),
    ("009_faults", _m009_faults),
    ("010_breakpoint_enabled", _m010_breakpoint_enabled),
]


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.migrate()

    def migrate(self) -> list[str]:
        """Apply migrations not yet recorded, each in its own transaction; return their names."""
        if "migrations" not in self.db.table_names():
            self.db["migrations"].create({"name": str, "applied_at": float}, pk="name")
        done = {r["name"] for r in self.db["migrations"].rows}
        applied = []
        for name, fn in MIGRATIONS:
            if name in done:
                continue
            with self.db.conn:
                self.db.execute("BEGIN")
                fn(self.db)
                self.db["migrations"].insert({"name": name, "applied_at": time.time()})
            applied.append(name)
        return applied

    def applied_migrations(self) -> list[str]:
        return [r["name"] for r in self.db["migrations"].rows_where(order_by="name")]

    # ------------------------------------------------------------------------------------------ sessions

    def insert_session(self, row: dict[str, Any]) -> None:
        self.db["sessions"].insert({**row, "updated_at": time.time()})

    def update_session(self, session_id: str, **fields: Any) -> dict[str, Any]:
        if "handle" in fields:
            fields["handle_json"] = json.dumps(fields.pop("handle"))
        fields["updated_at"] = time.time()
        # Column names come from our own code, never from a request.
        self.db.execute(f"update sessions set {', '.join(f'{k} = ?' for k in fields)} where id = ?",
                        [*fields.values(), session_id])
        return self.get_session(session_id)

    def _rows(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        # Plain SQL on the hot read paths: sqlite-utils' table helpers look the schema up on every
        # call (get() ~65 us against ~7 us here), and every request resolves its session.
        cur = self.db.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def get_session(self, session_id: str) -> dict[str, Any]:
        rows = self._rows("select * from sessions where id = ?", [session_id])
        if not rows:
            raise NotFound(f"no session {session_id}", kind="session", id=session_id)
        return rows[0]

    def find_session(self, ref: str) -> dict[str, Any]:
        """By exact id, then by name, then by unique id prefix (deleted sessions match only by id)."""
        rows = self._rows("select * from sessions where id = ?", [ref])
        if not rows:
            rows = self._rows("select * from sessions where name = ? and state != 'deleted'", [ref])
        if not rows and len(ref) >= 3:
            # literal prefix: '%' and '_' in a reference are characters, not LIKE wildcards
            rows = self._rows("select * from sessions where substr(id, 1, ?) = ? and state != 'deleted'",
                              [len(ref), ref])
        if len(rows) == 1:
            return dict(rows[0])
        if not rows:
            raise NotFound(f"no session {ref!r}: see 'virsim session list'", kind="session", id=ref)
        raise NotFound(f"{ref!r} matches {len(rows)} sessions ({', '.join(r['id'] for r in rows)}): give more of the id",
                       kind="session", id=ref, matches=[r["id"] for r in rows])

    def sessions(self, include_deleted: bool = False) -> list[dict[str, Any]]:
        where = None if include_deleted else "state != 'deleted'"
        return [dict(r) for r in self.db["sessions"].rows_where(where, order_by="created_at")]

    def count_sessions(self) -> int:
        return int(self.db.execute("select count(*) from sessions where state != 'deleted'").fetchone()[0])

    def name_taken(self, name: str) -> bool:
        return self.db["sessions"].count_where("name = ? and state != 'deleted'", [name]) > 0

    def delete_session_rows(self, session_id: str) -> None:
        with self.db.conn:
            self.db.execute("BEGIN")
            self.db["artifacts"].delete_where("session = ?", [session_id])
            self.db["breakpoints"].delete_where("session = ?", [session_id])
            self.db["snapshots"].delete_where("session = ?", [session_id])
            self.db["programs"].delete_where("session = ?", [session_id])
            self.db["sessions"].delete(session_id)

    # ------------------------------------------------------------------------------------------ programs

    def insert_program(self, row: dict[str, Any]) -> None:
        self.db["programs"].insert(row)

    def get_program(self, session_id: str, program_id: str) -> dict[str, Any]:
        rows = list(self.db["programs"].rows_where("session = ? and id = ?", [session_id, program_id]))
        if not rows:
            raise NotFound(f"session {session_id} has no program {program_id!r}", kind="program", id=program_id)
        return dict(rows[0])

    # --------------------------------------------------------------------------------------- breakpoints

    def add_breakpoint(self, row: dict[str, Any]) -> dict[str, Any]:
        """Store a breakpoint under its session's next number (breakpoints are named by
        (session, number) everywhere outside the store)."""
        with self.db.conn:
            self.db.execute("BEGIN")
            self.db.execute("update sessions set breakpoint_seq = coalesce(breakpoint_seq, 0) + 1 where id = ?",
                            [row["session"]])
            number = self.db.execute("select breakpoint_seq from sessions where id = ?",
                                     [row["session"]]).fetchone()[0]
            values = {**row, "number": number, "hits": 0, "created_at": time.time()}
            # Column names come from our own code, never from a request.
            self.db.execute(f"insert into breakpoints ({', '.join(values)}) values ({', '.join('?' * len(values))})",
                            list(values.values()))
        return self.get_breakpoint(row["session"], number)

    def breakpoints(self, session_id: str) -> list[dict[str, Any]]:
        return self._rows("select * from breakpoints where session = ? order by number", [session_id])

    def get_breakpoint(self, session_id: str, number: int) -> dict[str, Any]:
        rows = self._rows("select * from breakpoints where session = ? and number = ?", [session_id, number])
        if not rows:
            raise NotFound(f"session {session_id} has no breakpoint {number} (see 'virsim debug list')",
                           kind="breakpoint", id=number)
        return rows[0]

    def count_hit(self, session_id: str, number: int) -> None:
        self.db.execute("update breakpoints set hits = hits + 1 where session = ? and number = ?",
                        [session_id, number])

    def set_breakpoint_enabled(self, session_id: str, number: int, enabled: bool) -> dict[str, Any]:
        self.db.execute("update breakpoints set enabled = ? where session = ? and number = ?",
                        [int(enabled), session_id, number])
        return self.get_breakpoint(session_id, number)

    def delete_breakpoint(self, session_id: str, number: int) -> None:
        self.db.execute("delete from breakpoints where session = ? and number = ?", [session_id, number])

    # ----------------------------------------------------------------------------------------- artifacts

    def add_snapshot(self, row: dict[str, Any]) -> None:
        self.db["snapshots"].insert(row)

    def snapshots(self, session_id: str) -> list[dict[str, Any]]:
        return self._rows("select * from snapshots where session = ? order by created_at, rowid", [session_id])

    def find_snapshot(self, session_id: str, ref: str) -> dict[str, Any]:
        rows = [r for r in self.snapshots(session_id) if ref in (r["id"], r["name"])]
        if not rows:
            raise NotFound(f"session {session_id} has no snapshot {ref!r}", kind="snapshot", id=ref)
        return rows[0]

    def delete_snapshot_rows(self, session_id: str) -> None:
        self.db.execute("delete from snapshots where session = ?", [session_id])
        self.db.conn.commit()

    def delete_snapshot(self, snapshot_id: str) -> None:
        self.db.execute("delete from snapshots where id = ?", [snapshot_id])
        self.db.conn.commit()

    def add_artifact(self, session_id: str, kind: str, path: Path) -> None:
        self.db["artifacts"].insert({"session": session_id, "kind": kind, "path": str(path),
                                     "created_at": time.time()})

    def artifacts(self, session_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db["artifacts"].rows_where("session = ?", [session_id], order_by="id")]

    # --------------------------------------------------------------------------------------- event log

    def log_event(self, **row: Any) -> int:
        """Add an audit row; its id (end_event fills in how it ended)."""
        return int(self.db["events"].insert({"time": time.time(), **row}).last_pk)

    def end_event(self, event_id: int, **row: Any) -> None:
        self.db["events"].update(event_id, row)

    def events(self, limit: int = 100) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db["events"].rows_where(order_by="id desc", limit=limit)]
