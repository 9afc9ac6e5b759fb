"""The sessions screen: every session of the daemon in a live table (state from `state` events,
virtual time and speed from `clock` events, uptime counted here from the start time), a text
filter, run control with confirmation for what destroys state, and the create dialog."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Checkbox, DataTable, Footer, Header, Input, Label, Select, Static

from virsim import protocol as p
from virsim.errors import VirsimError
from virsim.tui.app import DaemonView
from virsim.tui.dialogs import Confirm
from virsim.tui.format import duration, rate, vtime

COLUMNS = ("ID", "NAME", "BOARD", "BACKEND", "STATE", "UPTIME", "VIRTUAL TIME", "INSTR/S")
LIVE = ("running", "paused")


class SessionsScreen(Screen[None], DaemonView):
    BINDINGS = [
        Binding("enter", "open", "Open", show=False),
        Binding("n", "create", "New"),
        Binding("p", "pause", "Pause"),
        Binding("r", "resume", "Resume"),
        Binding("R", "reset", "Reset"),
        Binding("o", "power", "Power off/on"),
        Binding("d", "delete", "Delete"),
        Binding("slash", "filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.filter = ""
        self.connected = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: any text of a row (/ to focus, escape to clear)", id="filter")
        yield Static("connecting to the daemon…", id="banner")
        table: DataTable[Any] = DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
        for name in COLUMNS:
            table.add_column(name, key=name)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.set_interval(1.0, self._tick_uptime)

    # ------------------------------------------------------------------------------ data
    def daemon_back(self) -> None:
        self.connected = True
        self._banner("")
        self.app.request(lambda c: c.session_list(), self._load, "listing sessions")  # type: ignore[attr-defined]

    def daemon_lost(self, reason: str) -> None:
        self.connected = False
        self._banner(f"{reason}: the states below are the last known, not live. ctrl+r reconnects.")
        for sid in self.sessions:
            self._render_row(sid)

    def _banner(self, text: str) -> None:
        banner = self.query_one("#banner", Static)
        banner.update(text)
        banner.display = bool(text)

    def _load(self, sessions: list[p.SessionInfo]) -> None:
        self.sessions = {s.id: self._row(s) for s in sessions}
        self._render_all()

    @staticmethod
    def _row(info: p.SessionInfo) -> dict[str, Any]:
        return {"id": info.id, "name": info.name, "board": info.board, "backend": info.backend, "state": info.state,
                "started_at": info.started_at, "virtual_ns": info.virtual_ns, "ips": info.instructions_per_s,
                "stop": info.stop.reason if info.stop else None}

    def daemon_event(self, event: p.Event) -> None:
        sid = event.session
        if event.type == "clock":
            row = self.sessions.get(sid)
            if row is not None:
                row.update(virtual_ns=event.virtual_ns, ips=event.instructions_per_s, state=event.state or row["state"])
                self._render_row(sid)
        elif event.type == "state":
            if event.state == "deleted":
                self.sessions.pop(sid, None)
                self._render_all()
            else:
                self.app.request(lambda c: c.session("show", sid), self._update)  # type: ignore[attr-defined]

    def _update(self, info: p.SessionInfo) -> None:
        if info.state == "deleted":
            self.sessions.pop(info.id, None)
        else:
            self.sessions[info.id] = self._row(info)
        self._render_all()

    def _tick_uptime(self) -> None:
        for sid, row in self.sessions.items():
            if row["state"] in LIVE and row["started_at"]:
                self._render_row(sid)

    # ------------------------------------------------------------------------------ rendering
    def _cells(self, row: dict[str, Any]) -> list[str]:
        live = row["state"] in LIVE
        state = row["state"] if self.connected else f"{row['state']}?"
        return [row["id"], row["name"], row["board"], row["backend"], state,
                duration(time.time() - row["started_at"]) if live and row["started_at"] else "",
                vtime(row["virtual_ns"]), rate(row["ips"]) if live and row["state"] == "running" else ""]

    def _visible(self, row: dict[str, Any]) -> bool:
        return not self.filter or any(self.filter in cell.lower() for cell in self._cells(row))

    def _render_all(self) -> None:
        table = self.query_one(DataTable)
        keep = table.cursor_row
        table.clear()
        for sid, row in sorted(self.sessions.items(), key=lambda kv: kv[1]["name"]):
            if self._visible(row):
                table.add_row(*self._cells(row), key=sid)
        if table.row_count:
            table.move_cursor(row=min(keep, table.row_count - 1))

    def _render_row(self, sid: str) -> None:
        table = self.query_one(DataTable)
        row = self.sessions.get(sid)
        if row is None:
            return
        if sid not in table.rows:
            if self._visible(row):
                self._render_all()
            return
        for name, value in zip(COLUMNS, self._cells(row)):
            table.update_cell(sid, name, value)

    @on(Input.Submitted, "#filter")
    def _filter_done(self, _event: Input.Submitted) -> None:
        self.query_one(DataTable).focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter = event.value.strip().lower()
        self._render_all()

    # ------------------------------------------------------------------------------ actions
    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        self.query_one("#filter", Input).value = ""
        self.query_one(DataTable).focus()

    @on(DataTable.RowSelected)
    def _row_selected(self, _event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        from virsim.tui.session import SessionScreen

        sid = self.selected()
        if sid is not None:
            self.app.push_screen(SessionScreen(sid))

    def _act(self, action: str, confirm: str | None = None) -> None:
        sid = self.selected()
        if sid is None:
            return

        def go(yes: bool | None = True) -> None:
            if yes:
                self.app.request(lambda c: c.session(action, sid), self._update,  # type: ignore[attr-defined]
                                 f"{action.replace('_', ' ')} {sid}")
        if confirm:
            self.app.push_screen(Confirm(confirm.format(sid=sid, name=self.sessions[sid]["name"])), go)
        else:
            go()

    def action_pause(self) -> None:
        self._act("pause")

    def action_resume(self) -> None:
        self._act("resume")

    def action_reset(self) -> None:
        self._act("reset", "Reset session {name} ({sid})? The CPU restarts from the reset vector.")

    def action_power(self) -> None:
        sid = self.selected()
        if sid is None:
            return
        if self.sessions[sid]["state"] in LIVE:
            self._act("power_off", "Power off session {name} ({sid})? The emulator stops; RAM is lost.")
        else:
            self._act("power_on")

    def action_delete(self) -> None:
        sid = self.selected()
        if sid is None:
            return

        def go(yes: bool | None) -> None:
            if yes:
                self.app.request(lambda c: c.session_delete(sid), lambda _r: None,  # type: ignore[attr-defined]
                                 f"delete {sid}")
        self.app.push_screen(Confirm(f"Delete session {self.sessions[sid]['name']} ({sid})? Its emulator stops; "
                                     "the console log is kept."), go)

    def action_create(self) -> None:
        def created(info: p.SessionInfo | None) -> None:
            if info is not None:
                self._update(info)
        self.app.push_screen(CreateDialog(), created)


class CreateDialog(ModalScreen["p.SessionInfo | None"]):
    """Board + firmware + options; the daemon's refusal (which field, which value) is shown inline."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        from virsim.board import list_templates

        boards = sorted(list_templates())
        with Vertical(classes="dialog", id="create"):
            yield Label("New session")
            yield Input(placeholder=f"board: a template ({', '.join(boards[:4])}, …) or a board file", id="board",
                        suggester=SuggestFromList(boards, case_sensitive=False))
            yield Input(placeholder="firmware: path of an ELF, .bin or .hex", id="firmware")
            yield Select([(b, b) for b in ("qemu", "builtin", "renode")], prompt="backend: the board's default",
                         id="backend")
            yield Input(placeholder="name (optional)", id="name")
            with Horizontal(classes="buttons"):
                yield Checkbox("paused", id="paused")
                yield Checkbox("deterministic", id="deterministic")
            yield Static("", classes="error", id="error")
            with Horizontal(classes="buttons"):
                yield Button("Create", variant="primary", id="go")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#board", Input).focus()

    def _error(self, text: str) -> None:
        self.query_one("#error", Static).update(text)

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self._create()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "go":
            self._create()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _create(self) -> None:
        board = self.query_one("#board", Input).value.strip()
        firmware = self.query_one("#firmware", Input).value.strip()
        if not board:
            self._error("board: give a board template name or a board file")
            return
        if firmware and not Path(firmware).expanduser().is_file():
            self._error(f"firmware: {firmware} is not a file")
            return
        backend = self.query_one("#backend", Select).value
        options: dict[str, Any] = {
            "backend": backend if isinstance(backend, str) else None,
            "name": self.query_one("#name", Input).value.strip() or None,
            "paused": self.query_one("#paused", Checkbox).value,
            "deterministic": self.query_one("#deterministic", Checkbox).value,
        }
        self._error("creating…")
        self.run_worker(lambda: self._call(board, firmware, options), thread=True, exclusive=True)

    def _call(self, board: str, firmware: str, options: dict[str, Any]) -> None:
        try:
            info = self.app.link.call(  # type: ignore[attr-defined]
                lambda c: c.session_create(board, str(Path(firmware).expanduser()) if firmware else None, **options))
        except VirsimError as err:
            self.app.call_from_thread(self._error, str(err))
            return
        self.app.call_from_thread(self.dismiss, info)
