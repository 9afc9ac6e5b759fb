"""`virsim tui --serve`: the same app in a browser. textual-serve runs `python -m virsim.tui` once
per browser tab and relays its screen over a websocket; the daemon connection is the one every
local client uses (same user, same VIRSIM_HOME)."""

from __future__ import annotations

import shlex
import sys


def command(session: str | None, scrollback: int) -> str:
    args = [sys.executable, "-m", "virsim.tui", "--scrollback", str(scrollback)]
    if session:
        args.append(session)
    return shlex.join(args)


def serve(session: str | None, host: str, port: int, scrollback: int) -> None:
    from textual_serve.server import Server

    Server(command(session, scrollback), host=host, port=port, title="virsim").serve()
