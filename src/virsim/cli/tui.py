"""`virsim tui`: the live dashboard in this terminal, or served to a browser with --serve.
Textual (and textual-serve) are imported only here, when the command runs."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from virsim.cli.render import err
from virsim.errors import InvalidInput

DEFAULT_PORT = 8566


def tui(
    session: Annotated[Optional[str], typer.Argument(help="Open this session (id, id prefix or name) at once.")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Serve the dashboard to a web browser (textual-serve) "
                                        "instead of drawing it in this terminal.")] = False,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="--serve: the port.")] = DEFAULT_PORT,
    host: Annotated[str, typer.Option("--host", help="--serve: the address to listen on; anything but 127.0.0.1 "
                                      "lets other machines drive your sessions.")] = "127.0.0.1",
    scrollback: Annotated[int, typer.Option("--scrollback", min=100, max=10_000_000,
                                            help="Console lines kept on screen (the log on disk keeps all).")]
    = 10_000,
    as_json: Annotated[bool, typer.Option("--json", help="Errors (no terminal, no daemon) as JSON; the dashboard "
                                          "itself is interactive.")] = False,
) -> None:
    """The live dashboard of sessions, consoles and debug views.

    Every session of the daemon, live; a session's console, source, registers, call stack,
    breakpoints, memory, snapshots and nodes. Keys: ? shows the key map; ctrl+p opens the command palette; ctrl+q quits.

    Example: virsim tui 3fa9c2d1
    """
    if serve:
        from virsim.tui.serve import serve as serve_app

        if host not in ("127.0.0.1", "localhost", "::1"):
            err.print(f"[yellow]warning:[/yellow] serving on {host}: anyone who reaches {host}:{port} can drive your "
                      "sessions (there is no login)")
        serve_app(session, host, port, scrollback)
        return
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise InvalidInput("virsim tui draws in a terminal, and stdin/stdout are not one: run it in a terminal, "
                           "or use --serve to open it in a browser", field="terminal")
    from virsim.tui.app import run

    run(session, scrollback=scrollback)
