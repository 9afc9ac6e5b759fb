"""The docs keep up with the code: every CLI command is in docs/cli.md, has an example in its help
and takes --json; its --help shows every [bracketed] word of its help texts (not eaten as Rich
markup) and its summary reads as one line of its group's listing; every error code is in
docs/exit-codes.md; every board template is in docs/boardconfig.md.

No daemon or emulator is needed: the command tree comes from the Typer app itself, and --help is
rendered in this process by Typer's CliRunner.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

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


def tree(command: Any, path: tuple[str, ...] = ("virsim",)) -> Iterator[tuple[str, Any]]:
    """(full name, command) of every command and group, the root included."""
    yield " ".join(path), command
    subcommands = getattr(command, "commands", None)
    if isinstance(subcommands, dict):
        for name, sub in sorted(subcommands.items()):
            yield from tree(sub, (*path, name))


EVERYTHING = dict(tree(typer.main.get_command(app)))


@lru_cache(maxsize=None)
def rendered_help(name: str, columns: int = 80) -> str:
    """`<name> --help` as a terminal of `columns` columns shows it (Rich panels and all)."""
    result = CliRunner().invoke(app, [*name.split()[1:], "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output


def flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


@pytest.mark.parametrize("name", sorted(EVERYTHING))
def test_help_shows_every_bracketed_word(name: str) -> None:
    # Rich reads "[node]" as a style tag and drops it: help texts must escape it as "\\[node]".
    command = EVERYTHING[name]
    texts = [command.help or ""] + [getattr(param, "help", None) or "" for param in command.params]
    shown = flat(rendered_help(name, columns=200))
    for bracketed in {" ".join(m.split()) for t in texts for m in re.findall(r"\\?\[[^\]]*\]", t)}:
        assert bracketed.lstrip("\\") in shown, f"'{name} --help' lost {bracketed!r} to markup"
    assert "\\[" not in shown


def test_console_help_shows_the_node_prefix() -> None:
    assert "prefixed [node]" in flat(rendered_help("virsim console"))


def listed() -> list[Any]:
    """(group, command name) of every command as its group's --help lists it."""
    cases = []
    for group, command in sorted(EVERYTHING.items()):
        for sub in sorted(getattr(command, "commands", None) or {}):
            cases.append(pytest.param(group, sub, id=f"{group} {sub}"))
    return cases


@pytest.mark.parametrize(("group", "sub"), listed())
def test_help_summary_is_one_sentence_on_one_line_of_the_listing(group: str, sub: str) -> None:
    # The listing shows the first paragraph of the help; Typer keeps its line breaks.
    first = (EVERYTHING[f"{group} {sub}"].help or "").strip().split("\n\n")[0]
    assert "\n" not in first, f"'{group} {sub}': the summary spans lines: {first!r}"
    assert first.endswith(".") and ". " not in first, f"'{group} {sub}': not one sentence: {first!r}"
    rows = [line for line in rendered_help(group).splitlines() if flat(line).startswith(f"{sub} ")]
    assert rows and first in flat(rows[0]), f"'{group} --help' wraps the summary of {sub}: {rows}"


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
