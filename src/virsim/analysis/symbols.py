"""What an ELF says about its code: functions (ELF symbols) and source lines (DWARF line table).

`Program.load(elf)` reads both once; `function_at(addr)` and `line_at(addr)` answer by bisection.
Thumb addresses are stored without bit 0 (code addresses, as the CPU fetches them).

Where the sources are: a DWARF path that is relative (firmware built with
`-fdebug-prefix-map=<dir>=.`, like the examples) is relative to the directory the program was
uploaded from, `source_dir()`. Coverage reports resolve file names with it, and the gdb command
`virsim debug gdb` prints maps the ELF's relative compilation dirs (`relative_comp_dirs()`) there."""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from virsim.errors import InvalidInput


@dataclass(frozen=True)
class Function:
    name: str
    start: int
    end: int  # exclusive
    file: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class LineRow:
    """One statement row of the line table: code at `address` belongs to `file`:`line`."""

    address: int
    file: str
    line: int


@dataclass
class Program:
    path: Path
    functions: list[Function] = field(default_factory=list)  # sorted by start
    rows: list[LineRow] = field(default_factory=list)  # statement rows, sorted by address
    ranges: list[tuple[int, int]] = field(default_factory=list)  # [start, end) of each row's code
    base: int = 0  # lowest and highest address of loadable code/data (the drcov module)
    end: int = 0

    @classmethod
    def load(cls, elf: Path) -> Program:
        try:
            with elf.open("rb") as f:
                e = ELFFile(f)
                prog = cls(path=elf)
                prog._segments(e)
                prog._functions(e)
                prog._lines(e)
        except (OSError, ELFError) as err:
            raise InvalidInput(f"{elf}: cannot read the program's symbols ({err})", file=str(elf)) from err
        prog._place_functions()
        return prog

    # ------------------------------------------------------------------------------- reading
    def _segments(self, e: ELFFile) -> None:
        loads = [s for s in e.iter_segments() if s["p_type"] == "PT_LOAD" and s["p_memsz"]]
        if loads:
            self.base = min(s["p_vaddr"] for s in loads)
            self.end = max(s["p_vaddr"] + s["p_memsz"] for s in loads)

    def _functions(self, e: ELFFile) -> None:
        seen: dict[int, Function] = {}
        for section in e.iter_sections():
            if not isinstance(section, SymbolTableSection):
                continue
            for sym in section.iter_symbols():
                if sym["st_info"]["type"] != "STT_FUNC" or not sym.name or sym["st_shndx"] == "SHN_UNDEF":
                    continue
                start = sym["st_value"] & ~1
                size = sym["st_size"] or 2
                if start not in seen or seen[start].name.startswith("$"):
                    seen[start] = Function(sym.name, start, start + size)
        self.functions = sorted(seen.values(), key=lambda f: f.start)

    def _lines(self, e: ELFFile) -> None:
        if not e.has_dwarf_info():
            return
        dwarf = e.get_dwarf_info()
        rows: dict[int, LineRow] = {}
        row_end: dict[int, int] = {}  # a row's code runs up to the next row of its sequence
        for cu in dwarf.iter_CUs():
            prog = dwarf.line_program_for_CU(cu)
            if prog is None:
                continue
            names = _file_names(prog, cu)
            version = prog.header["version"]
            sequence: list[tuple[int, str, int]] = []
            for entry in prog.get_entries():
                state = entry.state
                if state is None:
                    continue
                if state.end_sequence:
                    _close_sequence(sequence, state.address & ~1, rows, row_end)
                    sequence = []
                elif state.is_stmt:
                    index = state.file if version >= 5 else state.file - 1
                    name = names[index] if 0 <= index < len(names) else f"<file {state.file}>"
                    sequence.append((state.address & ~1, name, state.line))
        self.rows = sorted(rows.values(), key=lambda r: r.address)
        self.ranges = [(r.address, row_end.get(r.address, r.address + 2)) for r in self.rows]

    def _place_functions(self) -> None:
        """Give each function the file and line of its first statement."""
        starts = [r.address for r in self.rows]
        placed = []
        for fn in self.functions:
            i = bisect.bisect_left(starts, fn.start)
            if i < len(self.rows) and self.rows[i].address < fn.end:
                placed.append(Function(fn.name, fn.start, fn.end, self.rows[i].file, self.rows[i].line))
            else:
                placed.append(fn)
        self.functions = placed
        self._fn_starts = [f.start for f in self.functions]
        self._row_starts = starts

    # ------------------------------------------------------------------------------ queries
    def function_at(self, address: int) -> Function | None:
        i = bisect.bisect_right(self._fn_starts, address) - 1
        if i >= 0 and address < self.functions[i].end:
            return self.functions[i]
        return None

    def function_named(self, name: str) -> Function | None:
        return next((f for f in self.functions if f.name == name), None)

    def line_at(self, address: int) -> LineRow | None:
        i = bisect.bisect_right(self._row_starts, address) - 1
        if i >= 0 and address < self.ranges[i][1]:
            return self.rows[i]
        return None

    def resolve(self, text: str) -> int:
        """A symbol name or a number (0x...) -> an address."""
        fn = self.function_named(text)
        if fn is not None:
            return fn.start
        try:
            return int(text, 0)
        except ValueError:
            raise InvalidInput(f"{text!r} is neither a function of {self.path.name} nor an address",
                               field="range", value=text) from None


def source_dir(uploaded_from: str | None) -> Path | None:
    """The directory relative DWARF paths resolve against: the one the program was uploaded from
    (the store's `programs.source`), if it still exists."""
    if not uploaded_from:
        return None
    directory = Path(uploaded_from).parent
    return directory if directory.is_dir() else None


def relative_comp_dirs(elf: Path) -> list[str]:
    """The relative DW_AT_comp_dir values of `elf`'s compilation units, each once, in order."""
    out: list[str] = []
    try:
        with elf.open("rb") as f:
            e = ELFFile(f)
            if not e.has_dwarf_info():
                return []
            for cu in e.get_dwarf_info().iter_CUs():
                attr = cu.get_top_DIE().attributes.get("DW_AT_comp_dir")
                comp_dir = _text(attr.value) if attr is not None else ""
                if comp_dir and not os.path.isabs(comp_dir) and comp_dir not in out:
                    out.append(comp_dir)
    except (OSError, ELFError) as err:
        raise InvalidInput(f"{elf}: cannot read the program's debug info ({err})", file=str(elf)) from err
    return out


def _close_sequence(sequence: list[tuple[int, str, int]], end: int, rows: dict[int, LineRow],
                    row_end: dict[int, int]) -> None:
    for i, (address, name, line) in enumerate(sequence):
        nxt = sequence[i + 1][0] if i + 1 < len(sequence) else end
        if line <= 0 or nxt <= address:
            continue  # line 0 is "no source line"; an empty row has no code
        rows[address] = LineRow(address, name, line)
        row_end[address] = nxt


def _file_names(prog, cu) -> list[str]:  # noqa: ANN001 (pyelftools objects)
    """The line program's file table as paths (directory joined, bytes decoded)."""
    header = prog.header
    dirs = [_text(d) for d in header.get("include_directory", [])]
    comp_dir = _text(cu.get_top_DIE().attributes["DW_AT_comp_dir"].value) \
        if "DW_AT_comp_dir" in cu.get_top_DIE().attributes else ""
    version = header["version"]
    out = []
    for entry in header.get("file_entry", []):
        name = _text(entry.name)
        index = entry.dir_index if version >= 5 else entry.dir_index - 1
        directory = dirs[index] if 0 <= index < len(dirs) else comp_dir
        if version < 5 and entry.dir_index == 0:
            directory = comp_dir
        if directory and not os.path.isabs(name):
            if not os.path.isabs(directory) and comp_dir:
                directory = os.path.join(comp_dir, directory)
            name = os.path.join(directory, name)
        out.append(os.path.normpath(name))
    return out


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
