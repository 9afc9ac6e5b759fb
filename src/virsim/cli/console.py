"""`virsim console`: what the firmware printed, live with --follow, and bytes to its UART with --send."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated, Optional

import typer

from virsim.bytestext import unescape
from virsim.client import Client
from virsim.cli.common import JsonOpt, SessionArg, client
from virsim.cli.render import emit, err


def console(
    session: SessionArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming live output until Ctrl-C.")] = False,
    send: Annotated[Optional[str], typer.Option("--send", help=r"Send these bytes to the UART (escapes like \n work).")] = None,
    tail: Annotated[Optional[int], typer.Option("--tail", "-n", min=0, help="Only the last N bytes of history.")] = None,
    node: Annotated[Optional[str], typer.Option("--node", help="Multi-node boards: only this node's lines (the console "
                                                               "shows every node's, prefixed \\[node]).")] = None,
    as_json: JsonOpt = False,
) -> None:
    r"""Print a session's console, follow it live, or send it input.

    The output so far; --follow streams it live; --send writes to its UART.

    With --follow --json, one JSON object per chunk is printed per line (JSON Lines).

    Example: virsim console 3fa9c2d1 --follow

    Example: virsim console 3fa9c2d1 --send "help\n"

    Example: virsim console 3fa9c2d1 --node cpu1 --follow
    """
    c = client()
    keep = _node_filter(c, session, node)
    if send is not None:
        reply = c.console_send(session, unescape(send))
        if not follow:
            emit(reply, as_json, lambda: err.print(f"sent {reply.sent} bytes to {reply.session}"))
            return
    if not follow:
        if tail is None:
            data = keep(c.console_text(session), True)
            info = c.session("show", session)
            emit({"session": info.id, "offset": 0, "end": len(data), "data": data.decode("latin-1")},
                 as_json, lambda: _write(data))
        else:
            chunk = c.console_read(session, tail=tail)
            if node is not None:
                chunk = chunk.model_copy(update={"data": keep(chunk.data.encode("latin-1"), True).decode("latin-1")})
            emit(chunk, as_json, lambda: _write(chunk.data.encode("latin-1")))
        return
    try:
        for data in c.follow_console(session, tail=tail):
            data = keep(data, False)
            if not data:
                continue  # an idle tick, or only other nodes' lines
            if as_json:
                sys.stdout.write(json.dumps({"data": data.decode("latin-1")}) + "\n")
                sys.stdout.flush()
            else:
                _write(data)
    except KeyboardInterrupt:
        pass


def _node_filter(c: Client, session: str, node: str | None) -> Callable[[bytes, bool], bytes]:
    """Bytes -> the bytes of `node`'s lines, prefix removed (identity without --node). Streamed
    chunks may split lines: the rest of a line waits for its newline (`final`: flush it)."""
    if node is None:
        return lambda data, final: data
    info = c.session("show", session)
    nodes = [n["node"] for n in info.nodes]
    if not nodes:
        raise typer.BadParameter(f"session {info.id} runs a one-node board: its console is that node's; drop --node")
    if node not in nodes:
        raise typer.BadParameter(f"session {info.id} has no node {node!r} (nodes: {', '.join(nodes)})")
    prefix = f"[{node}] ".encode()
    pending = bytearray()

    def keep(data: bytes, final: bool) -> bytes:
        pending.extend(data)
        lines = pending.split(b"\n")
        rest = lines.pop()
        out = b"".join(ln[len(prefix):] + b"\n" for ln in lines if ln.startswith(prefix))
        pending[:] = rest
        if final and rest.startswith(prefix):
            out += rest[len(prefix):]
        return out

    return keep


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
