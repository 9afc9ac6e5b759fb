"""The external gdb endpoint through the real daemon, real emulators and real gdb-multiarch: the
printed gdb command, the fixed TCP port and the per-name socket for IDEs, the proxy's guard
against commands that would end the emulator, and the built-in stub's monitor commands."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from conftest import HELLO, CLI, need_tool
from virsim.client import Client


@pytest.fixture(autouse=True)
def tools() -> None:
    need_tool("qemu-system-arm")
    need_tool("gdb-multiarch")


def run_gdb(argv: list[str], cwd: Path) -> str:
    """A batch gdb to completion (it detaches at the end); its stdout and stderr together."""
    proc = subprocess.run([*argv, "-nx", "-batch"], cwd=cwd, capture_output=True, text=True, timeout=60)
    return proc.stdout + proc.stderr


def test_printed_gdb_command_finds_the_sources(cli: CLI, client: Client, tmp_path: Path) -> None:
    sid = client.session_create("mps2-an385", HELLO, paused=True).id
    ep = cli.json("debug", "gdb", sid)
    # The ELF gdb loads is the session's copy, far from examples/hello; hello.elf's DWARF says
    # comp_dir "." (-ffile-prefix-map), which the command maps to the directory it was uploaded from.
    assert f"-ex 'set substitute-path . {HELLO.parent}'" in ep["command"]
    output = run_gdb([*shlex.split(ep["command"]), "-ex", "list on_tick", "-ex", "detach"], cwd=tmp_path)
    source = (HELLO.parent / "hello.c").read_text().splitlines()
    at = next(i for i, text in enumerate(source, 1) if text.startswith("void on_tick("))
    lines = output.splitlines()
    assert all(f"{n}\t{source[n - 1]}" in lines for n in range(at - 2, at + 4)), output  # hello.c's own lines
