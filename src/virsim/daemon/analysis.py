"""Coverage and trace requests: switch collection in the session's emulator, report, export.

The emulator collects raw data (Instance.coverage / Instance.trace); this service resolves the
session's ELF (virsim.analysis.symbols) and turns the data into a report or a file. Exports run as
daemon jobs (daemon/jobs.py) on a copy of the data taken on the event loop, so a long
symbolisation never blocks the daemon. When an emulator stops, its coverage blocks and trace are
saved in the session dir (coverage-blocks.json, trace.bin) so reports and exports still work.

A session's `coverage` column says where its coverage stands: COVERAGE_OFF (never collected),
COVERAGE_ON (counting; a power-on counts from the first instruction) or COVERAGE_STOPPED (`coverage
stop`: the emulator keeps the counts so far but adds nothing, and a power-on does not count)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virsim import limits
from virsim import protocol as p
from virsim.atomic import TMP_MARK, write_atomic
from virsim.analysis import coverage as cov
from virsim.analysis import trace as tr
from virsim.analysis.symbols import Program, source_dir
from virsim.backends.base import Capability
from virsim.daemon.states import LIVE
from virsim.errors import InvalidInput, InvalidState, NotFound, VirsimError

if TYPE_CHECKING:
    from virsim.daemon.jobs import JobService
    from virsim.daemon.sessions import SessionService
    from virsim.daemon.store import Store

SAVED_BLOCKS = "coverage-blocks.json"
SAVED_TRACE = "trace.bin"
COVERAGE_OFF, COVERAGE_ON, COVERAGE_STOPPED = 0, 1, 2  # the sessions table's `coverage` column


class AnalysisService:
    def __init__(self, sessions: SessionService, store: Store, jobs: JobService) -> None:
        self.sessions = sessions
        self.store = store
        self.jobs = jobs
        self._programs: dict[tuple[str, float], Program] = {}

    # ------------------------------------------------------------------------------ helpers
    def _live(self, ref: str, capability: Capability) -> dict[str, Any]:
        row = self.sessions.row(ref)
        self.sessions.need(row, capability)
        if self.sessions.state_of(row) not in LIVE:
            raise InvalidState(f"session {row['id']} is {row['state']}: {capability.value} needs a running emulator "
                               "(virsim session power-on)", session=row["id"], current=row["state"])
        return row

    def program(self, row: dict[str, Any]) -> tuple[Program, Path | None]:
        """The session's program (symbols, lines; cached) and the directory it was uploaded from."""
        if not row.get("program"):
            raise InvalidState(f"session {row['id']} has no program", session=row["id"], current=row["state"])
        prog = self.store.get_program(row["id"], row["program"])
        path = Path(prog["path"])
        if prog["format"] != "elf":
            raise InvalidInput(f"session {row['id']} runs a {prog['format']} image: coverage and traces need an ELF "
                               "with symbols and line information", field="program", value=prog["format"])
        key = (str(path), path.stat().st_mtime)
        if key not in self._programs:
            self._programs[key] = Program.load(path)
        source = source_dir(prog.get("source"))
        return self._programs[key], source

    def _blocks(self, row: dict[str, Any]) -> list[tuple[int, int, int]]:
        live = self.sessions.live.get(row["id"])
        if live is not None and row.get("coverage"):
            return live.instance.coverage("blocks") or []
        saved = self.sessions.paths.session_dir(row["id"]) / SAVED_BLOCKS
        if saved.exists():
            return [tuple(b) for b in json.loads(saved.read_text())]  # type: ignore[misc]
        raise NotFound(f"session {row['id']} has no coverage: start it with `virsim coverage start {row['id']}` "
                       "(or create the session with --coverage)", kind="coverage", id=row["id"])

    def instance_stopping(self, session_id: str) -> None:
        """Keep what the emulator collected: it goes away with the process."""
        live = self.sessions.live.get(session_id)
        if live is None or live.instance.exit_status() is not None:
            return  # nothing to ask a dead emulator (and waiting for its answer would stall the daemon)
        row = self.store.get_session(session_id)
        workdir = self.sessions.paths.session_dir(session_id)
        caps = self.sessions.adapter(row).get_capabilities()
        try:
            if row.get("coverage") and Capability.COVERAGE in caps:
                write_atomic(workdir / SAVED_BLOCKS, json.dumps(live.instance.coverage("blocks") or []))
            if Capability.TRACE in caps and live.instance.trace("info").get("events"):
                live.instance.trace("dump", path=str(workdir / SAVED_TRACE))
        except VirsimError:
            pass  # the emulator is already gone: nothing left to save

    # ------------------------------------------------------------------------------- source
    def source(self, req: p.SourceRef) -> p.SourceFile:
        """A source file of the session's program, with the lines that have code. Only files the
        program's line table names are served: a client cannot read any other file through this."""
        row = self.sessions.row(req.session)
        prog, where = self.program(row)
        files = sorted({r.file for r in prog.rows})
        wanted = req.file
        if wanted is None:
            stop = self.sessions.debug.info(row["id"])[1] if self.sessions.debug else None
            entry = prog.function_named("main") or (prog.functions[0] if prog.functions else None)
            row_at = prog.line_at(entry.start) if entry is not None else None
            wanted = (stop.file if stop is not None and stop.file else None) or (row_at.file if row_at else None)
            if wanted is None:
                raise NotFound(f"session {row['id']}'s program has no line information (build it with -g)",
                               kind="source", id=row["id"])
        name = next((f for f in files if f == wanted), None) or \
            next((f for f in files if Path(f).name == Path(wanted).name), None)
        if name is None:
            raise NotFound(f"{wanted!r} is not a source file of session {row['id']}'s program; its files: "
                           f"{', '.join(files[:20])}", kind="source", id=wanted)
        path = Path(name) if Path(name).is_absolute() or where is None else where / name
        code = sorted({r.line for r in prog.rows if r.file == name})
        try:
            text = limits.read_file(path, "source file").decode("utf-8", "replace")
        except InvalidInput:  # moved, deleted or too big: the lines with code still help
            return p.SourceFile(session=row["id"], file=name, path=None, code_lines=code, files=files)
        return p.SourceFile(session=row["id"], file=name, path=str(path), lines=text.splitlines(), code_lines=code,
                            files=files)

    # ----------------------------------------------------------------------------- coverage
    def coverage_start(self, req: p.SessionRef) -> p.CoverageReport:
        row = self._live(req.session, Capability.COVERAGE)
        self.program(row)  # refuse before switching anything on
        self.sessions.live[row["id"]].instance.coverage("start")
        row = self.store.update_session(row["id"], coverage=COVERAGE_ON)  # a power cycle keeps collecting
        return self.coverage_report(p.SessionRef(session=row["id"]))

    def coverage_stop(self, req: p.SessionRef) -> p.CoverageReport:
        """Stop counting and keep the counts (the backend refuses if it cannot stop)."""
        row = self._live(req.session, Capability.COVERAGE)
        self.sessions.live[row["id"]].instance.coverage("stop")
        if row.get("coverage"):
            row = self.store.update_session(row["id"], coverage=COVERAGE_STOPPED)
        return self.coverage_report(p.SessionRef(session=row["id"]))  # NOT_FOUND if nothing was collected

    def coverage_reset(self, req: p.SessionRef) -> p.CoverageReport:
        row = self._live(req.session, Capability.COVERAGE)
        self.sessions.live[row["id"]].instance.coverage("reset")
        return self.coverage_report(p.SessionRef(session=row["id"]))

    def coverage_report(self, req: p.SessionRef) -> p.CoverageReport:
        row = self.sessions.row(req.session)
        self.sessions.need(row, Capability.COVERAGE)
        program, source = self.program(row)
        c = cov.Coverage.compute(program, self._blocks(row), source)
        return p.CoverageReport(session=row["id"], active=row.get("coverage") == COVERAGE_ON, program=str(program.path),
                                rows=[p.CoverageRow(**r) for r in c.rows()], **c.totals())

    def coverage_export(self, req: p.CoverageExport) -> p.JobInfo:
        row = self.sessions.row(req.session)
        self.sessions.need(row, Capability.COVERAGE)
        out = _out_path(req.out)
        program, source = self.program(row)
        blocks = self._blocks(row)  # copied now, on the event loop; the job works on the copy
        name = row.get("name") or row["id"]

        def work(progress: Any) -> dict[str, Any]:
            c = cov.Coverage.compute(program, blocks, source, progress)
            if req.format == "lcov":
                write_atomic(out, c.lcov(name))
            elif req.format == "json":
                write_atomic(out, c.json())
            else:
                write_atomic(out, c.drcov())
            return {"path": str(out), "format": req.format, "size": out.stat().st_size, **c.totals()}

        return self.jobs.submit("coverage.export", row["id"], work)

    # -------------------------------------------------------------------------------- trace
    def trace_start(self, req: p.TraceStart) -> p.TraceInfo:
        row = self._live(req.session, Capability.TRACE)
        program, _ = self.program(row)
        ranges = [_range(program, text) for text in req.ranges]
        functions = [f.start for f in program.functions] if req.level == "function" else None
        info = self.sessions.live[row["id"]].instance.trace("start", level=req.level, ranges=ranges, limit=req.limit,
                                                            functions=functions)
        return self._trace_info(row, info, ranges)

    def trace_stop(self, req: p.SessionRef) -> p.TraceInfo:
        row = self._live(req.session, Capability.TRACE)
        return self._trace_info(row, self.sessions.live[row["id"]].instance.trace("stop"))

    def trace_show(self, req: p.SessionRef) -> p.TraceInfo:
        row = self.sessions.row(req.session)
        self.sessions.need(row, Capability.TRACE)
        live = self.sessions.live.get(row["id"])
        if live is not None:
            return self._trace_info(row, live.instance.trace("info"))
        saved = self.sessions.paths.session_dir(row["id"]) / SAVED_TRACE
        if not saved.exists():
            raise NotFound(f"session {row['id']} has no trace (virsim trace start {row['id']})", kind="trace",
                           id=row["id"])
        header = tr.RawTrace.read(saved).header
        return self._trace_info(row, dict(header, active=False))

    def _trace_info(self, row: dict[str, Any], info: dict[str, Any],
                    ranges: list[tuple[int, int]] | None = None) -> p.TraceInfo:
        return p.TraceInfo(session=row["id"], level=info.get("level", "block"), active=bool(info.get("active")),
                           events=int(info.get("events", 0)), truncated=bool(info.get("truncated")),
                           limit=int(info.get("limit", 0)), ranges=[list(r) for r in ranges or info.get("ranges") or []],
                           note=tr.note(info))

    def trace_export(self, req: p.TraceExport) -> p.JobInfo:
        row = self.sessions.row(req.session)
        self.sessions.need(row, Capability.TRACE)
        out = _out_path(req.out)
        program, _ = self.program(row)
        workdir = self.sessions.paths.session_dir(row["id"])
        raw_path = workdir / f".trace-export-{time.time_ns()}.bin{TMP_MARK}"  # debris if the daemon dies
        live = self.sessions.live.get(row["id"])
        if live is not None:
            info = live.instance.trace("dump", path=str(raw_path))  # a snapshot of the events so far
        elif (workdir / SAVED_TRACE).exists():
            raw_path.write_bytes((workdir / SAVED_TRACE).read_bytes())
            info = {"events": 1}
        else:
            info = {"events": 0}
        if not info.get("events"):
            raw_path.unlink(missing_ok=True)
            raise NotFound(f"session {row['id']} has no trace events (virsim trace start {row['id']})",
                           kind="trace", id=row["id"])

        def work(progress: Any) -> dict[str, Any]:
            try:
                raw = tr.RawTrace.read(raw_path)
                written = tr.export(program, raw, req.format, out, progress)
            finally:
                raw_path.unlink(missing_ok=True)
            return {"path": str(out), "format": req.format, "size": out.stat().st_size, "events": len(raw),
                    "written": written, "truncated": bool(raw.header.get("truncated")), "note": tr.note(raw.header)}

        return self.jobs.submit("trace.export", row["id"], work)


def _out_path(text: str) -> Path:
    out = Path(text)
    if not out.is_absolute():
        raise InvalidInput(f"--out must be an absolute path, got {text!r}", field="out", value=text)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InvalidInput(f"cannot create {out.parent}: {err.strerror}", field="out", value=text) from err
    return out


def _range(program: Program, text: str) -> tuple[int, int]:
    """'FUNCTION' -> its code; 'A..B' -> [A, B), each a symbol or an address."""
    if ".." in text:
        lo_text, hi_text = text.split("..", 1)
        lo, hi = program.resolve(lo_text.strip()), program.resolve(hi_text.strip())
        if hi <= lo:
            raise InvalidInput(f"--range {text!r}: {hi_text} ({hi:#x}) is not after {lo_text} ({lo:#x})",
                               field="range", value=text)
        return lo, hi
    fn = program.function_named(text.strip())
    if fn is None:
        raise InvalidInput(f"--range {text!r}: no function {text!r} in {program.path.name} (give A..B for an "
                           "address range)", field="range", value=text)
    return fn.start, fn.end
