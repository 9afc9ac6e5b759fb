"""What an ELF says about its code: functions (ELF symbols), source lines (DWARF line table) and
the source function each line of code came from (DWARF subprograms and inlined subroutines).

`Program.load(elf)` reads them once; `function_at(addr)` and `line_at(addr)` answer by bisection.
Thumb addresses are stored without bit 0 (code addresses, as the CPU fetches them).

Attribution (`Program.sources`; `LineRow.function` and `.copy`). Every DW_TAG_subprogram or
DW_TAG_inlined_subroutine DIE with code (low_pc/high_pc or DW_AT_ranges) is one *copy* of a source
function, the one its DW_AT_abstract_origin / DW_AT_specification chain ends at: the out-of-line
code, or one inlined instance. A statement row belongs to one of the copies around its address:
the innermost whose function's source holds the row's line (a function's source runs from its
DW_AT_decl_line to the next function defined in its file), else the innermost. So the lines of an
inlined `static inline` helper are the helper's wherever it was inlined, and the caller keeps its
own lines even where the compiler mixed the helper's instructions into them. An inlined copy whose
DW_AT_entry_pc is at a row's address is around it too (GCC puts the row of the helper's first line
there, a few instructions before the helper's own code). The caller also keeps the line of each
call it inlined (DW_AT_call_file/line), as a row at the inlined copy's entry (`Program.call_sites`).
Code DWARF describes no function for (assembly) belongs to the ELF symbol that holds it.

Code the linker discarded (--gc-sections) keeps its DWARF, relocated to address 0: a subprogram
whose entry is not where an ELF function symbol starts is ignored with everything inside it, and
so is a line-table sequence at 0 unless a function or the entry point is there.

Where the sources are: a DWARF path that is relative (firmware built with
`-fdebug-prefix-map=<dir>=.`, like the examples) is relative to the directory the program was
uploaded from, `source_dir()`. Coverage reports resolve file names with it, and the gdb command
`virsim debug gdb` prints maps the ELF's relative compilation dirs (`relative_comp_dirs()`) there."""

from __future__ import annotations

import bisect
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elftools.common.exceptions import DWARFError, ELFError
from elftools.dwarf.ranges import BaseAddressEntry
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
    """One statement row of the line table: code at `address` belongs to `file`:`line`, and is part of
    copy `copy` of source function `function` (indexes into Program.sources; -1: no function)."""

    address: int
    file: str
    line: int
    function: int = -1
    copy: int = -1


@dataclass(frozen=True)
class SourceFunction:
    """A function as its source has it. Its code is an out-of-line copy, copies inlined into its
    callers, or both; `entries` says where each copy is entered (out-of-line first, then inlined)."""

    name: str
    file: str
    line: int
    entries: tuple[int, ...]
    inlined: int = 0  # how many of the copies are inlined


Key = tuple[str, str | None, int | None]  # a source function: name, declaring file and line


@dataclass
class _Copy:
    """One DWARF function DIE with code: an out-of-line subprogram or an inlined instance."""

    key: Key
    ranges: list[tuple[int, int]]
    entry: int
    depth: int  # how many function scopes enclose it
    parent: int  # the enclosing copy (index), -1 for none
    inlined: bool = False
    call: tuple[str, int] | None = None  # an inlined copy's call site, a line of its parent


@dataclass
class Program:
    path: Path
    functions: list[Function] = field(default_factory=list)  # sorted by start
    rows: list[LineRow] = field(default_factory=list)  # statement rows, sorted by address
    ranges: list[tuple[int, int]] = field(default_factory=list)  # [start, end) of each row's code
    sources: list[SourceFunction] = field(default_factory=list)  # source functions that have code
    call_sites: list[LineRow] = field(default_factory=list)  # a caller's line for each call it inlined
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
                scopes = prog._lines(e)
        except (OSError, ELFError, DWARFError) as err:
            raise InvalidInput(f"{elf}: cannot read the program's symbols ({err})", file=str(elf)) from err
        prog._place_functions()
        if scopes is not None:
            prog._attribute(scopes)
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

    def _lines(self, e: ELFFile) -> _Scopes | None:
        """Read the line table into rows; return the DWARF function copies (for _attribute)."""
        if not e.has_dwarf_info():
            return None
        dwarf = e.get_dwarf_info()
        rows: dict[int, LineRow] = {}
        row_end: dict[int, int] = {}  # a row's code runs up to the next row of its sequence
        scopes = _Scopes(dwarf, {f.start for f in self.functions})
        # --gc-sections leaves the line table of the code it dropped in place, relocated to address
        # 0: a sequence there is dropped code unless a function (or the entry point) is at 0.
        code_at_0 = e.header["e_entry"] & ~1 == 0 or any(f.start == 0 for f in self.functions)
        for cu in dwarf.iter_CUs():
            prog = dwarf.line_program_for_CU(cu)
            if prog is None:
                continue
            scopes.read(cu)
            sequence: list[tuple[int, str, int]] = []
            for entry in prog.get_entries():
                state = entry.state
                if state is None:
                    continue
                if state.end_sequence:
                    if code_at_0 or not sequence or sequence[0][0] != 0:
                        _close_sequence(sequence, state.address & ~1, rows, row_end)
                    sequence = []
                elif state.is_stmt:
                    sequence.append((state.address & ~1, scopes.file(cu, state.file), state.line))
        self.rows = sorted(rows.values(), key=lambda r: r.address)
        self.ranges = [(r.address, row_end.get(r.address, r.address + 2)) for r in self.rows]
        return scopes

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

    def _attribute(self, scopes: _Scopes) -> None:
        """Give each row its function and copy (the module docstring has the rule)."""
        copies, starts = scopes.copies, self._row_starts
        around: list[list[int]] = [[] for _ in self.rows]  # copies whose code holds the row's address
        entered: dict[int, list[int]] = {}  # rows where an inlined copy is entered
        for index, copy in enumerate(copies):
            for lo, hi in copy.ranges:
                for k in range(bisect.bisect_left(starts, lo), bisect.bisect_left(starts, hi)):
                    around[k].append(index)
            k = bisect.bisect_left(starts, copy.entry)
            if copy.inlined and k < len(starts) and starts[k] == copy.entry:
                entered.setdefault(k, []).append(index)
        owner = []
        by_symbol: dict[int, int] = {}
        for k, row in enumerate(self.rows):
            candidates = sorted(set(around[k] + entered.get(k, [])), key=lambda i: -copies[i].depth)
            chosen = next((i for i in candidates if scopes.holds(copies[i].key, row.file, row.line)), None)
            if chosen is None and candidates:
                chosen = max(around[k] or candidates, key=lambda i: copies[i].depth)
            fn = self.function_at(row.address) if chosen is None else None
            if fn is not None:  # code DWARF describes no function for: its ELF symbol's
                if fn.start not in by_symbol:
                    by_symbol[fn.start] = len(copies)
                    copies.append(_Copy((fn.name, None, None), [(fn.start, fn.end)], fn.start, 0, -1))
                chosen = by_symbol[fn.start]
            owner.append(-1 if chosen is None else chosen)
        rows_of: dict[Key, list[tuple[LineRow, _Copy]]] = {}
        for k, index in enumerate(owner):
            if index >= 0:
                rows_of.setdefault(copies[index].key, []).append((self.rows[k], copies[index]))
        number = {key: i for i, key in enumerate(rows_of)}  # functions with lines of their own
        self.sources = [self._source(key, [c for c in copies if c.key == key], rows) for key, rows in rows_of.items()]
        self.rows = [LineRow(r.address, r.file, r.line, number[copies[owner[k]].key], owner[k]) if owner[k] >= 0
                     else r for k, r in enumerate(self.rows)]
        for copy in copies:
            parent = copies[copy.parent] if copy.parent >= 0 else None
            if copy.call is not None and parent is not None and parent.key in number:
                self.call_sites.append(LineRow(copy.entry, copy.call[0], copy.call[1], number[parent.key],
                                               copy.parent))

    @staticmethod
    def _source(key: Key, copies: list[_Copy], rows: list[tuple[LineRow, _Copy]]) -> SourceFunction:
        """A source function's place: the first statement of its out-of-line copy from its entry on
        (the line a debugger stops at), else the first of its lines in its own file."""
        name, decl_file, _ = key
        outline = [c for c in copies if not c.inlined]
        inlined = [c for c in copies if c.inlined]
        entries = tuple(c.entry for c in outline) + tuple(sorted(c.entry for c in inlined))
        first = [r for r, c in rows if outline and c is outline[0] and r.address >= c.entry]
        if first:
            place = min(first, key=lambda r: r.address)
        else:
            own = [r for r, _ in rows if r.file == decl_file] or [r for r, _ in rows]
            place = min((r for r in own if r.file == own[0].file), key=lambda r: r.line)
        return SourceFunction(name, place.file, place.line, entries, len(inlined))

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


class _Scopes:
    """Walks each CU's DIE tree for function copies (DW_TAG_subprogram and DW_TAG_inlined_subroutine
    DIEs with code, each with the source function it is a copy of), and notes where in its file
    each function is defined, so that `holds` can tell which function's source a line is in."""

    FUNCTION_TAGS = ("DW_TAG_subprogram", "DW_TAG_inlined_subroutine")

    def __init__(self, dwarf, symbol_starts: set[int]) -> None:  # noqa: ANN001 (pyelftools DWARFInfo)
        self.dwarf = dwarf
        self.ranges = dwarf.range_lists()
        self.symbol_starts = symbol_starts  # an out-of-line copy must start where an ELF function does
        self.copies: list[_Copy] = []
        self._tables: dict[int, tuple[list[str], int]] = {}  # CU offset -> file table, line table version
        self._defined: dict[str, set[int]] = {}  # file -> the lines functions are defined at
        self._sorted: dict[str, list[int]] = {}

    def file(self, cu, index: int) -> str:  # noqa: ANN001
        """File number `index` of the CU's line table (0-based from DWARF 5 on, 1-based before), as
        a row's file or a DIE's DW_AT_decl_file / DW_AT_call_file gives it."""
        if cu.cu_offset not in self._tables:
            prog = self.dwarf.line_program_for_CU(cu)
            self._tables[cu.cu_offset] = (_file_names(prog, cu), prog.header["version"]) if prog is not None else ([], 5)
        names, version = self._tables[cu.cu_offset]
        i = index if version >= 5 else index - 1
        return names[i] if 0 <= i < len(names) else f"<file {index}>"

    def holds(self, key: Key, file: str, line: int) -> bool:
        """Whether `file`:`line` is in the source of function `key`: from the line it is defined
        at up to the next function defined in that file."""
        _, decl_file, decl_line = key
        if decl_file != file or decl_line is None or line < decl_line:
            return False
        if file not in self._sorted:
            self._sorted[file] = sorted(self._defined.get(file, ()))
        lines = self._sorted[file]
        i = bisect.bisect_right(lines, decl_line)
        return i == len(lines) or line < lines[i]

    def read(self, cu) -> None:  # noqa: ANN001
        top = cu.get_top_DIE()
        base = top.attributes["DW_AT_low_pc"].value if "DW_AT_low_pc" in top.attributes else 0
        self._walk(top, cu, base, -1, 0)

    def _walk(self, die, cu, base: int, parent: int, depth: int) -> None:  # noqa: ANN001
        for child in die.iter_children():
            index: int | None = parent
            if child.tag in self.FUNCTION_TAGS and "DW_AT_declaration" not in child.attributes:
                key = self._origin(child)
                if child.tag == "DW_TAG_subprogram" and key[1] is not None and key[2] is not None:
                    self._defined.setdefault(key[1], set()).add(key[2])
                index = self._copy(child, key, cu, base, parent, depth)
                if index is None:
                    continue  # discarded by the linker: so is everything inside it
            self._walk(child, cu, base, index, depth + (index != parent))

    def _copy(self, die, key: Key, cu, base: int, parent: int, depth: int) -> int | None:  # noqa: ANN001
        """Record the DIE as a copy if it has code; returns the index that encloses its children
        (its own, or `parent` for an abstract instance), None for a discarded subprogram."""
        ranges = self._code(die, cu, base)
        if not ranges:
            return parent
        attrs = die.attributes
        if "DW_AT_entry_pc" in attrs:
            entry = attrs["DW_AT_entry_pc"].value
            if not _is_address(attrs["DW_AT_entry_pc"].form):
                entry += ranges[0][0]  # DWARF 5: an offset from the copy's base address
        elif "DW_AT_low_pc" in attrs:
            entry = attrs["DW_AT_low_pc"].value
        else:
            entry = ranges[0][0]  # DWARF's rule without either: the start of the first range
        entry &= ~1
        inlined = die.tag == "DW_TAG_inlined_subroutine"
        if not inlined and self.symbol_starts and entry not in self.symbol_starts:
            return None
        call = None
        if inlined and "DW_AT_call_line" in attrs and "DW_AT_call_file" in attrs:
            call = self.file(cu, attrs["DW_AT_call_file"].value), attrs["DW_AT_call_line"].value
        self.copies.append(_Copy(key, ranges, entry, depth, parent, inlined, call))
        return len(self.copies) - 1

    def _code(self, die, cu, base: int) -> list[tuple[int, int]]:  # noqa: ANN001
        """The DIE's code as [lo, hi) ranges: DW_AT_ranges, or low_pc/high_pc."""
        attrs = die.attributes
        out = []
        if "DW_AT_ranges" in attrs and self.ranges is not None:
            for entry in self.ranges.get_range_list_at_offset(attrs["DW_AT_ranges"].value, cu=cu):
                if isinstance(entry, BaseAddressEntry):
                    base = entry.base_address
                elif entry.is_absolute:
                    out.append((entry.begin_offset, entry.end_offset))
                else:
                    out.append((base + entry.begin_offset, base + entry.end_offset))
        elif "DW_AT_low_pc" in attrs and "DW_AT_high_pc" in attrs:
            lo, high = attrs["DW_AT_low_pc"].value, attrs["DW_AT_high_pc"]
            out.append((lo, high.value if _is_address(high.form) else lo + high.value))
        return [(lo & ~1, hi & ~1) for lo, hi in out if hi > lo]

    def _origin(self, die) -> Key:  # noqa: ANN001
        """The source function a copy is of: name (linkage name first), declaring file and line,
        found along DW_AT_abstract_origin / DW_AT_specification."""
        name = linkage = decl_file = decl_line = None
        for _ in range(8):  # the chain is short (concrete -> abstract -> declaration); a loop would be a bug
            attrs = die.attributes
            linkage = linkage or _attr_text(attrs, "DW_AT_linkage_name") or _attr_text(attrs, "DW_AT_MIPS_linkage_name")
            name = name or _attr_text(attrs, "DW_AT_name")
            if decl_file is None and "DW_AT_decl_file" in attrs:
                decl_file = self.file(die.cu, attrs["DW_AT_decl_file"].value)
                decl_line = attrs["DW_AT_decl_line"].value if "DW_AT_decl_line" in attrs else None
            ref = next((a for a in ("DW_AT_abstract_origin", "DW_AT_specification") if a in attrs), None)
            if ref is None:
                break
            die = die.get_DIE_from_attribute(ref)
        return linkage or name or f"<function at DIE {die.offset:#x}>", decl_file, decl_line


def _is_address(form: str) -> bool:
    return form.startswith("DW_FORM_addr") or form == "DW_FORM_GNU_addr_index"


def _attr_text(attrs: Mapping[str, Any], name: str) -> str | None:
    return _text(attrs[name].value) if name in attrs else None


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
