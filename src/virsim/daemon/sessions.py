"""The session service: session lifecycle, programs, console and supervision of emulator instances.

It owns the live `Instance` of every session, keeps the store in step with them, enforces the
state machine (states.py), checks backend capabilities before calling a feature, and turns an
emulator's death into a `failed` session. After a daemon restart `reconcile()` re-attaches to
emulators that still run, marks the rest `lost`, and stops any emulator of ours it cannot account for.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any


from virsim import protocol as p
from virsim import snapshot, svd
from virsim.atomic import as_storage_error, remove_debris, write_atomic
from virsim.backends import get_backend, process
from virsim.backends.base import FORMAT_CAPABILITY, BackendAdapter, Capability, Instance, InstanceSpec
from virsim.backends.process import tail
from virsim.board import SYSTEM_BACKEND, BoardConfig, Node, check_qemu_args, resolve_board
from virsim.daemon.analysis import COVERAGE_ON
from virsim.daemon.console import ConsoleTail, ensure_log, log_size, read_log
from virsim.daemon.pending import check_client_waiting
from virsim.daemon.states import LIVE, SessionState, require
from virsim.daemon.store import Store
from virsim.errors import (EmulatorError, InvalidInput, InvalidState, NotFound, NotSupported, SnapshotInvalid,
                           VirsimError)
from virsim.firmware import FirmwareImage, check_fits, inspect
from virsim.paths import Paths

if TYPE_CHECKING:
    from virsim.daemon.analysis import AnalysisService
    from virsim.daemon.debug import DebugService
    from virsim.daemon.faults import FaultService
    from virsim.daemon.snapshots import SnapshotService

log = logging.getLogger("virsim.daemon.sessions")
RECORDING = "recording.vrec"  # the header (JSON): what was recorded, so `session replay` can rebuild it
RECORD_DATA = "recording.data"  # the backend's own log next to it (engine input log, QEMU rr file)
S = SessionState
NVIC_BASE = 0xE000E100  # the Cortex-M NVIC's ISER0 (ARMv7-M ARM B3.4)
Publisher = Callable[[p.Event, bytes], None]


class Live:
    """A session's in-memory side: its instance and its console tail."""

    def __init__(self, instance: Instance, tail_: ConsoleTail) -> None:
        self.instance = instance
        self.tail = tail_
        self.hot_until = 0.0  # pump the console eagerly until then (bytes just arrived)
        self.speed_sample: tuple[float, int] | None = None  # (host time, instructions) at the last show
        self.stop_at: int | None = None  # the virtual time the CPU is set to stop at (session.stop_at)


class SessionService:
    def __init__(self, paths: Paths, store: Store, publish: Publisher) -> None:
        self.paths = paths
        self.store = store
        self.publish = publish
        self._svd_cache: dict[tuple[str, float], list[dict[str, Any]]] = {}
        self.live: dict[str, Live] = {}
        self.debug: DebugService | None = None  # set by the DebugService; it owns run control when attached
        self.snapshots: SnapshotService | None = None  # set by the server
        self.analysis: AnalysisService | None = None  # set by the server; saves coverage/trace at stop
        self.faults: FaultService | None = None  # set by the FaultService; watches each instance's fault table

    # ------------------------------------------------------------------------------------------ helpers

    def row(self, ref: str) -> dict[str, Any]:
        return self.store.find_session(ref)

    @staticmethod
    def state_of(row: dict[str, Any]) -> SessionState:
        return SessionState(row["state"])

    def _board(self, row: dict[str, Any]) -> BoardConfig:
        return BoardConfig.model_validate_json(row["board_json"])

    def board_node(self, row: dict[str, Any]) -> Node:
        return next(n for n in self._board(row).nodes if n.id == row["node"])

    def _spec(self, row: dict[str, Any], firmware: FirmwareImage | None, paused: bool) -> InstanceSpec:
        board = self._board(row)
        node = next(n for n in board.nodes if n.id == row["node"])
        workdir = self.paths.session_dir(row["id"])
        return InstanceSpec(
            session_id=row["id"], board=board, node=node, workdir=workdir,
            rundir=self.paths.session_runtime(row["id"]), console_log=workdir / "console.log",
            stderr_log=workdir / "emulator.log", firmware=firmware,
            deterministic=bool(row["deterministic"]), start_paused=paused,
            record=workdir / RECORD_DATA if row.get("record") else None,
            replay=Path(row["replay"]).with_name(RECORD_DATA) if row.get("replay") else None,
            replay_until=_parse_until(row["replay_until"]) if row.get("replay_until") else None,
            coverage=row.get("coverage") == COVERAGE_ON, system=self._system(row))

    def _node(self, row: dict[str, Any]) -> Node:
        return next(n for n in self._board(row).nodes if n.id == row["node"])

    def _system(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """InstanceSpec.system of a multi-node session: each node's program file and the sync settings."""
        if not row.get("system_json"):
            return None
        cfg = json.loads(row["system_json"])
        firmware = {node: self.store.get_program(row["id"], prog)["path"] for node, prog in cfg["programs"].items()}
        return {"firmware": firmware, "sync": cfg["sync"], "quantum": cfg["quantum"]}

    def _program_image(self, row: dict[str, Any]) -> FirmwareImage | None:
        if not row.get("program"):
            return None
        prog = self.store.get_program(row["id"], row["program"])
        return inspect(Path(prog["path"]), prog["format"], prog["load_address"])

    def set_state(self, row: dict[str, Any], state: SessionState, reason: str = "", **fields: Any) -> dict[str, Any]:
        previous = row["state"]
        row = self.store.update_session(row["id"], state=state.value, **fields)
        if previous != state.value:
            log.info("session %s: %s -> %s %s", row["id"], previous, state.value, reason)
            self.publish(p.Event(type="state", session=row["id"], time=time.time(), state=state.value,
                                 previous=previous, reason=reason or None), b"")
        return row

    @staticmethod
    @contextmanager
    def _removed_unless_recorded(folder: Path) -> Iterator[None]:
        """A folder made for a row the store then could not take is removed again."""
        try:
            yield
        except BaseException as err:
            shutil.rmtree(folder, ignore_errors=True)
            storage = as_storage_error(err) if isinstance(err, Exception) else None
            if storage is not None and storage is not err:
                raise storage from err
            raise

    @staticmethod
    def _recorded(write: Callable[[], dict[str, Any]], undo: Callable[[], None]) -> dict[str, Any]:
        """`write()` the new state of what the emulator already did; when the store cannot take
        it (a full disk), `undo()` what the emulator did, so store and emulator still agree."""
        try:
            return write()
        except Exception as err:
            try:
                undo()
            except Exception:
                log.exception("undoing an emulator change the store could not record")
            raise as_storage_error(err) or err

    def _attach_live(self, row: dict[str, Any], instance: Instance, from_start: bool) -> None:
        sid = row["id"]

        def publish_console(offset: int, data: bytes) -> None:
            self.publish(p.Event(type="console", session=sid, time=time.time(), offset=offset), data)

        tail_ = ConsoleTail(self._spec(row, None, False).console_log, publish_console, from_start=from_start)
        self.live[sid] = Live(instance, tail_)

    def _started(self, row: dict[str, Any], instance: Instance, state: SessionState, reason: str) -> dict[str, Any]:
        proc = instance.handle().get("process") or {}
        return self.set_state(row, state, reason, started_at=time.time(), pid=instance.pid,
                               pid_create_time=proc.get("create_time"), handle=instance.handle(),
                               error=None, stderr_tail=None)

    def adapter(self, row: dict[str, Any]) -> BackendAdapter:
        return get_backend(row["backend"])

    def need(self, row: dict[str, Any], capability: Capability) -> None:
        adapter = self.adapter(row)
        if capability not in adapter.get_capabilities():
            raise NotSupported(f"backend {adapter.backend_type()} of session {row['id']} does not support "
                               f"{capability.value}", backend=adapter.backend_type(), capability=capability.value)
        live = self.live.get(row["id"])
        reason = live.instance.limits().get(capability) if live is not None else None
        if reason:
            raise NotSupported(f"session {row['id']}: {reason}", backend=adapter.backend_type(),
                               capability=capability.value)

    def instance_of(self, row: dict[str, Any]) -> Instance:
        return self._instance(row)

    def _instance(self, row: dict[str, Any]) -> Instance:
        live = self.live.get(row["id"])
        if live is None:
            raise InvalidState(f"session {row['id']} has no running emulator (it is {row['state']})",
                               session=row["id"], current=row["state"])
        return live.instance

    def info(self, row: dict[str, Any]) -> p.SessionInfo:
        live = self.live.get(row["id"])
        state = self.state_of(row)
        workdir = self.paths.session_dir(row["id"])
        started = row.get("started_at")
        try:
            caps = sorted(c.value for c in self.adapter(row).get_capabilities())
        except NotSupported:
            caps = []
        debugger, stop = self.debug.info(row["id"]) if self.debug else (None, None)
        return p.SessionInfo(
            id=row["id"], name=row["name"], board=row["board"], backend=row["backend"], state=state.value,
            created_at=row["created_at"], started_at=started,
            uptime_s=(time.time() - started) if started and state in LIVE else None,
            deterministic=bool(row["deterministic"]), program=row.get("program"),
            recording=str(workdir / RECORDING) if row.get("record") else None, replaying=row.get("replay"),
            pid=live.instance.pid if live else None, console_log=str(workdir / "console.log"),
            console_bytes=log_size(workdir / "console.log"), error=row.get("error"),
            stderr_tail=row.get("stderr_tail"), capabilities=caps,
            endpoints=self._endpoints(row["id"], live), debugger=debugger, stop=stop,
            fault=json.loads(row["fault_json"]) if row.get("fault_json") else None, faults=row.get("faults") or 0)

    def _endpoints(self, session_id: str, live: Live | None) -> dict[str, str]:
        if live is None:
            return {}
        out = live.instance.endpoints()
        proxy = self.debug.state[session_id].proxy if self.debug and session_id in self.debug.state else None
        if proxy is not None:
            out["gdb"] = str(proxy.path)
        return out

    def _save_program(self, session_id: str, source: Path, fmt: str, load_address: int | None,
                      board: BoardConfig, node_id: str) -> dict[str, Any]:
        node = next(n for n in board.nodes if n.id == node_id)
        image = inspect(source, fmt, load_address)
        check_fits(image, node)
        program_id = "p" + secrets.token_hex(3)
        dest_dir = self.paths.session_dir(session_id) / "programs"
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / f"{program_id}-{source.name}"
        shutil.copyfile(source, dest)
        row = {"id": program_id, "session": session_id, "format": image.format, "path": str(dest),
               "source": str(source), "size": image.size, "sha256": image.sha256, "entry": image.entry,
               "load_address": image.load_address, "machine": image.machine, "created_at": time.time()}
        self.store.insert_program(row)
        self.store.add_artifact(session_id, "program", dest)
        return row

    @staticmethod
    def _program_info(row: dict[str, Any]) -> p.ProgramInfo:
        return p.ProgramInfo(id=row["id"], session=row["session"], format=row["format"], size=row["size"],
                             sha256=row["sha256"], entry=row["entry"], load_address=row["load_address"],
                             machine=row["machine"], source=row["source"], created_at=row["created_at"])

    # ---------------------------------------------------------------------------------------- requests

    def create(self, req: p.SessionCreate) -> p.SessionInfo:
        if req.from_snapshot:
            return self._create_from_snapshot(req)
        if not req.board:
            raise InvalidInput("give a board (--board) or a snapshot to start from (--from-snapshot)", field="board")
        board, source = resolve_board(req.board)
        check_qemu_args(board, source, req.allow_unsafe_qemu_args)
        return self._create(req, board, source)

    def _create_from_snapshot(self, req: p.SessionCreate) -> p.SessionInfo:
        """A new session whose board, backend, program and machine state all come from an exported
        .vsnap (checked whole before anything is created)."""
        path = Path(req.from_snapshot or "")
        meta, sections = snapshot.read(path)
        if "program" not in sections or not meta.get("board_json"):
            raise SnapshotInvalid(f"{path}: has no program image; use a file written by `virsim snapshot export`",
                                  file=str(path))
        if req.backend and req.backend != meta.get("backend"):
            raise SnapshotInvalid(f"{path}: the snapshot was taken on backend {meta.get('backend')!r}, not "
                                  f"{req.backend!r}", file=str(path))
        board = BoardConfig.model_validate_json(meta["board_json"])
        tmp = Path(tempfile.mkdtemp(prefix="vsnap-"))
        try:
            program = tmp / (meta.get("program_name") or "program")
            program.write_bytes(sections["program"])
            sub = req.model_copy(update={"board": board.system_id, "backend": meta["backend"],
                                         "firmware": str(program), "firmware_format": meta.get("program_format") or "auto",
                                         "load_address": meta.get("program_load_address"), "paused": True,
                                         "deterministic": bool(meta.get("deterministic"))})
            adapter = get_backend(meta["backend"])
            info = self._create(sub, board, f"snapshot {path}",
                                before_boot=lambda workdir: adapter.snapshot_prepare(workdir, sections))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        row = self.store.get_session(info.id)
        with self._undone_on_failure(info.id):
            assert self.snapshots is not None
            self.snapshots.load_into(row, path, meta.get("name") or path.name, meta.get("virtual_ns"))
            if not req.paused:
                return self.resume(p.SessionRef(session=info.id))
        return self.info(self.store.get_session(info.id))

    def _create(self, req: p.SessionCreate, board: BoardConfig, source: str,
                before_boot: Callable[[Path], None] | None = None, extra: dict[str, Any] | None = None
                ) -> p.SessionInfo:
        if board.multi_node:
            return self._create_system(req, board, source)
        if req.node_firmware:
            raise InvalidInput(f"board {board.system_id} has one node: give --firmware IMAGE, not NODE=IMAGE",
                               field="firmware")
        node = board.nodes[0]
        if req.semihosting and not node.semihosting:  # this session only: its stored board says so
            node = node.model_copy(update={"semihosting": True})
            board = board.model_copy(update={"nodes": [node]})
        backend = req.backend or node.backend
        adapter = get_backend(backend)
        adapter.check_node(node)
        caps = adapter.get_capabilities()
        if req.coverage and Capability.COVERAGE not in caps:
            raise NotSupported(f"backend {backend} cannot collect coverage", backend=backend,
                               capability=Capability.COVERAGE.value)
        if req.record:
            if Capability.RECORD not in caps:
                raise NotSupported(f"backend {backend} cannot record executions", backend=backend,
                                   capability=Capability.RECORD.value)
            req = req.model_copy(update={"deterministic": True})  # a recording replays only what is deterministic
        if req.deterministic and Capability.DETERMINISTIC not in caps:
            raise NotSupported(f"backend {backend} has no deterministic mode", backend=backend,
                               capability=Capability.DETERMINISTIC.value)
        image = inspect(Path(req.firmware), req.firmware_format, req.load_address) if req.firmware else None
        if image is not None:
            check_fits(image, node)
            if FORMAT_CAPABILITY[image.format] not in caps:
                raise NotSupported(f"backend {backend} cannot load {image.format} images", backend=backend,
                                   capability=FORMAT_CAPABILITY[image.format].value)
        if req.name is not None:
            if not req.name.strip() or len(req.name) > 64:
                raise InvalidInput(f"session name {req.name!r} must be 1-64 characters", field="name")
            if self.store.name_taken(req.name):
                raise InvalidInput(f"a session named {req.name!r} already exists", field="name", value=req.name)
        sid = secrets.token_hex(4)
        name = req.name or f"{board.system_id}-{sid[:4]}"
        workdir = self.paths.session_dir(sid)
        workdir.mkdir(parents=True)
        now = time.time()
        with self._removed_unless_recorded(workdir):
            self.store.insert_session({
                "id": sid, "name": name, "board": board.system_id, "board_source": source,
                "board_json": board.model_dump_json(), "node": node.id, "backend": backend,
                "state": S.CREATED.value, "deterministic": int(req.deterministic or adapter.always_deterministic),
                "program": None,
                "created_at": now, "started_at": None, "pid": None, "pid_create_time": None, "handle_json": None,
                "error": None, "stderr_tail": None, "record": int(req.record), "replay": None, "replay_until": None,
                "coverage": int(req.coverage),
                **(extra or {})})
        with self._undone_on_failure(sid):
            row = self.store.get_session(sid)
            if image is not None:
                prog = self._save_program(sid, image.path, image.format, image.load_address, board, node.id)
                row = self.store.update_session(sid, program=prog["id"])
                image = self._program_image(row)
            ensure_log(workdir / "console.log")
            self.store.add_artifact(sid, "console-log", workdir / "console.log")
            if before_boot is not None:
                before_boot(workdir)
            if row.get("record"):
                self._write_recording_header(row, workdir)
            row = self._boot(row, image, "created", paused=req.paused, from_start=True)
        return self.info(row)

    def _create_system(self, req: p.SessionCreate, board: BoardConfig, source: str) -> p.SessionInfo:
        """A session of a multi-node board: backend "system" (virsim.sync.instance), one program per node."""
        from virsim.sync.system import quantum_cycles

        if req.semihosting or any(n.semihosting for n in board.nodes):
            raise NotSupported(f"board {board.system_id} has {len(board.nodes)} nodes: semihosting is for "
                               "single-node sessions", capability="semihosting")
        ids = [n.id for n in board.nodes]
        if req.firmware:
            raise InvalidInput(f"board {board.system_id} has {len(ids)} nodes ({', '.join(ids)}): give each its "
                               "firmware as --firmware NODE=IMAGE", field="firmware", nodes=ids)
        unknown = sorted(set(req.node_firmware) - set(ids))
        if unknown:
            raise InvalidInput(f"--firmware {unknown[0]}=...: board {board.system_id} has no node {unknown[0]!r} "
                               f"(nodes: {', '.join(ids)})", field="firmware", value=unknown[0], nodes=ids)
        missing = [n for n in ids if n not in req.node_firmware]
        if missing:
            raise InvalidInput(f"node {missing[0]} of board {board.system_id} has no firmware: add --firmware "
                               f"{missing[0]}=IMAGE", field="firmware", node=missing[0], nodes=ids)
        if req.backend:  # the session's board keeps the choice (its board_json)
            board = board.with_node_backends(req.backend)
        for flag, value in (("--record", req.record), ("--coverage", req.coverage),
                            ("--from-snapshot", req.from_snapshot)):
            if value:
                raise NotSupported(f"{flag} is not supported for multi-node boards yet", field=flag.strip("-"),
                                   board=board.system_id)
        adapter = get_backend(SYSTEM_BACKEND)
        for node in board.nodes:
            adapter.check_node(node)
            check_fits(inspect(Path(req.node_firmware[node.id])), node)
        quantum = quantum_cycles(board, req.sync, req.quantum)
        if req.name is not None and self.store.name_taken(req.name):
            raise InvalidInput(f"a session named {req.name!r} already exists", field="name", value=req.name)
        sid = secrets.token_hex(4)
        workdir = self.paths.session_dir(sid)
        workdir.mkdir(parents=True)
        self.store.insert_session({
            "id": sid, "name": req.name or f"{board.system_id}-{sid[:4]}", "board": board.system_id,
            "board_source": source, "board_json": board.model_dump_json(), "node": board.nodes[0].id,
            "backend": SYSTEM_BACKEND, "state": S.CREATED.value, "deterministic": 1, "program": None,
            "created_at": time.time(), "started_at": None, "pid": None, "pid_create_time": None, "handle_json": None,
            "error": None, "stderr_tail": None, "record": 0, "replay": None, "replay_until": None, "coverage": 0})
        with self._undone_on_failure(sid):
            programs = {}
            for node in board.nodes:
                image = inspect(Path(req.node_firmware[node.id]))
                programs[node.id] = self._save_program(sid, image.path, image.format, image.load_address, board,
                                                       node.id)["id"]
            row = self.store.update_session(sid, program=programs[board.nodes[0].id], system_json=json.dumps(
                {"sync": req.sync, "quantum": quantum, "programs": programs}))
            ensure_log(workdir / "console.log")
            self.store.add_artifact(sid, "console-log", workdir / "console.log")
            row = self._boot(row, self._program_image(row), "created", paused=req.paused, from_start=True)
        return self.info(row)

    @contextmanager
    def _undone_on_failure(self, sid: str) -> Iterator[None]:
        """A session being created that fails leaves nothing: no emulator, no rows, no files; nor
        one whose client stopped waiting (it would never learn the session exists)."""
        try:
            yield
            check_client_waiting("creating the session")
        except BaseException:
            self._stop_instance(sid)
            self.store.delete_session_rows(sid)
            shutil.rmtree(self.paths.session_dir(sid), ignore_errors=True)
            raise

    def _write_recording_header(self, row: dict[str, Any], workdir: Path) -> None:
        prog = self.store.get_program(row["id"], row["program"]) if row.get("program") else None
        header = {"format": "vrec1", "session": row["id"], "backend": row["backend"], "board": row["board"],
                  "board_json": row["board_json"], "node": row["node"], "data": RECORD_DATA,
                  "program": prog["path"] if prog else None, "program_sha256": prog["sha256"] if prog else None,
                  "program_format": prog["format"] if prog else None,
                  "program_load_address": prog["load_address"] if prog else None, "created_at": time.time()}
        write_atomic(workdir / RECORDING, json.dumps(header, indent=1) + "\n")
        self.store.add_artifact(row["id"], "recording", workdir / RECORDING)

    def replay(self, req: p.SessionReplay) -> p.SessionInfo:
        """A new session that replays a recording: same board, backend and program, the recorded
        inputs instead of live ones, so the console shows the same bytes. The session keeps
        --until as the user typed it (every message quotes that); InstanceSpec gets it parsed."""
        path = Path(req.recording)
        try:
            header = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise InvalidInput(f"{path}: not a readable recording ({err})", field="recording", file=str(path)) from err
        if not isinstance(header, dict) or header.get("format") != "vrec1":
            raise InvalidInput(f"{path}: not a virsim recording (recording.vrec)", field="recording", file=str(path))
        data = path.with_name(header.get("data") or RECORD_DATA)
        program = Path(header.get("program") or "")
        if not data.exists():
            raise InvalidInput(f"{path}: its execution log {data} is missing", field="recording", file=str(data))
        if not program.is_file():
            raise InvalidInput(f"{path}: the recorded program {program} is gone (was its session purged?)",
                               field="recording", file=str(program))
        self._refuse_recording_in_progress(header, path)
        if req.until:
            until = _parse_until(req.until)
            if until.endswith("ns") and not get_backend(header["backend"]).replay_stops_at_time:
                raise NotSupported(f"--until {req.until}: {header['backend']} replays stop at an instruction count, "
                                   "not at a virtual time: give a count, e.g. --until 5000000",
                                   field="until", value=req.until, backend=header["backend"])
        board = BoardConfig.model_validate_json(header["board_json"])
        sub = p.SessionCreate(board=board.system_id, firmware=str(program), backend=header["backend"],
                              firmware_format=header.get("program_format") or "auto",
                              load_address=header.get("program_load_address"), name=req.name, paused=req.paused,
                              deterministic=True)
        return self._create(sub, board, f"recording {path}",
                            extra={"replay": str(path.resolve()), "replay_until": req.until or None})

    def _refuse_recording_in_progress(self, header: dict[str, Any], path: Path) -> None:
        """A live recording session is still writing the log: its end is not there yet, and QEMU
        refuses such a file only after a long wait ("invalid input log file version")."""
        try:
            row = self.store.get_session(str(header.get("session")))
        except NotFound:  # recorded by another daemon's session, or its rows are gone
            return
        if row.get("record") and self.state_of(row) in LIVE:
            raise InvalidState(f"recording in progress: session {row['name']} ({row['id']}) is {row['state']} and "
                               f"still writing {path}; power off or delete session {row['id']} first",
                               session=row["id"], operation="replay", current=row["state"],
                               required=sorted(st.value for st in SessionState if st not in LIVE))

    def list(self, req: p.SessionList) -> p.SessionListReply:
        return p.SessionListReply(sessions=[self.info(r) for r in self.store.sessions(req.all)])

    def show(self, req: p.SessionRef) -> p.SessionInfo:
        row = self.row(req.session)
        clock = self.clock(p.SessionRef(session=row["id"])) if self.state_of(row) in LIVE else None
        info = self.info(row)
        live = self.live.get(row["id"])
        if clock is not None:
            info = info.model_copy(update={"virtual_ns": clock.virtual_ns, "instructions": clock.instructions,
                                           "instructions_per_s": self._speed(live, row, clock.instructions)})
        if live is not None:
            info = info.model_copy(update={"clock": live.instance.clock_info()})
        details = getattr(live.instance, "details", None) if live is not None else None
        if details is not None:
            info = info.model_copy(update=details())
        return info.model_copy(update={"peripherals": self._peripherals(row)})

    def _peripherals(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        """What a peripheral view lists: each node's peripherals, and the NVIC of Cortex-M nodes; with
        the registers its SVD file gives a peripheral at the same base address, if the node names one."""
        out: list[dict[str, Any]] = []
        for node in self._board(row).nodes:
            described: dict[int, dict[str, Any]] = {}
            problem = None
            if node.svd:
                try:
                    described = {p["address"]: p for p in self._svd(node.svd)}
                except InvalidInput as err:
                    problem = str(err)
            for ph in node.peripherals:
                entry = {"node": node.id, "id": ph.id, "type": ph.type, "address": ph.address, "size": ph.size,
                         "irq": ph.irq, "console": ph.console}
                if ph.address in described:
                    entry.update(svd=described[ph.address]["name"], registers=described[ph.address]["registers"])
                elif problem:
                    entry["svd_error"] = problem
                out.append(entry)
            if node.processor.profile == "m":
                out.append({"node": node.id, "id": "nvic", "type": "armv7m-nvic", "address": NVIC_BASE,
                            "size": 0x400, "irq": None, "console": False})
        return out

    @staticmethod
    def _speed(live: Live | None, row: dict[str, Any], instructions: int | None) -> float | None:
        """Instructions per host second since the last `show` (or since the start, the first time)."""
        if live is None or instructions is None:
            return None
        now = time.time()
        since = live.speed_sample or (row.get("started_at") or now, 0)
        live.speed_sample = (now, instructions)
        seconds = now - since[0]
        return (instructions - since[1]) / seconds if seconds > 0.05 and instructions >= since[1] else None

    def _svd(self, path: str) -> list[dict[str, Any]]:
        """The peripherals of an SVD file, parsed once per version of the file."""
        try:
            key = (path, Path(path).stat().st_mtime)
        except OSError as err:
            raise InvalidInput(f"SVD file {path}: {err.strerror}", file=path) from None
        if key not in self._svd_cache:
            if len(self._svd_cache) >= 4:  # a few boards' files at a time is all the views need
                self._svd_cache.clear()
            self._svd_cache[key] = svd.parse(path)
        return self._svd_cache[key]

    def pause(self, req: p.SessionRef) -> p.SessionInfo:
        row = self.row(req.session)
        require("pause", row["id"], self.state_of(row))
        self.need(row, Capability.PAUSE)
        if self.debug and self.debug.controller(row["id"]):
            self.debug.interrupt(row["id"])  # the debugger owns run control while attached
            undo = lambda: self.debug.resume(row["id"])  # noqa: E731
        else:
            self._instance(row).pause()
            undo = self._instance(row).resume
        return self.info(self._recorded(lambda: self.set_state(self.store.get_session(row["id"]), S.PAUSED,
                                                               "paused by user"), undo))

    def resume(self, req: p.SessionRef) -> p.SessionInfo:
        row = self.row(req.session)
        require("resume", row["id"], self.state_of(row))
        self.need(row, Capability.PAUSE)
        if not row.get("program"):
            raise InvalidState(f"session {row['id']} has no program to run: 'virsim program upload' one, "
                               "then 'virsim program start'", session=row["id"], current=row["state"],
                               operation="resume")
        if self.debug and self.debug.controller(row["id"]):
            self.debug.resume(row["id"])
            undo = lambda: self.debug.interrupt(row["id"])  # noqa: E731
        else:
            self._instance(row).resume()
            undo = self._instance(row).pause
        return self.info(self._recorded(lambda: self.set_state(row, S.RUNNING, "resumed by user"), undo))

    def reset(self, req: p.SessionRef) -> p.SessionInfo:
        row = self.row(req.session)
        require("reset", row["id"], self.state_of(row))
        self.need(row, Capability.RESET)
        self._instance(row).reset()
        dbg = self.debug.controller(row["id"]) if self.debug else None
        if dbg is not None and not dbg.running:
            dbg.cli("maintenance flush register-cache")  # the CPU state gdb cached is gone
        if self.debug is not None:
            self.debug.forget_stop(row["id"])
        return self.info(row)

    def power_off(self, req: p.SessionRef) -> p.SessionInfo:
        row = self.row(req.session)
        require("power-off", row["id"], self.state_of(row))
        self.need(row, Capability.POWER)
        self._stop_instance(row["id"])
        return self.info(self.set_state(row, S.STOPPED, "powered off", pid=None))

    def power_on(self, req: p.SessionRef) -> p.SessionInfo:
        row = self.row(req.session)
        require("power-on", row["id"], self.state_of(row))
        self.need(row, Capability.POWER)
        return self.info(self._boot(row, self._program_image(row), "powered on"))

    def _boot(self, row: dict[str, Any], image: FirmwareImage | None, reason: str, paused: bool = False,
              from_start: bool = False) -> dict[str, Any]:
        """Start an emulator for the session with `image` (or none: it then waits halted)."""
        paused = paused or image is None
        # With breakpoints to re-apply, start halted: the debugger attaches before the first instruction.
        hold = paused or bool(self.store.breakpoints(row["id"]))
        instance = self.adapter(row).create_instance(self._spec(row, image, hold))
        instance.power_on()
        self._attach_live(row, instance, from_start=from_start)
        if self.faults is not None:
            self.faults.instance_started(row["id"], fresh=True)
        row = self._started(row, instance, S.CREATED if paused else S.RUNNING, reason)
        attached = self.debug.instance_started(row) if self.debug else False
        if hold and not paused and not attached:
            instance.resume()
        return row

    def _stop_instance(self, session_id: str) -> None:
        if self.analysis is not None:
            self.analysis.instance_stopping(session_id)
        if self.faults is not None:
            self.faults.instance_stopping(session_id)
        live = self.live.pop(session_id, None)
        try:
            if self.debug is not None:
                self.debug.instance_stopping(session_id)
        finally:
            if live is not None:
                try:
                    live.instance.destroy()
                finally:
                    live.tail.pump()

    def delete(self, req: p.SessionDelete) -> p.DeleteReply:
        row = self.row(req.session)
        if row["state"] == S.DELETED.value:
            if not req.purge:
                raise InvalidState(f"session {row['id']} is already deleted (use --purge to remove its artifacts)",
                                   session=row["id"], current=row["state"], operation="delete")
        else:
            require("delete", row["id"], self.state_of(row))
        self._stop_instance(row["id"])
        console_log = self.paths.session_dir(row["id"]) / "console.log"
        if req.purge:
            shutil.rmtree(self.paths.session_dir(row["id"]), ignore_errors=True)
            self.store.delete_session_rows(row["id"])
            self.publish(p.Event(type="state", session=row["id"], time=time.time(), state=S.DELETED.value,
                                 previous=row["state"], reason="purged"), b"")
            return p.DeleteReply(session=row["id"], purged=True, console_log=None)
        if self.snapshots is not None:
            self.snapshots.remove_all(row["id"])  # snapshots go with the session; exports stay
        self.store.delete_snapshot_rows(row["id"])
        self.set_state(row, S.DELETED, "deleted", pid=None)
        return p.DeleteReply(session=row["id"], purged=False, console_log=str(console_log))

    def clock(self, req: p.SessionRef) -> p.Clock:
        row = self.row(req.session)
        live = self.live.get(row["id"])
        ns = count = None
        # A dead emulator cannot answer (the built-in engine's control call would wait its timeout).
        if live is not None and live.instance.exit_status() is None:
            try:
                ns = live.instance.virtual_time_ns()
                count = live.instance.instructions()
            except VirsimError:  # the emulator is going away: no clock to read
                ns = count = None
        return p.Clock(session=row["id"], virtual_ns=ns, instructions=count, state=row["state"])

    def publish_clocks(self) -> None:
        """A `clock` event for each running session: live views follow virtual time and speed from
        the event stream instead of asking every session over and over."""
        for sid, live in list(self.live.items()):
            try:
                self._publish_clock(sid, live)
            except Exception:  # one emulator going away must not take the others' clocks (or the daemon) down
                log.exception("clock event of session %s", sid)

    def _publish_clock(self, sid: str, live: Live) -> None:
        row = self.store.get_session(sid)
        if self.state_of(row) == S.RUNNING:  # a paused clock does not move; the state event said so
            clock = self.clock(p.SessionRef(session=sid))
            started = row.get("started_at")
            self.publish(p.Event(type="clock", session=sid, time=time.time(), state=row["state"],
                                 virtual_ns=clock.virtual_ns, instructions=clock.instructions,
                                 instructions_per_s=self._speed(live, row, clock.instructions),
                                 uptime_s=(time.time() - started) if started else None), b"")

    def stop_at(self, req: p.SessionStopAt) -> p.Clock:
        """Stop the CPU at a virtual time, exactly (virsim run's deadlines); the session then shows
        `paused`, reason 'reached virtual time …'."""
        row = self.row(req.session)
        self.need(row, Capability.VIRTUAL_TIME)
        live = self.live.get(row["id"])
        if live is None:
            raise InvalidState(f"session {row['id']} has no running emulator (it is {row['state']})",
                               session=row["id"], current=row["state"])
        # A CPU that stopped at the previous deadline (before the tick noticed) runs on to the new one.
        held = (live.stop_at is not None and self.state_of(row) == S.RUNNING
                and not live.instance.run_status().running)
        live.stop_at = live.instance.stop_at(req.virtual_ns or None, req.after_ns or None)
        if held:
            live.instance.resume()
        return self.clock(p.SessionRef(session=row["id"])).model_copy(update={"stop_at_ns": live.stop_at})

    def _stop_time_reached(self, sid: str, live: Live) -> None:
        """A CPU set to stop at a virtual time stopped there by itself: show the session as paused."""
        if live.stop_at is None:
            return
        row = self.store.get_session(sid)
        if self.state_of(row) != S.RUNNING or live.instance.run_status().running:
            return
        at = live.stop_at
        live.stop_at = None
        self.set_state(row, S.PAUSED, f"reached virtual time {at / 1e9:g}s")

    def console_read(self, req: p.ConsoleRead) -> p.ConsoleChunk:
        row = self.row(req.session)
        live = self.live.get(row["id"])
        if live is not None:
            live.tail.pump()  # publish before answering, so a follower's read and events meet
        path = self.paths.session_dir(row["id"]) / "console.log"
        start, data, size = read_log(path, req.offset, req.limit, req.tail)
        return p.ConsoleChunk(session=row["id"], offset=start, end=start + len(data), size=size,
                              data=data.decode("latin-1"))

    def console_send(self, req: p.ConsoleSend) -> p.SendReply:
        row = self.row(req.session)
        require("console-send", row["id"], self.state_of(row))
        self.need(row, Capability.CONSOLE)
        try:
            data = req.data.encode("latin-1")
        except UnicodeEncodeError as err:
            raise InvalidInput("console data must be bytes 0-255 (latin-1)", field="data") from err
        return p.SendReply(session=row["id"], sent=self._instance(row).console_write(data))

    def program_upload(self, req: p.ProgramUpload) -> p.ProgramInfo:
        row = self.row(req.session)
        require("program-upload", row["id"], self.state_of(row))
        board = self._board(row)
        prog = self._save_program(row["id"], Path(req.path), req.format, req.load_address, board, row["node"])
        if FORMAT_CAPABILITY[prog["format"]] not in self.adapter(row).get_capabilities():
            raise NotSupported(f"backend {row['backend']} cannot load {prog['format']} images",
                               backend=row["backend"], capability=FORMAT_CAPABILITY[prog["format"]].value)
        return self._program_info(prog)

    def program_start(self, req: p.ProgramStart) -> p.SessionInfo:
        row = self.row(req.session)
        require("program-start", row["id"], self.state_of(row))
        prog = self.store.get_program(row["id"], req.program)
        image = inspect(Path(prog["path"]), prog["format"], prog["load_address"])
        row = self.store.update_session(row["id"], program=prog["id"])
        # The spec's StartProgram: a power cycle with the new image, from its reset state.
        self._stop_instance(row["id"])
        return self.info(self._boot(row, image, f"started program {prog['id']}"))

    # ------------------------------------------------------------------------------------- supervision

    def watched(self) -> dict[int, Callable[[], None]]:
        """fd -> what to do when it is readable, for the daemon's poll loop."""
        return {fd: (lambda fd=fd, sid=sid: self.on_readable(fd, sid))
                for sid, live in self.live.items() for fd in live.instance.poll_fds()}

    def on_readable(self, fd: int, session_id: str) -> None:
        live = self.live.get(session_id)
        if live is None:
            return
        live.instance.on_readable(fd)
        live.tail.pump()
        # The console socket can announce bytes a moment before QEMU's log write lands.
        live.hot_until = time.monotonic() + 0.05

    def hot(self) -> bool:
        now = time.monotonic()
        return any(live.hot_until > now or live.instance.busy() for live in self.live.values())

    def tick(self) -> None:
        """Pump consoles and notice emulators that died on their own."""
        for sid, live in list(self.live.items()):
            live.tail.pump()
            status = live.instance.exit_status()
            if status is None:
                try:
                    live.instance.tick()
                    self._replay_reached(sid, live)
                    self._stop_time_reached(sid, live)
                except VirsimError:
                    log.exception("instance tick of session %s", sid)
                continue
            try:
                self._stop_instance(sid)
            except VirsimError:
                log.exception("cleaning up after the crash of session %s", sid)
            row = self.store.get_session(sid)
            if self.state_of(row) in LIVE and row.get("replay") and status.returncode == 0:
                # QEMU ends a replay where the recording ended (the recorded shutdown).
                self.set_state(row, S.STOPPED, "replay finished: the recording ends here", pid=None)
            elif self.state_of(row) in LIVE and self._node(row).semihosting and status.returncode is not None \
                    and status.returncode >= 0:
                # SYS_EXIT ends the emulator with the firmware's status: the firmware is done.
                self.set_state(row, S.STOPPED, f"the firmware exited (semihosting SYS_EXIT) with status "
                               f"{status.returncode}", pid=None)
            elif self.state_of(row) in LIVE:
                stderr = status.stderr_tail or tail(self.paths.session_dir(sid) / "emulator.log")
                lockup = self.faults.emulator_died(row, stderr) if self.faults is not None else None
                reason = f"emulator {status.reason}" + (f": {lockup['summary']}" if lockup else "")
                self.set_state(self.store.get_session(sid), S.FAILED, reason, pid=None, error=reason,
                               stderr_tail=stderr[-2000:] or None)

    def _replay_reached(self, sid: str, live: Live) -> None:
        """A replay that runs to --until halts there by itself: show the session as paused."""
        row = self.store.get_session(sid)
        if row.get("replay_until") and self.state_of(row) == S.RUNNING and not live.instance.run_status().running:
            self.set_state(row, S.PAUSED, f"replay reached --until {row['replay_until']}")

    def reconcile(self) -> None:
        """After a daemon (re)start: re-attach to emulators still running, mark the others lost,
        and remove what a killed daemon left half-done (reported in the daemon log)."""
        self._remove_debris()
        for row in self.store.sessions():
            if self.state_of(row) not in LIVE:
                continue
            handle = json.loads(row["handle_json"] or "{}")
            instance = None
            try:
                adapter = self.adapter(row)
                if Capability.REATTACH in adapter.get_capabilities():
                    instance = adapter.attach(self._spec(row, self._program_image(row), False), handle)
            except VirsimError:
                log.exception("re-attaching session %s", row["id"])
            if instance is None:
                error = ("the daemon stopped while it was starting this session's emulator" if not handle
                         else "the emulator was not running when the daemon restarted")
                self.set_state(row, S.LOST, "emulator gone after a daemon restart", pid=None, error=error)
                continue
            self._attach_live(row, instance, from_start=False)
            if self.faults is not None:
                self.faults.instance_started(row["id"], fresh=False)
            try:
                running = instance.run_status().running
            except EmulatorError:
                running = row["state"] == S.RUNNING.value
            state = S.RUNNING if running else (S.CREATED if row["state"] == S.CREATED.value else S.PAUSED)
            self.set_state(row, state, "re-attached after a daemon restart")
            log.info("re-attached session %s (pid %s)", row["id"], instance.pid)
        # Strays first: a debugger left by the dead daemon still holds the gdb stub.
        self._stop_strays()
        if self.debug is not None:
            for sid in list(self.live):
                self.debug.instance_started(self.store.get_session(sid))

    def _remove_debris(self) -> None:
        """Temp files of writes a crash interrupted, session dirs with no session (a create that
        was killed before its row was written) and snapshot files with no snapshot row."""
        removed = [str(p) for p in remove_debris(self.paths.data)]
        known = {row["id"]: row for row in self.store.sessions(include_deleted=True)}
        for folder in sorted(self.paths.sessions_dir.iterdir()) if self.paths.sessions_dir.exists() else []:
            if folder.is_dir() and folder.name not in known:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(f"{folder}/")
        for sid in known:
            snapshots = self.paths.session_dir(sid) / "snapshots"
            if not snapshots.is_dir():
                continue
            recorded = {Path(s["path"]).name for s in self.store.snapshots(sid)}
            for vsnap in snapshots.glob("*.vsnap"):
                if vsnap.name not in recorded:
                    vsnap.unlink(missing_ok=True)
                    removed.append(str(vsnap))
        if removed:
            log.warning("removed what an interrupted daemon left half-done: %s", ", ".join(removed))

    def _stop_strays(self) -> None:
        """Stop the processes this user's daemons launched and recorded that no live session
        accounts for (an emulator started by a daemon killed during `session create`); no other
        process is touched, whatever its command line says."""
        known = {pid for live in self.live.values() for pid in live.instance.pids()} | {os.getpid()}
        for proc in process.recorded_strays(known):
            log.warning("stopping stray process %s that a previous daemon started", proc.pid)
            proc.stop()

    def shutdown(self) -> None:
        """Daemon stop: power every emulator off; sessions become `stopped` (power-on brings them back)."""
        for sid in list(self.live):
            try:
                self._stop_instance(sid)
            except Exception:  # keep stopping the others: nothing may be left running
                log.exception("stopping session %s", sid)
            row = self.store.get_session(sid)
            if self.state_of(row) in LIVE:
                self.set_state(row, S.STOPPED, "daemon stopped", pid=None)

    def counts(self) -> tuple[int, int]:
        """(sessions with a live emulator, sessions not deleted)."""
        return len(self.live), self.store.count_sessions()


def _parse_until(text: str) -> str:
    """`--until`: an instruction count ("5000000", "5e6") or a virtual time ("250ms", "2s", "10us")
    -> "<n>" instructions or "<n>ns" (what InstanceSpec.replay_until takes; the form itself too)."""
    t = text.strip().lower()
    units = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
    try:
        for unit in ("ns", "us", "ms", "s"):
            if t.endswith(unit):
                value = float(t[: -len(unit)]) * units[unit]
                if value <= 0:
                    raise ValueError(text)
                return f"{int(value)}ns"
        count = int(float(t))
        if count <= 0:
            raise ValueError(text)
        return str(count)
    except ValueError as err:
        raise InvalidInput(f"--until {text!r}: give an instruction count (5000000) or a virtual time (250ms)",
                           field="until", value=text) from err
