"""The docs keep up with the code: every CLI command is in docs/cli.md, has an example in its help
and takes --json; its --help shows every [bracketed] word of its help texts (not eaten as Rich
markup) and its summary reads as one line of its group's listing; every error code is in
docs/exit-codes.md; every board template is in docs/boardconfig.md; the README's tour runs as
written.

Only the tour needs a daemon and emulators (it runs them, as a user would, in a temp home); for
the rest the command tree comes from the Typer app itself, and --help is rendered in this process
by Typer's CliRunner.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from conftest import HOST_S, need_tool, processes_using, wait_for
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


# ------------------------------------------------------------------------------ the README's tour

@dataclass
class TourLine:
    """One line of the tour: the shell command and what its `# comment` promises. `exits N` in the
    comment is its exit code (else 0); `Ctrl-C` means it runs until interrupted, and then the
    "quoted" texts of the comment are what it must have printed first."""

    command: str
    comment: str
    exit_code: int = 0
    interrupted: bool = False
    prints: list[str] = field(default_factory=list)


def comment_start(line: str) -> int | None:
    """Where the shell comment of `line` starts: a `#` opening a word, outside quotes."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return i
    return None


def readme_tour() -> list[TourLine]:
    section = (ROOT / "README.md").read_text().split("\n## A tour\n", 1)[1]
    block = re.search(r"^```bash\n(.*?)^```", section, re.DOTALL | re.MULTILINE)
    assert block, "README.md's tour has no ```bash block"
    lines = []
    for raw in block.group(1).splitlines():
        cut = comment_start(raw)
        command, comment = (raw[:cut], raw[cut + 1:]) if cut is not None else (raw, "")
        if not command.strip():
            continue
        exits = re.search(r"\bexits (\d+)\b", comment)
        interrupted = "Ctrl-C" in comment
        lines.append(TourLine(command.strip(), comment.strip(), int(exits.group(1)) if exits else 0, interrupted,
                              re.findall(r'"([^"]+)"', comment) if interrupted else []))
    return lines


def test_readme_tour_is_parsed() -> None:
    # Guards the parser: a tour read as nothing would pass vacuously.
    tour = readme_tour()
    assert len(tour) > 20 and tour[0].command == "virsim board list"
    assert [t.command.split()[:3] for t in tour if t.interrupted] == [["virsim", "console", "$sid"]]
    assert any(t.exit_code == 1 for t in tour)
    assert "Hello from virsim on mps2-an385" in next(t for t in tour if t.interrupted).prints
    quoted = "virsim console $sid --send 'hi # not a comment'  # a comment"
    assert comment_start(quoted) == quoted.index("# a comment")


# Host-time guards, as the CLI's (conftest.HOST_S): a line that runs firmware bounds itself (virsim
# run's own timeouts), and the Ctrl-C line prints history the session wrote in earlier lines.
LINE_TIMEOUT = HOST_S  # seconds a line may take on a loaded machine
FOLLOW_FOR = HOST_S    # how long a Ctrl-C line may take to print what its comment says


class TourShell:
    """Runs tour lines one at a time through bash, as a user types them at a prompt: in the repo
    root, `virsim` from this venv on PATH, the shell variables of earlier lines (`sid=$(...)`) kept
    in a file between lines. `set -e`: a line of several commands fails at the first that does."""

    def __init__(self, home: Path, names: list[str]) -> None:
        self.state = home / "tour-vars.sh"
        self.state.write_text("")
        tmp = home / "tmp"  # virsim run's private homes go there, so the home fixture sees their processes
        tmp.mkdir()
        self.env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                    "VIRSIM_HOME": str(home), "TMPDIR": str(tmp)}
        self.names = " ".join(names)

    def script(self, command: str) -> str:
        save = f"declare -p {self.names} > {self.state} 2>/dev/null || :" if self.names else ":"
        return f". {self.state}\ntrap '{save}' EXIT\nset -e\n{command}\n"

    def run(self, line: TourLine) -> tuple[int, str]:
        """The line's exit code and output (stdout and stderr together)."""
        proc = subprocess.Popen(["bash", "-c", self.script(line.command)], cwd=ROOT, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        output = bytearray()

        def read() -> None:
            assert proc.stdout is not None
            while chunk := proc.stdout.read1(4096):
                output.extend(chunk)
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            if line.interrupted:
                wanted = [text.encode() for text in line.prints] or [b""]
                wait_for(lambda: proc.poll() is not None or all(w in output for w in wanted) and output,
                         timeout=FOLLOW_FOR, interval=0.1, what=f"{line.command!r} to print {line.prints}")
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground job
            code = proc.wait(timeout=LINE_TIMEOUT)
        except (subprocess.TimeoutExpired, AssertionError) as err:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            reader.join(timeout=10)
            raise AssertionError(f"tour line {line.command!r}: {err}; it printed:\n{output.decode(errors='replace')}") from err
        reader.join(timeout=10)
        return code, output.decode(errors="replace")


def tour_outputs() -> set[Path]:
    """What in the repo root the tour may add to: its top level and out/."""
    return {*ROOT.iterdir(), *((ROOT / "out").iterdir() if (ROOT / "out").is_dir() else ())}


def remove_tour_outputs(before: set[Path], tour: list[TourLine]) -> None:
    """Remove what the tour wrote into the checkout (s.vsnap, out/, ...): new paths it names."""
    commands = " ".join(t.command for t in tour)
    for path in sorted(tour_outputs() - before, reverse=True):
        if str(path.relative_to(ROOT)) in commands:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.mark.timeout(3600)  # the last resort for ~30 lines, each with its own LINE_TIMEOUT
def test_readme_tour_runs_as_written(home: Path) -> None:
    need_tool("qemu-system-arm")
    need_tool("qemu-img")
    need_tool("gdb-multiarch")
    tour = readme_tour()
    names = sorted({m.group(1) for t in tour for m in re.finditer(r"(?:^|[;&|]\s*)([A-Za-z_]\w*)=\$\(", t.command)})
    shell = TourShell(home, names)
    before = tour_outputs()
    try:
        for line in tour:
            started = time.monotonic()
            code, output = shell.run(line)
            if line.interrupted:
                for text in line.prints:
                    assert text in output, f"{line.command!r} did not print {text!r} before Ctrl-C:\n{output}"
            else:
                assert code == line.exit_code, (f"tour line {line.command!r} exited {code}, its comment says "
                                                f"{line.exit_code}; output:\n{output}")
            print(f"{time.monotonic() - started:6.1f}s  {line.command}")
        # The tour ends with `daemon stop` and runs that clean up after themselves: nothing is left.
        wait_for(lambda: not processes_using(home), timeout=30, what="the tour's processes to end")
    finally:
        remove_tour_outputs(before, tour)


def test_backends_doc_table_is_the_code() -> None:
    from virsim.backends.base import capability_table

    text = (ROOT / "docs" / "backends.md").read_text()
    table = text.split("<!-- capability-table: generated, do not edit by hand -->\n", 1)[1].split(
        "<!-- /capability-table -->", 1)[0]
    assert table == capability_table(), "docs/backends.md's table differs from the code: regenerate it"
