"""`virsim daemon …`: status, start, stop, logs of the per-user daemon, and the wire schema."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from virsim import protocol
from virsim.cli.common import JsonOpt
from virsim.cli.render import duration, emit, out, print_json
from virsim.client import Client, daemon_pid
from virsim.errors import DaemonUnavailable
from virsim.paths import get_paths

app = typer.Typer(help="The per-user daemon: status, start, stop, logs, schema.", no_args_is_help=True)


def _show(info: protocol.DaemonInfo, mismatch: str | None = None) -> None:
    out.print(f"daemon [green]running[/]: pid {info.pid}, virsim {info.version}, protocol {info.protocol}, "
              f"up {duration(info.uptime_s)}")
    out.print(f"  sessions: {info.sessions_active} active, {info.sessions_total} total")
    out.print(f"  control:  {info.control_socket}\n  events:   {info.events_socket}\n  data:     {info.data_dir}")
    out.print(f"  install:  {info.install or '(not reported: an older virsim)'}")
    if mismatch:
        out.print(f"[yellow]warning[/]: {mismatch}: 'virsim daemon stop' (the next command starts this install's)")


@app.command("status")
def status(as_json: JsonOpt = False) -> None:
    """Show whether the daemon runs: pid, sockets, sessions.

    Does not start it.

    Example: virsim daemon status
    """
    paths = get_paths()
    if daemon_pid(paths) is None:
        emit({"running": False, "control_socket": str(paths.control_socket)}, as_json,
             lambda: out.print("daemon not running (the first command that needs it starts it)"))
        return
    client = Client(autostart=False, check_install=False).connect()
    info = client.status()
    emit({"running": True, **info.model_dump(), "mismatch": client.mismatch}, as_json,
         lambda: _show(info, client.mismatch))


@app.command("start")
def start(foreground: Annotated[bool, typer.Option("--foreground", help="Run in this terminal (logs go to the log file).")] = False,
          as_json: JsonOpt = False) -> None:
    """Start the daemon if it is not running.

    Commands that need it start it on their own too.

    Example: virsim daemon start
    """
    if foreground:
        from virsim.daemon.server import run

        raise typer.Exit(run([]))
    info = Client().connect().status()
    emit({"running": True, **info.model_dump()}, as_json, lambda: _show(info))


@app.command("stop")
def stop(as_json: JsonOpt = False) -> None:
    """Stop the daemon, powering off every emulator first.

    Its sessions become 'stopped' (power-on brings them back).

    Example: virsim daemon stop
    """
    paths = get_paths()
    if daemon_pid(paths) is None:
        emit({"running": False, "stopped": False}, as_json, lambda: out.print("daemon not running"))
        return
    info = Client(autostart=False, check_install=False).connect().stop_daemon()
    emit({"running": False, "stopped": True, "pid": info.pid}, as_json,
         lambda: out.print(f"daemon (pid {info.pid}) stopped"))


@app.command("logs")
def logs(lines: Annotated[int, typer.Option("--lines", "-n", min=1, help="How many lines from the end.")] = 50,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")] = False,
         as_json: JsonOpt = False) -> None:
    """Print the end of the daemon's log file.

    Example: virsim daemon logs -n 100
    """
    path = get_paths().daemon_log
    if not path.exists():
        raise DaemonUnavailable(f"no daemon log yet at {path}", log=str(path))
    text = path.read_text(errors="replace").splitlines()[-lines:]
    emit({"log": str(path), "lines": text}, as_json, lambda: print("\n".join(text)))
    if follow and not as_json:
        try:
            with path.open(errors="replace") as fh:
                fh.seek(0, 2)
                while True:
                    line = fh.readline()
                    if line:
                        print(line, end="", flush=True)
                    else:
                        time.sleep(0.2)
        except KeyboardInterrupt:
            pass


@app.command("schema")
def schema(as_json: JsonOpt = True) -> None:
    """Print the JSON Schema of every wire message.

    Requests, results and events; JSON with or without --json.

    Example: virsim daemon schema > virsim-protocol.json
    """
    print_json(protocol.schema())



