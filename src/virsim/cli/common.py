"""Shared pieces of the CLI commands: the --json option and the client factory."""

from __future__ import annotations

from typing import Annotated

import typer

from virsim.client import Client

JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document (for scripts and CI).")]
SessionArg = Annotated[str, typer.Argument(help="Session id, unique id prefix, or name.", show_default=False)]


def client() -> Client:
    return Client().connect()


def parse_int(value: str | None, what: str) -> int | None:
    """`0x8000`, `32768` -> int; a clear error otherwise."""
    if value is None:
        return None
    try:
        return int(value, 0)
    except ValueError as err:
        raise typer.BadParameter(f"{what} must be an integer like 0x8000, got {value!r}") from err
