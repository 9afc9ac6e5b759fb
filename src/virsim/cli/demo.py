"""`virsim demo`: the main job in one command — a session on the demo board, its console, cleanup."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from virsim.cli.common import JsonOpt, client
from virsim.cli.render import emit, err, out
from virsim.client import daemon_pid
from virsim.paths import get_paths
from virsim.errors import InvalidInput, Timeout


def _default_firmware() -> Path:
    """examples/hello/hello.elf of the source tree (or of the current directory)."""
    here = Path(__file__).resolve()
    for root in (here.parents[3], Path.cwd()):
        candidate = root / "examples" / "hello" / "hello.elf"
        if candidate.exists():
            return candidate
    raise InvalidInput("cannot find examples/hello/hello.elf: run from a virsim checkout or give --firmware",
                       field="firmware")


def demo(
    board: Annotated[str, typer.Option(help="Board to run on.")] = "mps2-an385",
    backend: Annotated[str, typer.Option(help="Backend: builtin needs nothing installed; qemu needs "
                                                "qemu-system-arm.")] = "builtin",
    firmware: Annotated[Optional[Path], typer.Option(help="Firmware (default: examples/hello/hello.elf).")] = None,
    until: Annotated[str, typer.Option(help="Stop once the console shows this text.")] = "tick 3",
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds (exit 42).")] = 20.0,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the session running afterwards.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Try virsim: run the hello firmware until it prints 'tick 3'.

    Creates a session with the hello firmware on the built-in engine (or --backend qemu), streams
    its console until it prints 'tick 3', then deletes the session.

    Example: virsim demo --backend qemu
    """
    started = daemon_pid(get_paths()) is None  # a daemon demo starts, demo stops (unless --keep)
    c = client()
    t0 = time.perf_counter()
    info = c.session_create(board, firmware or _default_firmware(), backend=backend, name=None)
    if not as_json:
        err.print(f"[dim]session {info.id} on {info.board} ({info.backend}); console:[/]")
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        for data in c.follow_console(info.id, poll=0.1):
            seen += data
            if not as_json:
                out.file.write(data.decode("latin-1"))
                out.file.flush()
            if until.encode() in seen:
                break
            if time.monotonic() > deadline:
                raise Timeout(f"the console did not show {until!r} within {timeout:g}s", session=info.id)
    finally:
        if not keep:
            c.session_delete(info.id, purge=True)
            if started:
                c.stop_daemon()
    elapsed = time.perf_counter() - t0
    result = {"session": info.id, "board": info.board, "backend": info.backend, "until": until,
              "seconds": round(elapsed, 3), "kept": keep, "console": seen.decode("latin-1")}
    emit(result, as_json, lambda: err.print(f"[green]demo ok[/]: saw {until!r} after {elapsed:.2f}s; "
                                            + (f"session {info.id} kept" if keep else "session deleted")
                                            + ("; the daemon it started is stopped" if started and not keep else "")))
