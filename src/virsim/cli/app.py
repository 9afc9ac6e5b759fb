"""The `virsim` command: a thin Typer front over the client library.

Commands parse arguments, call one client (or board) function and render the result; errors are
VirsimErrors, printed by `main()` (as the seed's error JSON with --json) with their exit code.
"""

from __future__ import annotations

import sys

import typer

from virsim import __version__
from virsim.cli import (board, console, coverage, daemon, debug, demo, doctor, program, run, session, snapshot, trace,
                        tui)
from virsim.cli.render import print_error
from virsim.errors import VirsimError

app = typer.Typer(
    name="virsim",
    help="Run and debug firmware on virtual hardware.\n\n"
         "Example: virsim session create --board mps2-an385 --firmware examples/hello/hello.elf",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(board.app, name="board")
app.add_typer(session.app, name="session")
app.add_typer(program.app, name="program")
app.add_typer(daemon.app, name="daemon")
app.add_typer(debug.app, name="debug")
app.add_typer(snapshot.app, name="snapshot")
app.add_typer(coverage.app, name="coverage")
app.add_typer(trace.app, name="trace")
app.command("console")(console.console)
app.command("doctor")(doctor.doctor)
app.command("demo")(demo.demo)
app.command("run")(run.run)
app.command("tui")(tui.tui)


def _version(value: bool) -> None:
    if value:
        print(f"virsim {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Run and debug firmware on virtual hardware."""


def main() -> None:
    try:
        app(standalone_mode=True)
    except VirsimError as error:
        print_error(error, as_json="--json" in sys.argv[1:])
        sys.exit(error.exit_code)
