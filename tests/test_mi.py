"""virsim's GDB/MI parser agrees with pygdbmi's on real gdb output (tests/data: records that
gdb-multiarch 13 printed while virsim debugged examples/hello under QEMU)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pygdbmi.gdbmiparser import parse_response

from virsim.daemon.debugger import _CONTENTS, _REG_VALUE
from virsim.daemon.mi import parse_record

RECORDS = [line for line in (Path(__file__).parent / "data" / "gdb-mi-records.txt").read_text().splitlines() if line]


def test_corpus_covers_the_hot_records() -> None:
    joined = "\n".join(RECORDS)
    for needle in ("register-values=", "memory=[", "*stopped", "BreakpointTable", "asm_insns", "stack=[", "^error"):
        assert needle in joined, needle


@pytest.mark.parametrize("line", RECORDS)
def test_same_structure_as_pygdbmi(line: str) -> None:
    ours = parse_record(line)
    theirs = parse_response(line)
    theirs.pop("stream", None)
    if ours["type"] in ("console", "log", "target"):
        ours.pop("token")
    assert ours == theirs


@pytest.mark.parametrize("line", [r for r in RECORDS if "register-values=" in r or "memory=[" in r])
def test_hot_path_patterns_match_the_parser(line: str) -> None:
    payload = parse_record(line)["payload"]
    if "register-values" in payload:
        full = {int(r["number"]): int(r["value"], 16) for r in payload["register-values"]
                if r["value"].startswith("0x")}
        assert {int(n): int(v, 16) for n, v in _REG_VALUE.findall(line)} == full
    else:
        assert _CONTENTS.findall(line) == [block["contents"] for block in payload["memory"]]
