"""Output for the CLI: one JSON document with --json, rich tables and text otherwise; errors too."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from virsim.errors import VirsimError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

STATE_STYLE = {"running": "green", "paused": "yellow", "created": "cyan", "stopped": "dim",
               "failed": "red", "lost": "red", "deleted": "dim"}


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, list):
        return [to_jsonable(o) for o in obj]
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    return obj


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def emit(obj: Any, as_json: bool, human: Callable[[], None]) -> None:
    """Print `obj` as one JSON document, or call `human` to render it for people."""
    if as_json:
        print_json(obj)
    else:
        human()


def print_error(error: VirsimError, as_json: bool) -> None:
    if as_json:
        print_json(error.to_wire())
        return
    err.print(f"[bold red]error[/] [dim]({error.code})[/]: {escape(error.message)}", markup=True)
    for problem in error.details.get("problems", [])[1:6]:
        line = f":{problem['line']}" if problem.get("line") else ""
        err.print(f"  also{line} {problem.get('path', '')}: {problem.get('message', '')}", markup=False)
    tail_ = error.details.get("stderr_tail")
    if tail_:
        err.print("[dim]emulator said:[/]", markup=True)
        err.print(tail_, markup=False)


@contextmanager
def working(text: str, as_json: bool = False) -> Iterator[None]:
    """A spinner with `text` on stderr while a long request runs, on a terminal only (never with
    --json, never in a pipe or a CI log)."""
    if as_json or not err.is_terminal:
        yield
        return
    with err.status(f"[dim]{escape(text)}[/]", spinner="dots"):
        yield


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def state(value: str) -> str:
    return f"[{STATE_STYLE.get(value, 'white')}]{value}[/]"


def table(*columns: str, title: str | None = None) -> Table:
    t = Table(title=title, header_style="bold", box=None, pad_edge=False)
    for c in columns:
        t.add_column(c)
    return t


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def wait_job(client: Any, job: Any, as_json: bool, what: str) -> Any:
    """Wait for a daemon job; on a terminal (and not --json) with a progress bar on stderr."""
    if as_json or not err.is_terminal:
        return client.wait_job(job)
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeElapsedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), TaskProgressColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task(what, total=None)
        return client.wait_job(job, progress=lambda j: bar.update(task, completed=j.done, total=j.total or None))
