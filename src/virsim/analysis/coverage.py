"""Line coverage from executed blocks, and the files real tools read: lcov, json, drcov.

A backend reports executed blocks as (start address, size in bytes, times entered). An address's
execution count is the sum of the counts of the blocks that contain it (blocks of one run are
disjoint executions, so overlapping translations add up). Lines are charged to the source function
their code came from (virsim.analysis.symbols: DWARF subprograms and inlined subroutines), one copy
of it at a time: within one copy (the out-of-line code, or one inlined instance) a source line's
count is the largest count among its statement rows; a line's count is the sum over the copies that
have it, so a `static inline` helper inlined in two places counts both, and its callers count
neither. A line is "found" when the line table has code for it, "hit" when that count is non-zero.
A function's count (calls) is the sum over its copies of the count at each copy's entry: a function
whose code is only inlined is still a function (lcov FN/FNDA at its first line), entered as often as
its inlined copies were.

Formats:
- lcov (`geninfo` tracefile: TN/SF/FN/FNDA/FNF/FNH/DA/LF/LH/end_of_record), what genhtml renders;
- json: the same per file plus the raw blocks (format "virsim-coverage", version 1);
- drcov version 2 (DynamoRIO's format, read by Lighthouse, bncov, ...): a module table with the
  ELF as module 0 and a binary BB table of {uint32 start offset, uint16 size, uint16 module}.
"""

from __future__ import annotations

import bisect
import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virsim.analysis.symbols import Program
from virsim.atomic import write_atomic

Block = tuple[int, int, int]  # start, size, count
Progress = Callable[[int, int], None]


@dataclass
class FileCoverage:
    path: str
    lines: dict[int, int] = field(default_factory=dict)  # line -> count (0: found, not hit)
    functions: list[tuple[str, int, int]] = field(default_factory=list)  # name, line, count

    @property
    def found(self) -> int:
        return len(self.lines)

    @property
    def hit(self) -> int:
        return sum(1 for c in self.lines.values() if c)


@dataclass
class FunctionCoverage:
    name: str
    file: str
    line: int
    calls: int
    inlined: int  # how many of its copies are inlined into callers
    lines: dict[tuple[str, int], int] = field(default_factory=dict)  # its own (file, line) -> count


@dataclass
class Coverage:
    program: Program
    blocks: list[Block]
    files: dict[str, FileCoverage] = field(default_factory=dict)
    functions: list[FunctionCoverage] = field(default_factory=list)

    @classmethod
    def compute(cls, program: Program, blocks: Iterable[Block], source_dir: Path | None = None,
                progress: Progress | None = None) -> Coverage:
        merged: dict[tuple[int, int], int] = {}
        for start, size, count in blocks:
            if size > 0:
                merged[(start, size)] = merged.get((start, size), 0) + count
        cov = cls(program, sorted((s, z, c) for (s, z), c in merged.items()))
        counter = _AddressCounts(cov.blocks)
        paths: dict[str, str] = {}

        def path(name: str) -> str:
            if name not in paths:
                paths[name] = _source_path(name, source_dir)
            return paths[name]

        per_copy: dict[tuple[int, int, str, int], int] = {}  # (function, copy, file, line) -> count
        rows = program.rows + program.call_sites
        for i, row in enumerate(rows):
            key = (row.function, row.copy, path(row.file), row.line)
            per_copy[key] = max(per_copy.get(key, 0), counter.at(row.address))
            if progress and i % 512 == 0:
                progress(i, len(rows))
        cov.functions = [FunctionCoverage(fn.name, path(fn.file), fn.line, sum(counter.at(e) for e in fn.entries),
                                          fn.inlined) for fn in program.sources]
        for (function, _, file, line), count in per_copy.items():
            fc = cov._file(file)
            fc.lines[line] = fc.lines.get(line, 0) + count
            if function >= 0:
                own = cov.functions[function].lines
                own[(file, line)] = own.get((file, line), 0) + count
        for fn in cov.functions:
            cov._file(fn.file).functions.append((fn.name, fn.line, fn.calls))
        if progress:
            progress(len(rows), len(rows))
        return cov

    def _file(self, path: str) -> FileCoverage:
        if path not in self.files:
            self.files[path] = FileCoverage(path)
        return self.files[path]

    # --------------------------------------------------------------------------------- summary
    def rows(self) -> list[dict[str, Any]]:
        """One row per source function: its calls and its own lines found/hit."""
        return [{"file": fn.file, "function": fn.name, "line": fn.line, "calls": fn.calls, "inlined": fn.inlined,
                 "lines_hit": sum(1 for c in fn.lines.values() if c), "lines_total": len(fn.lines)}
                for fn in sorted(self.functions, key=lambda f: (f.file, f.line, f.name))]

    def totals(self) -> dict[str, int]:
        return {"lines_found": sum(f.found for f in self.files.values()),
                "lines_hit": sum(f.hit for f in self.files.values()),
                "functions_found": len(self.functions),
                "functions_hit": sum(1 for fn in self.functions if fn.calls),
                "blocks": len(self.blocks)}

    # ---------------------------------------------------------------------------------- formats
    def lcov(self, test_name: str = "virsim") -> str:
        out: list[str] = []
        for path, fc in sorted(self.files.items()):
            out += [f"TN:{_lcov_name(test_name)}", f"SF:{path}"]
            for name, line, _ in sorted(fc.functions, key=lambda f: f[1]):
                out.append(f"FN:{line},{name}")
            for name, _, count in sorted(fc.functions, key=lambda f: f[1]):
                out.append(f"FNDA:{count},{name}")
            out += [f"FNF:{len(fc.functions)}", f"FNH:{sum(1 for f in fc.functions if f[2])}"]
            out += [f"DA:{line},{count}" for line, count in sorted(fc.lines.items())]
            out += [f"LF:{fc.found}", f"LH:{fc.hit}", "end_of_record"]
        return "\n".join(out) + "\n"

    def json(self) -> str:
        doc = {"format": "virsim-coverage", "version": 1, "program": str(self.program.path),
               "summary": self.totals(),
               "files": [{"path": p, "lines": {str(k): v for k, v in sorted(fc.lines.items())},
                          "functions": [{"name": fn.name, "line": fn.line, "count": fn.calls, "inlined": fn.inlined}
                                        for fn in self.functions if fn.file == p]}
                         for p, fc in sorted(self.files.items())],
               "blocks": [list(b) for b in self.blocks]}
        return json.dumps(doc, indent=1) + "\n"

    def drcov(self) -> bytes:
        base, end = self.program.base, max(self.program.end, self.program.base + 1)
        inside = [(s, z) for s, z, c in self.blocks if c and base <= s < end]
        head = ("DRCOV VERSION: 2\nDRCOV FLAVOR: virsim\n"
                "Module Table: version 2, count 1\n"
                "Columns: id, base, end, entry, checksum, timestamp, path\n"
                f" 0, {base:#018x}, {end:#018x}, 0x0000000000000000, 0x00000000, 0x00000000, {self.program.path}\n"
                f"BB Table: {len(inside)} bbs\n").encode()
        return head + b"".join(struct.pack("<IHH", s - base, min(z, 0xFFFF), 0) for s, z in inside)


def write(cov: Coverage, fmt: str, out: Path) -> int:
    """Write `cov` to `out` as lcov, json or drcov; returns the size in bytes."""
    data = {"lcov": lambda: cov.lcov().encode(), "json": lambda: cov.json().encode(), "drcov": cov.drcov}[fmt]()
    return write_atomic(out, data)


def parse_drcov(data: bytes) -> tuple[list[dict[str, Any]], list[tuple[int, int, int]]]:
    """Read a drcov v2 file back: (modules, [(module id, start offset, size)])."""
    marker = data.index(b"BB Table: ")
    line_end = data.index(b"\n", marker)
    header = data[:marker].decode().splitlines()
    count = int(data[marker:line_end].split()[2])
    columns = next(h for h in header if h.startswith("Columns:"))[len("Columns:"):].split(",")
    columns = [c.strip() for c in columns]
    table_at = header.index(next(h for h in header if h.startswith("Columns:"))) + 1
    modules = [dict(zip(columns, (v.strip() for v in line.split(",", len(columns) - 1))))
               for line in header[table_at:] if line.strip()]
    body = data[line_end + 1:]
    if len(body) != count * 8:
        raise ValueError(f"drcov: BB table says {count} blocks, holds {len(body)} bytes")
    bbs = [(mod, start, size) for start, size, mod in struct.iter_unpack("<IHH", body)]
    return modules, bbs


class _AddressCounts:
    """Execution count of an address: the sum over the blocks that contain it."""

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = blocks
        self.starts = [b[0] for b in blocks]
        self.longest = max((b[1] for b in blocks), default=0)

    def at(self, address: int) -> int:
        total = 0
        i = bisect.bisect_right(self.starts, address) - 1
        while i >= 0 and self.blocks[i][0] + self.longest > address:
            start, size, count = self.blocks[i]
            if start <= address < start + size:
                total += count
            i -= 1
        return total


def _source_path(name: str, source_dir: Path | None) -> str:
    """An absolute path where the source can be found (genhtml reads it), else the DWARF name."""
    path = Path(name)
    if not path.is_absolute() and source_dir is not None and (source_dir / path).exists():
        return str((source_dir / path).resolve())
    return name


def _lcov_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name) or "virsim"
