"""The session screen's panes. Each is a widget that draws what the session screen hands it and
asks the daemon through `app.request` (worker threads): console, registers, source, breakpoints,
memory, call stack, snapshots and coverage, nodes (multi-node boards), peripherals."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.events import Key
from textual.widgets import DataTable, Input, Static

from virsim import protocol as p
from virsim.bytestext import hexdump_lines, unescape
from virsim.tui.console_view import ConsoleView
from virsim.tui.dialogs import Confirm, Prompt
from virsim.tui.format import vtime
from virsim.tui.peripherals import MAPS, Register, blocks, decode, from_svd

if TYPE_CHECKING:
    from virsim.tui.session import SessionScreen

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
HISTORY_BYTES = 256 * 1024  # console history read when the pane opens
LINES_PER_FEED = 2000  # lines drawn of one chunk at most: a faster stream than anyone reads is thinned on screen
CHANGED = "black on yellow"  # a register whose value differs from the previous stop's
RAW_KEYS = {"enter": b"\r", "tab": b"\t", "backspace": b"\x7f", "escape": b"\x1b", "up": b"\x1b[A",
            "down": b"\x1b[B", "right": b"\x1b[C", "left": b"\x1b[D"}


class Pane(Vertical):
    """A titled, hideable part of the session screen."""

    TITLE = ""

    def __init__(self, screen: SessionScreen, **kw: Any) -> None:
        super().__init__(**kw)
        self.session_screen = screen
        self.border_title = self.TITLE

    @property
    def sid(self) -> str:
        return self.session_screen.sid

    def request(self, fn: Any, done: Any = None, what: str = "", quiet: bool = False) -> None:
        self.app.request(fn, done, what, quiet=quiet)  # type: ignore[attr-defined]

    def debug(self, action: str, done: Any = None, what: str = "", **fields: Any) -> None:
        node = self.session_screen.node
        self.request(lambda c: c.debug(action, self.sid, node=node, **fields), done, what or f"debug {action}")

    def on_stop(self, stop: p.StopInfo | None) -> None:
        """The target stopped (or the pane was just shown): refresh what depends on it."""


# ---------------------------------------------------------------------------------------- console


class ConsolePane(Pane):
    TITLE = "console"
    BINDINGS = [Binding("ctrl+f", "search", "Search console"), Binding("ctrl+t", "raw", "Raw keys on/off"),
                Binding("ctrl+y", "copy", "Copy console"), Binding("escape", "leave", "Leave console", show=False)]

    def __init__(self, screen: SessionScreen, scrollback: int, **kw: Any) -> None:
        super().__init__(screen, **kw)
        self.scrollback = scrollback
        self.pos: int | None = None  # the log offset shown up to; None until the history is read
        self.raw = False
        self.query_text = ""
        self.received = 0  # console bytes that reached the pane
        self.thinned = 0  # lines left out on screen so far
        self.skipped = 0  # bytes the link left out while the UI caught up (all in the log)

    def compose(self) -> ComposeResult:
        yield ConsoleView(self.scrollback, id="console-log")
        yield Input(placeholder=r"send: text + Enter (escapes: \r \n \x03); ctrl+t: raw keys", id="console-input")

    def on_mount(self) -> None:
        self.request(lambda c: c.console_read(self.sid, tail=HISTORY_BYTES), self._history, "console history")

    def _history(self, chunk: p.ConsoleChunk) -> None:
        self._write(chunk.data.encode("latin-1"))
        self.pos = chunk.end

    def _write(self, data: bytes) -> None:
        self.received += len(data)
        text = ANSI.sub("", data.decode("latin-1").replace("\r\n", "\n").replace("\r", ""))
        log = self.query_one(ConsoleView)
        # Drawing a line costs the UI thread microseconds; a firmware printing 100k lines a
        # second would freeze it. Past LINES_PER_FEED lines in one chunk, the middle is left out
        # on screen (every byte is in the console log on disk) and a marker says so.
        cut = -1
        for _ in range(LINES_PER_FEED):
            cut = text.rfind("\n", 0, cut if cut >= 0 else len(text) - 1)
            if cut < 0:
                break
        if cut > 0:
            head_end = text.find("\n")
            dropped = text.count("\n", head_end + 1, cut + 1)
            self.thinned += dropped
            text = f"{text[:head_end + 1]}… {dropped} lines not drawn (too fast to read; all are in the log: " \
                   f"virsim console {self.sid}) …\n{text[cut + 1:]}"
        log.write(text)

    def feed(self, offset: int, data: bytes, skipped: int = 0) -> None:
        if self.pos is None:
            return  # the history read answers for these bytes too
        if skipped and offset >= self.pos:  # the link left these out while the UI caught up
            self.skipped += skipped
            self.query_one(ConsoleView).write(f"\n… {skipped} bytes not drawn (in the log: virsim console {self.sid}) …\n")
            self.pos = offset
        if offset > self.pos:  # a gap (events dropped): read the log for it first
            start = self.pos
            self.pos = None
            self.request(lambda c: c.console_read(self.sid, offset=start), self._history, "console")
            return
        if offset + len(data) > self.pos:
            self._write(data[self.pos - offset:])
            self.pos = offset + len(data)

    def text(self) -> str:
        return "\n".join(self.query_one(ConsoleView).all_lines())

    @on(Input.Submitted, "#console-input")
    def _send(self, event: Input.Submitted) -> None:
        data = unescape(event.value)
        if not data.endswith((b"\n", b"\r")):
            data += b"\n"
        event.input.value = ""
        self.send(data)

    def send(self, data: bytes) -> None:
        self.request(lambda c: c.console_send(self.sid, data), None, "console send")

    def action_leave(self) -> None:
        if self.raw:
            self.action_raw()
        self.screen.query_one("#source DataTable").focus()

    def action_raw(self) -> None:
        self.raw = not self.raw
        self.border_subtitle = "RAW KEYS: typing goes to the UART (ctrl+t ends)" if self.raw else ""
        view = self.query_one(ConsoleView)
        view.focus() if self.raw else self.query_one("#console-input").focus()

    def on_key(self, event: Key) -> None:
        if not self.raw or event.key == "ctrl+t":
            return
        data = RAW_KEYS.get(event.key)
        if data is None and event.key.startswith("ctrl+") and len(event.key) == 6 and event.key[5].isalpha():
            data = bytes([ord(event.key[5]) & 0x1F])
        if data is None and event.character and event.is_printable:
            data = event.character.encode()
        if data:
            event.stop()
            event.prevent_default()
            self.send(data)

    def action_search(self) -> None:
        def found(text: str | None) -> None:
            if not text:
                return
            self.query_text = text
            view = self.query_one(ConsoleView)
            lines = view.all_lines()
            start = int(view.scroll_y) + 1
            order = list(range(start, len(lines))) + list(range(0, start))
            hit = next((i for i in order if text in lines[i]), None)
            if hit is None:
                self.app.notify(f"{text!r} is not in the console's last {len(lines)} lines", severity="warning")
                return
            view.show_line(hit)
            self.border_subtitle = f"{text!r} at line {hit + 1} of {len(lines)} (ctrl+f again: next; end: follow)"
        self.app.push_screen(Prompt("Search the console for:", self.query_text), found)

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.text())
        self.app.notify(f"copied {self.query_one(ConsoleView).line_count} console lines")


# -------------------------------------------------------------------------------------- registers


class RegistersPane(Pane):
    TITLE = "registers"

    def compose(self) -> ComposeResult:
        yield Static("", id="regs")
        yield Static("", id="fault")

    def __init__(self, screen: SessionScreen, **kw: Any) -> None:
        super().__init__(screen, **kw)
        self.cells: dict[str, Text] = {}  # register -> its value as drawn (changed ones highlighted)
        self.changed: list[str] = []
        self.stop_seq: int | None = None  # the stop the registers shown were read at

    def on_stop(self, stop: p.StopInfo | None) -> None:
        if stop is None:  # running: registers are read at stops (p pauses)
            self.query_one("#regs", Static).update(Text("running: registers show at the next stop (p pauses)",
                                                        style="dim"))
            self._show_fault(None)
            return
        seq = stop.seq
        self.debug("regs", lambda regs: self._general(regs, seq), "registers", scope="general")
        self._show_fault(stop)

    def _general(self, regs: p.RegisterList, seq: int | None) -> None:
        self.debug("regs", lambda system: self._draw(regs, system, seq), "system registers", scope="system")

    def _draw(self, general: p.RegisterList, system: p.RegisterList, seq: int | None) -> None:
        table = Table.grid(padding=(0, 1))
        for _ in range(3):
            table.add_column(justify="right", style="bold")
            table.add_column()
        cells: list[Any] = []
        registers = [*general.registers, *system.registers]
        self.cells = {}
        for reg in registers:
            value = self.cells[reg.name] = Text(f"{reg.value:#010x}", style=CHANGED if reg.changed else "")
            cells += [reg.name, value]
            if len(cells) == 6:
                table.add_row(*cells)
                cells = []
        if cells:
            table.add_row(*cells)
        self.query_one("#regs", Static).update(table)
        self.changed = [r.name for r in registers if r.changed]
        self.stop_seq = seq

    def _show_fault(self, stop: p.StopInfo | None) -> None:
        fault = stop.fault if stop is not None else None
        widget = self.query_one("#fault", Static)
        if not fault:
            widget.update("")
            return
        text = Text(f"FAULT: {fault.get('summary') or fault.get('handler')}\n", style="bold red")
        for bit in fault.get("bits") or []:
            name = bit.get("bit") if isinstance(bit, dict) else str(bit)
            meaning = bit.get("meaning") or bit.get("description") if isinstance(bit, dict) else None
            register = bit.get("register") if isinstance(bit, dict) else None
            text.append(f"  {register + '.' if register else ''}{name}" + (f": {meaning}" if meaning else "") + "\n")
        if fault.get("fault_pc") is not None:
            text.append(f"at pc {int(fault['fault_pc']):#010x}")
        if fault.get("fault_location"):
            text.append(f" ({fault['fault_location']})")
        widget.update(text)


# ----------------------------------------------------------------------------------------- source


class SourcePane(Pane):
    TITLE = "source"
    BINDINGS = [Binding("b", "toggle_break", "Breakpoint here"), Binding("D", "toggle_disasm", "Disassembly")]

    def __init__(self, screen: SessionScreen, **kw: Any) -> None:
        super().__init__(screen, **kw)
        self.file: p.SourceFile | None = None
        self.stop_line: int | None = None
        self.disasm = False

    def compose(self) -> ComposeResult:
        table: DataTable[Any] = DataTable(id="source-table", cursor_type="row", show_header=False)
        table.add_columns("mark", "line", "text")
        yield table

    def on_stop(self, stop: p.StopInfo | None) -> None:
        want = stop.file if stop is not None and stop.file else None
        self.stop_line = stop.line if stop is not None else None
        if self.disasm:
            self._load_disasm()
        elif self.file is None or (want and Path(want).name != Path(self.file.file).name):
            self.request(lambda c: c.program_source(self.sid, want), self._loaded, "source")
        else:
            self._draw()

    def _loaded(self, reply: p.SourceFile) -> None:
        self.file = reply
        self.border_title = f"source: {reply.file}" + ("" if reply.path else " (file not found)")
        self._draw()

    def _draw(self) -> None:
        if self.disasm or self.file is None:
            return
        table = self.query_one(DataTable)
        table.clear()
        marks = self.session_screen.breakpoint_lines(self.file.file)
        code = set(self.file.code_lines)
        for n, text in enumerate(self.file.lines, start=1):
            mark = ("▶" if n == self.stop_line else " ") + ("●" if n in marks else ("·" if n in code else " "))
            style = "reverse" if n == self.stop_line else ""
            table.add_row(Text(mark, style="bold red" if n in marks else ""), Text(str(n), style="dim"),
                          Text(text, style=style), key=str(n))
        if self.stop_line:
            table.move_cursor(row=self.stop_line - 1)

    def cursor_line(self) -> int | None:
        table = self.query_one(DataTable)
        if self.disasm or not table.row_count:
            return None
        return int(str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value))

    def action_toggle_break(self) -> None:
        line = self.cursor_line()
        if line is None or self.file is None:
            return
        existing = self.session_screen.breakpoint_at(self.file.file, line)
        if existing is not None:
            self.debug("delete", lambda _r: self.session_screen.refresh_breakpoints(), breakpoint=existing)
        else:
            self.debug("break", lambda _r: self.session_screen.refresh_breakpoints(), f"break at line {line}",
                       location=f"{Path(self.file.file).name}:{line}")

    def action_toggle_disasm(self) -> None:
        self.disasm = not self.disasm
        if self.disasm:
            self._load_disasm()
        else:
            self.border_title = f"source: {self.file.file}" if self.file else "source"
            self._draw()

    def _load_disasm(self) -> None:
        self.debug("disasm", self._draw_disasm, "disassembly", count=32, peek=True)

    def _draw_disasm(self, reply: p.Disassembly) -> None:
        self.border_title = "disassembly (D: source)"
        table = self.query_one(DataTable)
        table.clear()
        pc = self.session_screen.stop.pc if self.session_screen.stop else None
        for i, ins in enumerate(reply.instructions):
            where = f"<{ins.function}+{ins.offset}>" if ins.function else ""
            table.add_row("▶" if ins.address == pc else " ", Text(f"{ins.address:08x}", style="dim"),
                          f"{where:<20} {ins.text}", key=f"d{i}")


# ------------------------------------------------------------------------------------ breakpoints


class BreakpointsPane(Pane):
    TITLE = "breakpoints"
    BINDINGS = [Binding("a", "add", "Add break/watch"), Binding("space", "toggle", "Enable/disable"),
                Binding("x", "delete", "Delete breakpoint")]

    def compose(self) -> ComposeResult:
        table: DataTable[Any] = DataTable(id="bp-table", cursor_type="row")
        table.add_columns("ID", "TYPE", "WHERE", "ON", "HITS")
        yield table

    def show(self, bps: list[p.BreakpointInfo]) -> None:
        table = self.query_one(DataTable)
        keep = table.cursor_row
        table.clear()
        for b in bps:
            where = b.location + (f" ({Path(b.file).name}:{b.line})" if b.file and b.line and ":" not in b.location
                                  else "")
            table.add_row(str(b.id), "break" if b.kind == "breakpoint" else f"watch {b.access}", where,
                          "yes" if b.enabled else "no", str(b.hits), key=str(b.id))
        if table.row_count:
            table.move_cursor(row=min(keep, table.row_count - 1))

    def _selected(self) -> int | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return int(str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value))

    def action_add(self) -> None:
        def add(text: str | None) -> None:
            if not text:
                return
            done = lambda _r: self.session_screen.refresh_breakpoints()  # noqa: E731
            if text.startswith(("watch ", "rwatch ", "awatch ")):
                kind, target = text.split(None, 1)
                access = {"watch": "write", "rwatch": "read", "awatch": "access"}[kind]
                self.debug("watch", done, f"watch {target}", target=target, access=access)
            else:
                self.debug("break", done, f"break at {text}", location=text)
        self.app.push_screen(Prompt("Break at (symbol, file:line, *0xADDR) or watch/rwatch/awatch EXPR:",
                                    placeholder="main   hello.c:24   watch counter"), add)

    def action_toggle(self) -> None:
        number = self._selected()
        if number is None:
            return
        enabled = self.query_one(DataTable).get_row(str(number))[3] == "yes"
        self.debug("enable", lambda _r: self.session_screen.refresh_breakpoints(), breakpoint=number,
                   enabled=not enabled)

    def action_delete(self) -> None:
        number = self._selected()
        if number is not None:
            self.debug("delete", lambda _r: self.session_screen.refresh_breakpoints(), breakpoint=number)


# ----------------------------------------------------------------------------------------- memory


class MemoryPane(Pane):
    TITLE = "memory"
    BINDINGS = [Binding("e", "edit", "Edit a word")]

    def __init__(self, screen: SessionScreen, **kw: Any) -> None:
        super().__init__(screen, **kw)
        self.address: str | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder="address or symbol, then Enter (e: edit a word)", id="mem-address")
        dump = Static("", id="mem-dump")
        dump.can_focus = True
        yield dump

    @on(Input.Submitted, "#mem-address")
    def _submitted(self, event: Input.Submitted) -> None:
        self.address = event.value.strip() or None
        self.query_one("#mem-dump").focus()  # where `e` edits
        self.on_stop(None)

    def on_stop(self, stop: p.StopInfo | None) -> None:
        if self.address:
            self.debug("mem", self._show, f"memory at {self.address}", address=self.address, size=64, peek=True)

    def _show(self, chunk: p.MemoryChunk) -> None:
        lines = hexdump_lines(chunk.address, bytes.fromhex(chunk.data))
        head = f"{chunk.symbol} @ {chunk.address:#010x}\n" if chunk.symbol else ""
        self.query_one("#mem-dump", Static).update(Text(head + "\n".join(lines)))

    def action_edit(self) -> None:
        def write(text: str | None) -> None:
            if not text:
                return
            try:
                where, value = text.split()
                word = int(value, 0).to_bytes(4, "little")
            except (ValueError, OverflowError):
                self.app.notify(f"give ADDRESS VALUE, e.g. 0x20000000 0x1234 (got {text!r})", severity="error")
                return
            self.debug("mem_write", lambda _r: self.on_stop(None), f"write {where}", address=where, data=word.hex())
        self.app.push_screen(Prompt("Write a 32-bit word: ADDRESS VALUE", f"{self.address or ''} "), write)


# ------------------------------------------------------------------------------------------ stack


class StackPane(Pane):
    TITLE = "call stack"

    def compose(self) -> ComposeResult:
        yield Static("", id="stack")

    def on_stop(self, stop: p.StopInfo | None) -> None:
        frames = stop.backtrace if stop is not None else []
        lines = []
        for i, frame in enumerate(frames):
            pc = frame.get("pc")
            where = f"{frame.get('file')}:{frame.get('line')}" if frame.get("file") else \
                (f"{pc:#010x}" if isinstance(pc, int) else "")
            lines.append(f"#{i} {frame.get('function') or '??'}  {where}")
        self.query_one("#stack", Static).update("\n".join(lines) or ("running" if stop is None else ""))


# ------------------------------------------------------------------------------ snapshots, coverage


class SnapshotsPane(Pane):
    TITLE = "snapshots · coverage"
    BINDINGS = [Binding("S", "create", "Take snapshot"), Binding("L", "restore", "Restore snapshot")]

    def compose(self) -> ComposeResult:
        table: DataTable[Any] = DataTable(id="snap-table", cursor_type="row")
        table.add_columns("ID", "NAME", "VIRTUAL TIME")
        yield table
        yield Static("", id="coverage")

    def on_stop(self, stop: p.StopInfo | None) -> None:
        caps = self.session_screen.info.capabilities if self.session_screen.info else []
        if "snapshot" in caps:
            self.request(lambda c: c.snapshot("list", self.sid), self._list, "snapshots")
        if "coverage" in caps:
            self.request(lambda c: c.request("coverage.report", self.sid), self._coverage, quiet=True)

    def _list(self, reply: p.SnapshotListReply) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for snap in reply.snapshots:
            table.add_row(snap.id, snap.name or "", vtime(snap.virtual_ns), key=snap.id)

    def _coverage(self, report: p.CoverageReport) -> None:
        self.query_one("#coverage", Static).update(
            f"coverage{'' if report.active else ' (stopped)'}: {report.lines_hit}/{report.lines_found} lines, "
            f"{report.functions_hit}/{report.functions_found} functions" if report.lines_found else "")

    def action_create(self) -> None:
        def take(name: str | None) -> None:
            self.request(lambda c: c.snapshot("create", self.sid, name=name), lambda _r: self.on_stop(None),
                         "snapshot")
        self.app.push_screen(Prompt("Snapshot name (empty: none):"), take)

    def action_restore(self) -> None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return
        snap = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

        def go(yes: bool | None) -> None:
            if yes:
                self.request(lambda c: c.snapshot("restore", self.sid, snapshot=snap), None, "restore")
        self.app.push_screen(Confirm(f"Restore snapshot {snap}? The session's current state is lost."), go)


# ------------------------------------------------------------------------------------------ nodes


class NodesPane(Pane):
    TITLE = "nodes · synchroniser"

    def compose(self) -> ComposeResult:
        yield Static("", id="nodes")

    def show(self, info: p.SessionInfo) -> None:
        table = Table("NODE", "BACKEND", "STATE", "VIRTUAL TIME", "BARRIER WAIT", box=None, padding=(0, 1))
        for n in info.nodes:
            table.add_row(str(n.get("node")), str(n.get("backend")), str(n.get("state")), vtime(n.get("virtual_ns")),
                          f"{n['barrier_wait_s']:.3f} s" if n.get("barrier_wait_s") is not None else "")
        sync = info.sync or {}
        caption = (f"sync {sync.get('mode')}, quantum {sync.get('quantum_cycles')} cycles, {sync.get('quanta')} "
                   f"quanta, barrier wait {sync.get('barrier_wait_s', 0):.3f} s") if sync else ""
        self.query_one("#nodes", Static).update(table)
        self.border_subtitle = caption
        self.shown = [str(n.get("node")) for n in info.nodes]


# ------------------------------------------------------------------------------------ peripherals


class PeripheralsPane(Pane):
    """The board's peripherals; the one under the cursor decoded register by register, read at
    every stop (with --peek while the target runs)."""

    TITLE = "peripherals"

    def __init__(self, screen: SessionScreen, **kw: Any) -> None:
        super().__init__(screen, **kw)
        self.items: list[dict[str, Any]] = []
        self.values: dict[str, int] = {}  # register -> value, of the peripheral shown

    def compose(self) -> ComposeResult:
        table: DataTable[Any] = DataTable(id="periph-table", cursor_type="row")
        table.add_columns("PERIPHERAL", "TYPE", "ADDRESS", "IRQ")
        yield table
        yield Static("", id="periph-regs")

    def show_board(self, peripherals: list[dict[str, Any]]) -> None:
        node = self.session_screen.node
        items = [ph for ph in peripherals if node is None or ph["node"] == node]
        if items == self.items:
            return
        self.items = items
        table = self.query_one(DataTable)
        table.clear()
        for i, ph in enumerate(items):
            table.add_row(ph["id"], ph["type"], f"{ph['address']:#010x}", "" if ph["irq"] is None else str(ph["irq"]),
                          key=str(i))

    def selected(self) -> dict[str, Any] | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return self.items[int(str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value))]

    @on(DataTable.RowHighlighted, "#periph-table")
    def _highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self.on_stop(self.session_screen.stop)

    def on_stop(self, stop: p.StopInfo | None) -> None:
        ph = self.selected()
        widget = self.query_one("#periph-regs", Static)
        if ph is None:
            return
        registers = self.registers(ph)
        if registers is None:
            why = f"{ph['svd_error']}; " if ph.get("svd_error") else ""
            widget.update(Text(f"{why}no register map for {ph['type']} (a {ph['size']:#x}-byte window at "
                               f"{ph['address']:#010x}: see the memory pane)", style="dim"))
            return
        self.values = {}
        pending = blocks(registers)
        for offset, size in pending:
            self.debug("mem", lambda chunk, ph=ph, offset=offset: self._read(ph, offset, chunk),
                       f"{ph['id']} registers", address=hex(ph["address"] + offset), size=size, peek=True)

    @staticmethod
    def registers(ph: dict[str, Any]) -> tuple[Register, ...] | None:
        """From the board's SVD file when it describes this peripheral, else virsim's own map."""
        return from_svd(ph["registers"]) if ph.get("registers") else MAPS.get(ph["type"])

    def _read(self, ph: dict[str, Any], offset: int, chunk: p.MemoryChunk) -> None:
        if ph is not self.selected():
            return  # the cursor moved on meanwhile
        data = bytes.fromhex(chunk.data)
        for i in range(0, len(data) - 3, 4):
            self.values[f"{offset + i:#x}"] = int.from_bytes(data[i:i + 4], "little")
        self._draw(ph)

    def _draw(self, ph: dict[str, Any]) -> None:
        irq_names = {x["irq"]: x["id"] for x in self.items if x["irq"] is not None}
        table = Table.grid(padding=(0, 1))
        table.add_column(style="dim")
        table.add_column(style="bold")
        table.add_column()
        table.add_column()
        for reg in self.registers(ph) or ():
            value = self.values.get(f"{reg.offset:#x}")
            if not reg.read:
                table.add_row(f"+{reg.offset:03x}", reg.name, "—", Text("not read: reading it changes the device",
                                                                        style="dim"))
            elif value is not None:
                table.add_row(f"+{reg.offset:03x}", reg.name, f"{value:#010x}", decode(reg, value, irq_names))
        self.query_one("#periph-regs", Static).update(table)
        self.border_subtitle = f"registers from {ph['svd']} (SVD)" if ph.get("svd") else "registers: virsim's map"
