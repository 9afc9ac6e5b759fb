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


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "": 1.0}


def parse_duration(value: str, what: str) -> float:
    """`5s`, `500ms`, `2m`, `1.5` (seconds) -> seconds."""
    text = value.strip().lower()
    for unit in ("us", "ms", "s", "m", ""):
        if text.endswith(unit):
            number = text[: len(text) - len(unit)] if unit else text
            try:
                seconds = float(number) * _UNITS[unit]
            except ValueError:
                continue
            if seconds > 0:
                return seconds
    raise typer.BadParameter(f"{what} must be a positive duration like 5s, 500ms or 2m, got {value!r}")
