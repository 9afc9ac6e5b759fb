"""The snapshot service: snapshot create/list/restore/delete/export and sessions made from one.

A snapshot is an artifact: a `.vsnap` file (virsim/snapshot.py) under the session's data dir, its
metadata in the store, deleted with the session unless exported. The backend saves and loads the
machine state (Capability.SNAPSHOT); this service checks everything around it first — the file's
checksums, that it belongs to this board and backend — so a bad file never touches the session.
Breakpoints live in the store and in the debugger, not in the machine state, so they survive a
restore; the debugger is told to drop its cached registers.
"""

from __future__ import annotations

import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virsim import protocol as p
from virsim import snapshot
from virsim.backends.base import Capability
from virsim.daemon.states import require
from virsim.errors import InvalidInput, SnapshotInvalid

if TYPE_CHECKING:
    from virsim.daemon.debug import DebugService
    from virsim.daemon.sessions import SessionService
    from virsim.daemon.store import Store


class SnapshotService:
    def __init__(self, sessions: SessionService, store: Store, debug: DebugService) -> None:
        self.sessions = sessions
        self.store = store
        self.debug = debug

    def _dir(self, session_id: str) -> Path:
        return self.sessions.paths.session_dir(session_id) / "snapshots"

    @staticmethod
    def _info(row: dict[str, Any], path: str | None = None) -> p.SnapshotInfo:
        return p.SnapshotInfo(session=row["session"], id=row["id"], name=row["name"], backend=row["backend"],
                              board=row["board"], virtual_ns=row["virtual_ns"], instructions=row["instructions"],
                              size=row["size"], created_at=row["created_at"], path=path or row["path"])

    def _live_row(self, ref: str) -> dict[str, Any]:
        row = self.sessions.row(ref)
        self.sessions.need(row, Capability.SNAPSHOT)
        require("snapshot", row["id"], self.sessions.state_of(row))
        return row

    def meta_for(self, row: dict[str, Any]) -> dict[str, Any]:
        prog = self.store.get_program(row["id"], row["program"]) if row.get("program") else None
        return {"board": row["board"], "board_json": row["board_json"], "session_backend": row["backend"],
                "deterministic": bool(row["deterministic"]),
                "program_sha256": prog["sha256"] if prog else None,
                "program_format": prog["format"] if prog else None,
                "program_load_address": prog["load_address"] if prog else None,
                "program_name": Path(prog["source"]).name if prog else None}

    def create(self, req: p.SnapshotCreate) -> p.SnapshotInfo:
        row = self._live_row(req.session)
        existing = self.store.snapshots(row["id"])
        name = req.name if req.name is not None else f"snap-{len(existing) + 1}"
        if not name.strip() or len(name) > 64 or "/" in name:
            raise InvalidInput(f"snapshot name {name!r} must be 1-64 characters without '/'", field="name")
        if any(name in (s["name"], s["id"]) for s in existing):
            raise InvalidInput(f"session {row['id']} already has a snapshot named {name!r}", field="name", value=name)
        sid = secrets.token_hex(4)
        folder = self._dir(row["id"])
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{sid}.vsnap"
        meta = dict(self.meta_for(row), name=name, id=sid, created_at=time.time())
        try:
            saved = self.sessions.instance_of(row).create_snapshot(path, meta)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        snap = {"id": sid, "session": row["id"], "name": name, "backend": row["backend"], "board": row["board"],
                "path": str(path), "size": int(saved["size"]), "virtual_ns": saved.get("virtual_ns"),
                "instructions": saved.get("instructions"), "created_at": meta["created_at"]}
        self.store.add_snapshot(snap)
        self.store.add_artifact(row["id"], "snapshot", path)
        return self._info(snap)

    def list(self, req: p.SessionRef) -> p.SnapshotListReply:
        row = self.sessions.row(req.session)
        return p.SnapshotListReply(session=row["id"], snapshots=[self._info(s) for s in self.store.snapshots(row["id"])])

    def check(self, path: Path, board: str, backend: str) -> dict[str, Any]:
        """The verified header of `path`, or SnapshotInvalid saying why it does not fit."""
        meta, _ = snapshot.read(path)  # every section's size and checksum
        if meta.get("board") != board:
            raise SnapshotInvalid(f"{path}: the snapshot is of board {meta.get('board')!r}, this session runs "
                                  f"{board!r}", file=str(path), snapshot_board=meta.get("board"), board=board)
        if meta.get("backend") != backend:
            raise SnapshotInvalid(f"{path}: the snapshot was taken on backend {meta.get('backend')!r}, this session "
                                  f"runs on {backend!r}", file=str(path), snapshot_backend=meta.get("backend"))
        return meta

    def restore(self, req: p.SnapshotRef) -> p.SnapshotInfo:
        row = self._live_row(req.session)
        snap = self.store.find_snapshot(row["id"], req.snapshot)
        self.check(Path(snap["path"]), row["board"], row["backend"])
        self.load_into(row, Path(snap["path"]), snap["name"], snap.get("virtual_ns"))
        return self._info(snap)

    def load_into(self, row: dict[str, Any], path: Path, name: str, virtual_ns: int | None) -> None:
        when = f" at {virtual_ns / 1e9:.6f} s virtual time" if virtual_ns is not None else ""
        marker = f"\n[virsim: restored snapshot {name}{when}]\n".encode()
        done = self.sessions.instance_of(row).restore_snapshot(path, marker)
        self.debug.state_replaced(row["id"], gdb_replaced=bool((done or {}).get("gdb_replaced")))

    def delete(self, req: p.SnapshotRef) -> p.SnapshotInfo:
        row = self.sessions.row(req.session)
        snap = self.store.find_snapshot(row["id"], req.snapshot)
        live = self.sessions.live.get(row["id"])
        if live is not None:
            live.instance.delete_snapshot(Path(snap["path"]))
        Path(snap["path"]).unlink(missing_ok=True)
        self.store.delete_snapshot(snap["id"])
        return self._info(snap)

    def export(self, req: p.SnapshotExport) -> p.SnapshotInfo:
        """A standalone copy that outlives the session: the state plus the program image, so
        `session create --from-snapshot` needs nothing else."""
        row = self.sessions.row(req.session)
        snap = self.store.find_snapshot(row["id"], req.snapshot)
        out = Path(req.out)
        if not out.is_absolute():
            raise InvalidInput(f"--out must be an absolute path, got {req.out!r}", field="out")
        meta, sections = snapshot.read(Path(snap["path"]))
        meta.pop("_offset", None)
        meta.pop("sections", None)
        prog = self.store.get_program(row["id"], row["program"]) if row.get("program") else None
        if prog is not None:
            sections["program"] = Path(prog["path"]).read_bytes()
        sections.update(self.sessions.adapter(row).snapshot_export_sections(self.sessions.paths.session_dir(row["id"]),
                                                                            meta))
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            size = snapshot.write(out, meta, sections)
        except OSError as err:
            raise InvalidInput(f"cannot write {out}: {err.strerror}", field="out", value=str(out)) from err
        return self._info(dict(snap, size=size), path=str(out))

    def remove_all(self, session_id: str) -> None:
        """Snapshots go with their session (exports live elsewhere and stay)."""
        shutil.rmtree(self._dir(session_id), ignore_errors=True)
