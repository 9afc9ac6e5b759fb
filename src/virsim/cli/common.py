"""Shared pieces of the CLI commands: the --json option and the client factory."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from virsim.client import Client

JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document (for scripts and CI).")]
SessionArg = Annotated[str, typer.Argument(help="Session id, unique id prefix, or name.", show_default=False)]


def client() -> Client:
    return Client().connect()


def split_firmware(values: list[str] | None) -> tuple[str | None, dict[str, str]]:
    """`--firmware app.elf` -> ("app.elf", {}); `--firmware cpu0=a.elf --firmware cpu1=b.elf` ->
    (None, {"cpu0": "a.elf", "cpu1": "b.elf"}) for multi-node boards."""
    plain: list[str] = []
    per_node: dict[str, str] = {}
    for value in values or []:
        node, sep, image = value.partition("=")
        if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", node):
            if node in per_node:
                raise typer.BadParameter(f"--firmware {node}=... is given twice")
            per_node[node] = image
        else:
            plain.append(value)
    if len(plain) > 1 or (plain and per_node):
        raise typer.BadParameter("give one --firmware IMAGE, or --firmware NODE=IMAGE for each node of a "
                                 "multi-node board")
    return (plain[0] if plain else None), per_node


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
