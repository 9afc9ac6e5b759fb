"""Execution traces: the raw file a backend records, symbolised into text, JSON or a Chrome trace.

The raw file (written by the built-in engine's probes) is one JSON header line — level, events,
truncated, limit, frequency, ranges — then `<QII` records: cycle, address, size. Here each event
gets its function and file:line from the ELF (virsim.analysis.symbols), and time in ns from the
cycle and the CPU frequency.

Function calls are rebuilt from the executed addresses with a shadow stack: entering a function's
first instruction is a call (interrupt and exception handlers included), reaching code of a
function lower on the stack returns to it, anything else replaces the top frame (a tail call, or
code the trace did not see enter). The Chrome trace-event format ("B"/"E" pairs on one thread,
`ts` in µs of virtual time) shows them as nested slices in Perfetto or chrome://tracing.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virsim.analysis.symbols import Function, Program
from virsim.atomic import atomic_file

FORMATS = ("text", "json", "chrome")
Progress = Callable[[int, int], None]


@dataclass
class RawTrace:
    header: dict[str, Any]
    records: bytes

    @classmethod
    def read(cls, path: Path) -> RawTrace:
        data = path.read_bytes()
        line_end = data.index(b"\n")
        return cls(json.loads(data[:line_end]), data[line_end + 1:])

    def __len__(self) -> int:
        return len(self.records) // struct.calcsize(self.header.get("record", "<QII"))

    def events(self) -> Iterator[tuple[int, int, int]]:
        yield from struct.iter_unpack(self.header.get("record", "<QII"), self.records)


def note(header: dict[str, Any]) -> str | None:
    """The user-facing truncation note, or None."""
    if header.get("truncated"):
        return f"truncated at {header.get('events')} events (--limit {header.get('limit')})"
    return None


def calls(program: Program, raw: RawTrace, progress: Progress | None = None
          ) -> Iterator[tuple[str, int, Function]]:
    """("B" | "E", cycle, function) in order, from the executed addresses (see module doc)."""
    stack: list[Function] = []
    total = len(raw)
    last = 0
    for i, (cycle, address, _size) in enumerate(raw.events()):
        last = cycle
        if progress and i % 20000 == 0:
            progress(i, total)
        fn = program.function_at(address)
        if fn is None or (stack and fn is stack[-1] and address != fn.start):
            continue
        if address == fn.start or not stack:
            stack.append(fn)
            yield "B", cycle, fn
        elif fn in stack:
            while stack[-1] is not fn:
                yield "E", cycle, stack.pop()
        else:
            yield "E", cycle, stack.pop()
            stack.append(fn)
            yield "B", cycle, fn
    while stack:
        yield "E", last, stack.pop()
    if progress:
        progress(total, total)


def export(program: Program, raw: RawTrace, fmt: str, out: Path, progress: Progress | None = None) -> int:
    """Write the symbolised trace; returns the number of events written."""
    freq = int(raw.header.get("frequency") or 1_000_000_000)
    ns = (lambda cycle: cycle * 1_000_000_000 // freq)
    level = raw.header.get("level", "block")
    if fmt == "chrome":
        return _chrome(program, raw, out, freq, progress)
    if level == "function":
        rows = ({"ns": ns(c), "event": "enter" if ph == "B" else "exit", "function": fn.name,
                 "file": fn.file, "line": fn.line, "address": fn.start} for ph, c, fn in calls(program, raw, progress))
    else:
        rows = (_row(program, c, a, z, ns(c)) for c, a, z in _progress(raw, progress))
    count = 0
    with atomic_file(out, "w") as f:
        if fmt == "json":
            f.write('{"format": "virsim-trace", "version": 1, "level": %s, "truncated": %s, "note": %s, "events": [\n'
                    % (json.dumps(level), json.dumps(bool(raw.header.get("truncated"))), json.dumps(note(raw.header))))
            for row in rows:
                f.write(("" if count == 0 else ",\n") + json.dumps(row))
                count += 1
            f.write("\n]}\n")
        else:
            f.write(f"# virsim trace: level {level}, {len(raw)} events recorded, time in ns of virtual time\n")
            if note(raw.header):
                f.write(f"# {note(raw.header)}\n")
            for row in rows:
                f.write(_text_line(row) + "\n")
                count += 1
    return count


def _progress(raw: RawTrace, progress: Progress | None) -> Iterator[tuple[int, int, int]]:
    total = len(raw)
    for i, event in enumerate(raw.events()):
        if progress and i % 20000 == 0:
            progress(i, total)
        yield event
    if progress:
        progress(total, total)


def _row(program: Program, cycle: int, address: int, size: int, ns: int) -> dict[str, Any]:
    fn = program.function_at(address)
    line = program.line_at(address)
    return {"ns": ns, "cycle": cycle, "address": address, "size": size,
            "function": fn.name if fn else None, "offset": address - fn.start if fn else None,
            "file": line.file if line else None, "line": line.line if line else None}


def _text_line(row: dict[str, Any]) -> str:
    if "event" in row:
        where = f"  {row['file']}:{row['line']}" if row.get("file") else ""
        return f"{row['ns']:>14}  {row['event']:<5}  {row['function']}{where}"
    sym = f"{row['function']}+{row['offset']:#x}" if row["function"] else "?"
    where = f"  {row['file']}:{row['line']}" if row["file"] else ""
    return f"{row['ns']:>14}  {row['address']:#010x}  {sym}{where}"


def _chrome(program: Program, raw: RawTrace, out: Path, freq: int, progress: Progress | None) -> int:
    count = 0
    with atomic_file(out, "w") as f:
        other = {"source": "virsim", "level": raw.header.get("level"), "events_recorded": len(raw),
                 "clock": "virtual time (ts in µs)", "note": note(raw.header)}
        f.write('{"displayTimeUnit": "ns", "otherData": %s, "traceEvents": [\n' % json.dumps(other))
        f.write(json.dumps({"name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": {"name": "cpu0"}}))
        for ph, cycle, fn in calls(program, raw, progress):
            event = {"name": fn.name, "cat": "function", "ph": ph, "ts": cycle * 1_000_000 / freq, "pid": 1, "tid": 1}
            if ph == "B":
                event["args"] = {"file": fn.file, "line": fn.line, "address": f"{fn.start:#x}"}
            f.write(",\n" + json.dumps(event))
            count += 1
        f.write("\n]}\n")
    return count
