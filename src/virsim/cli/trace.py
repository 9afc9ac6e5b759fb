"""`virsim trace …`: record a session's execution and export it symbolised."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from virsim import protocol as p
from virsim.cli.common import JsonOpt, SessionArg, client
from virsim.cli.render import emit, out, wait_job

app = typer.Typer(help="Execution traces: record blocks, instructions or calls.\n\n"
                       "Exported as text, json or a Chrome/Perfetto timeline.", no_args_is_help=True)


def _limit(text: str) -> int:
    try:
        value = int(float(text))
    except ValueError as err:
        raise typer.BadParameter(f"--limit must be a number of events like 1e6, got {text!r}") from err
    if value < 1:
        raise typer.BadParameter(f"--limit must be at least 1, got {text!r}")
    return value


def show(t: p.TraceInfo) -> None:
    state = "recording" if t.active else "stopped"
    where = ", ".join(f"{lo:#x}..{hi:#x}" for lo, hi in t.ranges) or "everywhere"
    out.print(f"trace of session {t.session}: {state}, level {t.level}, {t.events:,} events (limit {t.limit:,}), "
              f"{where}" + (f"; {t.note}" if t.note else ""))


@app.command("start")
def start(
    session: SessionArg,
    level: Annotated[str, typer.Option(help="block, instruction or function.")] = "block",
    ranges: Annotated[Optional[list[str]], typer.Option("--range", help="Only code in FUNCTION, or in A..B (symbols "
                                                        "or addresses, B excluded). Repeatable.")] = None,
    limit: Annotated[str, typer.Option(help="Stop recording after this many events (the trace then says "
                                             "'truncated at N events').")] = "1e6",
    as_json: JsonOpt = False,
) -> None:
    """Start recording a trace (built-in engine).

    A new trace replaces the last one.

    Example: virsim trace start 3fa9c2d1 --level function --range main..uart_getc --limit 1e6
    """
    t = client().request("trace.start", session, level=level, ranges=ranges or [], limit=_limit(limit))
    emit(t, as_json, lambda: show(t))


@app.command("stop")
def stop(session: SessionArg, as_json: JsonOpt = False) -> None:
    """Stop recording; the events stay for `trace export`.

    Example: virsim trace stop 3fa9c2d1
    """
    t = client().request("trace.stop", session)
    emit(t, as_json, lambda: show(t))


@app.command("show")
def show_cmd(session: SessionArg, as_json: JsonOpt = False) -> None:
    """Whether a trace is recording, and how many events it holds.

    Example: virsim trace show 3fa9c2d1
    """
    t = client().request("trace.show", session)
    emit(t, as_json, lambda: show(t))


@app.command("export")
def export(
    session: SessionArg,
    out_path: Annotated[Path, typer.Option("--out", "-o", help="File to write.")],
    fmt: Annotated[str, typer.Option("--format", help="chrome (Perfetto / chrome://tracing: nested function "
                                                      "calls over virtual time), json or text.")] = "chrome",
    as_json: JsonOpt = False,
) -> None:
    """Write the trace to a file, symbolised.

    Function and file:line for each event; as a daemon job (a progress bar on a terminal).

    Example: virsim trace export 3fa9c2d1 --format chrome --out trace.json
    """
    c = client()
    job = c.request("trace.export", session, format=fmt, out=out_path)
    done = wait_job(c, job, as_json, f"trace → {out_path.name}")
    res = done.result or {}
    emit(done, as_json, lambda: out.print(f"wrote {res.get('path')} ({res.get('format')}, {res.get('size'):,} bytes, "
                                          f"{res.get('events'):,} events)" + (f"; {res['note']}" if res.get("note")
                                                                               else "")))
