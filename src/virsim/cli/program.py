"""`virsim program …`: upload a firmware image into a session and start it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from virsim.cli.common import JsonOpt, SessionArg, client, parse_int
from virsim.cli.render import emit, err, out, state

app = typer.Typer(help="Programs: upload firmware into a session and start it.", no_args_is_help=True)


@app.command("upload")
def upload(
    session: SessionArg,
    image: Annotated[Path, typer.Argument(help="Firmware image: ELF, Intel hex or raw binary.")],
    fmt: Annotated[str, typer.Option("--format", help="auto, elf, hex or bin.")] = "auto",
    load_address: Annotated[Optional[str], typer.Option(help="Load address of a raw binary, e.g. 0x0.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a firmware image; print its program id.

    The image is checked against the board's CPU and memory map.

    Example: virsim program upload 3fa9c2d1 build/app.elf
    """
    info = client().program_upload(session, image, format=fmt, load_address=parse_int(load_address, "--load-address"))

    def human() -> None:
        print(info.id)
        entry = f", entry {info.entry:#x}" if info.entry is not None else ""
        err.print(f"[dim]{info.format} image, {info.size} bytes{entry}; start it: "
                  f"virsim program start {info.session} {info.id}[/]")

    emit(info, as_json, human)


@app.command("start")
def start(session: SessionArg,
          program: Annotated[str, typer.Argument(help="Program id from 'program upload'.")],
          as_json: JsonOpt = False) -> None:
    """Run an uploaded program from reset.

    The emulator is power-cycled with it.

    Example: virsim program start 3fa9c2d1 p1a2b3c
    """
    info = client().program_start(session, program)
    emit(info, as_json, lambda: out.print(f"session {info.id}: running program {info.program} ({state(info.state)})"))
