"""The docs keep up with the code: every CLI command is in docs/cli.md, has an example in its help
and takes --json; every error code is in docs/exit-codes.md; every board template is in
docs/boardconfig.md.

No daemon or emulator is needed: the command tree comes from the Typer app itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from virsim.cli.app import app
from virsim.errors import error_codes

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HEADING = re.compile(r"^## (virsim(?: [a-z][a-z-]*)+)\s*$", re.MULTILINE)


def walk(command: Any, path: tuple[str, ...] = ("virsim",)) -> Iterator[tuple[str, Any]]:
    """(full name, command) of every leaf command.

    Recent Typer versions ship their own copy of click, so groups are recognised by their
    `commands` mapping rather than by isinstance(click.Group).
    """
    subcommands = getattr(command, "commands", None)
    if isinstance(subcommands, dict):
        for name, sub in sorted(subcommands.items()):
            yield from walk(sub, (*path, name))
    else:
        yield " ".join(path), command


COMMANDS = dict(walk(typer.main.get_command(app)))


def cli_headings() -> set[str]:
    return set(HEADING.findall((DOCS / "cli.md").read_text()))


def test_command_tree_is_found() -> None:
    # Guards the walk itself: a broken walk would make the tests below pass vacuously.
    assert {"virsim session create", "virsim console", "virsim doctor", "virsim demo"} <= COMMANDS.keys()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_is_in_the_cli_reference(name: str) -> None:
    assert name in cli_headings(), f"docs/cli.md has no '## {name}' section"


def test_cli_reference_names_only_real_commands() -> None:
    stale = cli_headings() - COMMANDS.keys()
    assert not stale, f"docs/cli.md documents commands that do not exist: {sorted(stale)}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_help_has_an_example(name: str) -> None:
    assert "Example:" in (COMMANDS[name].help or ""), f"'{name} --help' has no 'Example:'"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_accepts_json(name: str) -> None:
    # docs/cli.md promises it: scripts can add --json to any command.
    options = {opt for param in COMMANDS[name].params for opt in getattr(param, "opts", [])}
    assert "--json" in options, f"'{name}' has no --json option"


@pytest.mark.parametrize("code", sorted(error_codes()))
def test_every_error_code_is_in_exit_codes(code: str) -> None:
    assert f"`{code}`" in (DOCS / "exit-codes.md").read_text(), f"docs/exit-codes.md does not list {code}"


def board_templates() -> list[str]:
    return sorted(p.stem for p in (ROOT / "boards").iterdir() if p.suffix in (".yaml", ".yml", ".json"))


def test_board_templates_are_found() -> None:
    assert "mps2-an385" in board_templates()


@pytest.mark.parametrize("template", board_templates())
def test_every_board_template_is_in_boardconfig(template: str) -> None:
    assert f"`{template}`" in (DOCS / "boardconfig.md").read_text(), f"docs/boardconfig.md does not list {template}"
