"""`virsim console`: what the firmware printed, live with --follow, and bytes to its UART with --send."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from virsim.cli.common import JsonOpt, SessionArg, client
from virsim.cli.render import emit, err


def unescape(text: str) -> bytes:
    r"""`help\n` -> b"help\n": C-style escapes (\n \r \t \\ \xNN) as a shell user types them."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape").encode("latin-1")


def console(
    session: SessionArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming live output until Ctrl-C.")] = False,
    send: Annotated[Optional[str], typer.Option("--send", help=r"Send these bytes to the UART (escapes like \n work).")] = None,
    tail: Annotated[Optional[int], typer.Option("--tail", "-n", min=0, help="Only the last N bytes of history.")] = None,
    as_json: JsonOpt = False,
) -> None:
    r"""Print the session's console output so far; --follow streams it live; --send writes to its UART.

    With --follow --json, one JSON object per chunk is printed per line (JSON Lines).

    Example: virsim console 3fa9c2d1 --follow

    Example: virsim console 3fa9c2d1 --send "help\n"
    """
    c = client()
    if send is not None:
        reply = c.console_send(session, unescape(send))
        if not follow:
            emit(reply, as_json, lambda: err.print(f"sent {reply.sent} bytes to {reply.session}"))
            return
    if not follow:
        if tail is None:
            data = c.console_text(session)
            info = c.session("show", session)
            emit({"session": info.id, "offset": 0, "end": len(data), "data": data.decode("latin-1")},
                 as_json, lambda: _write(data))
        else:
            chunk = c.console_read(session, tail=tail)
            emit(chunk, as_json, lambda: _write(chunk.data.encode("latin-1")))
        return
    try:
        for data in c.follow_console(session, tail=tail):
            if not data:
                continue  # an idle tick
            if as_json:
                sys.stdout.write(json.dumps({"data": data.decode("latin-1")}) + "\n")
                sys.stdout.flush()
            else:
                _write(data)
    except KeyboardInterrupt:
        pass


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
