"""`virsim coverage …`: collect, report and export a session's code coverage."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from virsim import protocol as p
from virsim.cli.common import JsonOpt, SessionArg, client
from virsim.cli.render import emit, out, table, wait_job

app = typer.Typer(help="Code coverage: which lines and functions ran.\n\n"
                       "Shown as a table, or exported as lcov, json or drcov.", no_args_is_help=True)


def _pct(hit: int, total: int) -> str:
    return f"{100 * hit / total:.1f}%" if total else "-"


def _short(path: str) -> str:
    """A path under the current directory is shown relative to it."""
    rel = os.path.relpath(path) if os.path.isabs(path) else path
    return path if rel.startswith("..") else rel


def show_report(r: p.CoverageReport) -> None:
    t = table("FILE", "FUNCTION", "CALLS", "LINES", "%")
    rows = sorted(r.rows, key=lambda row: (row.lines_hit / row.lines_total if row.lines_total else 0, row.file,
                                           row.line))
    for row in rows:
        name = escape(row.function) + (f" [dim](inlined ×{row.inlined})[/]" if row.inlined else "")
        t.add_row(_short(row.file), name, f"{row.calls:,}", f"{row.lines_hit}/{row.lines_total}",
                  _pct(row.lines_hit, row.lines_total))
    t.add_row("[bold]total[/]", f"{r.functions_hit}/{r.functions_found} functions", "",
              f"{r.lines_hit}/{r.lines_found}", f"[bold]{_pct(r.lines_hit, r.lines_found)}[/]")
    out.print(t)
    if not r.active:
        out.print("[dim]coverage is not being collected now (virsim coverage start)[/]")


@app.command("start")
def start(session: SessionArg, as_json: JsonOpt = False) -> None:
    """Start counting executed code.

    Built-in engine: at once; QEMU: the session must have been created with --coverage, which
    loads the counting plugin at launch.

    Example: virsim coverage start 3fa9c2d1
    """
    r = client().request("coverage.start", session)
    emit(r, as_json, lambda: out.print(f"coverage of session {r.session}: on ({r.lines_hit}/{r.lines_found} lines "
                                       "so far)"))


@app.command("stop")
def stop(session: SessionArg, as_json: JsonOpt = False) -> None:
    """Stop counting coverage and keep the counts so far.

    Report and export still work, `coverage start` adds to the counts again. The built-in engine
    then runs at full speed; QEMU cannot stop (NOT_SUPPORTED).

    Example: virsim coverage stop 3fa9c2d1
    """
    r = client().request("coverage.stop", session)
    emit(r, as_json, lambda: out.print(f"coverage of session {r.session}: stopped ({r.lines_hit}/{r.lines_found} "
                                       "lines kept)"))


@app.command("report")
def report(session: SessionArg, as_json: JsonOpt = False) -> None:
    """Show the coverage per function, least covered first.

    Per function: calls, lines hit/total and %, with the total.

    Example: virsim coverage report 3fa9c2d1
    """
    r = client().request("coverage.report", session)
    emit(r, as_json, lambda: show_report(r))


@app.command("reset")
def reset(session: SessionArg, as_json: JsonOpt = False) -> None:
    """Zero the counts (collection goes on, or stays stopped).

    Example: virsim coverage reset 3fa9c2d1
    """
    r = client().request("coverage.reset", session)
    emit(r, as_json, lambda: out.print(f"coverage of session {r.session}: reset"))


@app.command("export")
def export(
    session: SessionArg,
    out_path: Annotated[Path, typer.Option("--out", "-o", help="File to write.")],
    fmt: Annotated[str, typer.Option("--format", help="lcov (genhtml reads it), json, or drcov (Lighthouse, "
                                                      "bncov).")] = "lcov",
    as_json: JsonOpt = False,
) -> None:
    """Write the coverage to a file: lcov, json or drcov.

    As a daemon job (a progress bar on a terminal).

    Example: virsim coverage export 3fa9c2d1 --format lcov --out cov.info && genhtml cov.info -o html
    """
    c = client()
    job = c.request("coverage.export", session, format=fmt, out=out_path)
    done = wait_job(c, job, as_json, f"coverage → {out_path.name}")
    res = done.result or {}
    emit(done, as_json, lambda: out.print(
        f"wrote {res.get('path')} ({res.get('format')}, {res.get('size'):,} bytes): "
        f"{res.get('lines_hit')}/{res.get('lines_found')} lines, {res.get('functions_hit')}/"
        f"{res.get('functions_found')} functions"))
