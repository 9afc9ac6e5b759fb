"""The session screen: one session's panes (console, source, registers, call stack, breakpoints,
memory, snapshots and coverage, and for multi-node boards a tab per node and the synchroniser),
run-control keys, pane toggles and sizes. It refreshes the debug panes on every `stop` event and
on opening; the status line follows `state` and `clock` events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static, Tab, Tabs

from virsim import protocol as p
from virsim.tui.app import DaemonView
from virsim.tui.dialogs import Confirm
from virsim.tui.format import rate, vtime
from virsim.tui.messages import ConsoleBytes
from virsim.tui.panes import (BreakpointsPane, ConsolePane, MemoryPane, NodesPane, Pane, PeripheralsPane,
                              RegistersPane, SnapshotsPane, SourcePane, StackPane)

# key -> pane id; the digits toggle panes
PANES = {"1": "source", "2": "console", "3": "registers", "4": "stack", "5": "breakpoints", "6": "memory",
         "7": "snapshots", "8": "nodes", "9": "peripherals"}


class SessionScreen(Screen[None], DaemonView):
    BINDINGS = [
        Binding("escape", "back", "Sessions"),
        Binding("c", "run('continue')", "Continue"),
        Binding("p", "pause", "Pause"),
        Binding("s", "run('step')", "Step"),
        Binding("n", "run('next')", "Next"),
        Binding("f", "run('finish')", "Finish"),
        Binding("i", "run('stepi')", "Stepi"),
        Binding("R", "reset", "Reset", show=False),
        Binding("t", "type", "Type to UART"),
        *(Binding(k, f"toggle_pane('{pane}')", f"Show/hide {pane}", show=False) for k, pane in PANES.items()),
        Binding("less_than_sign", "split(-5)", "Narrower left", show=False),
        Binding("greater_than_sign", "split(5)", "Wider left", show=False),
        Binding("minus", "console_height(-3)", "Smaller console", show=False),
        Binding("plus", "console_height(3)", "Bigger console", show=False),
    ]

    def __init__(self, session: str) -> None:
        super().__init__()
        self.ref = session
        self.sid = session
        self.info: p.SessionInfo | None = None
        self.stop: p.StopInfo | None = None
        self.node: str | None = None
        self.breakpoints: list[p.BreakpointInfo] = []
        self.left_width = 55
        self.console_rows = 12
        self.virtual_ns: int | None = None
        self.speed: float | None = None
        self.connected = True

    # ------------------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="status")
        yield Tabs(id="node-tabs")
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield SourcePane(self, id="source")
                yield ConsolePane(self, self.app.scrollback, id="console")  # type: ignore[attr-defined]
            with VerticalScroll(id="right"):
                yield RegistersPane(self, id="registers")
                yield StackPane(self, id="stack")
                yield BreakpointsPane(self, id="breakpoints")
                yield MemoryPane(self, id="memory")
                yield SnapshotsPane(self, id="snapshots")
                yield NodesPane(self, id="nodes")
                yield PeripheralsPane(self, id="peripherals")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#node-tabs").display = False
        self.query_one("#nodes").display = False
        self._sizes()
        self.app.request(lambda c: c.session("show", self.ref), self._opened, f"session {self.ref}")  # type: ignore

    def _sizes(self) -> None:
        self.query_one("#left").styles.width = f"{self.left_width}%"
        self.query_one("#console").styles.height = self.console_rows

    async def _opened(self, info: p.SessionInfo) -> None:
        self.sid = info.id
        self.stop = info.stop if info.debugger else None
        self._info(info)
        if info.nodes:
            tabs = self.query_one("#node-tabs", Tabs)
            for n in info.nodes:
                await tabs.add_tab(Tab(f"{n['node']} ({n['backend']})", id=f"node-{n['node']}"))
            tabs.display = True
            self.query_one("#nodes").display = True
            self.node = info.nodes[0]["node"]
            self.query_one(PeripheralsPane).show_board(info.peripherals)
        self.refresh_breakpoints()
        self._refresh_stop()
        self.query_one("#source DataTable").focus()

    def _info(self, info: p.SessionInfo) -> None:
        self.info = info
        self.title = f"{info.name} ({info.id})"
        self.sub_title = f"{info.board} on {info.backend}"
        if info.virtual_ns is not None:
            self.virtual_ns = info.virtual_ns
        if info.nodes:
            self.query_one(NodesPane).show(info)
        if info.peripherals:
            self.query_one(PeripheralsPane).show_board(info.peripherals)
        self._status()

    def _status(self) -> None:
        info = self.info
        if info is None:
            return
        state = info.state if self.connected else f"{info.state}? (daemon gone: not live; ctrl+r reconnects)"
        parts = [f"[b]{state}[/b]"]
        if self.stop is not None:
            parts.append(f"stopped: {self.stop.reason}" + (f" at {self.stop.function}" if self.stop.function else "")
                         + (f" ({Path(self.stop.file).name}:{self.stop.line})" if self.stop.file else ""))
        if self.virtual_ns is not None:
            parts.append(f"virtual {vtime(self.virtual_ns)}")
        if self.speed and info.state == "running":
            parts.append(f"{rate(self.speed)} instr/s")
        if info.fault:
            parts.append(f"[red]fault: {info.fault.get('summary') or info.fault.get('handler')}[/red]")
        if info.error:
            parts.append(f"[red]{info.error}[/red]")
        self.query_one("#status", Static).update("  ·  ".join(parts))

    # ------------------------------------------------------------------------------ daemon
    def daemon_event(self, event: p.Event) -> None:
        if event.session != self.sid:
            return
        if event.type == "clock":
            self.virtual_ns, self.speed = event.virtual_ns, event.instructions_per_s
            if self.info is not None and self.info.nodes:
                self.app.request(lambda c: c.session("show", self.sid), self._info)  # type: ignore[attr-defined]
            self._status()
        elif event.type == "stop":
            self.stop = event.stop
            self._refresh_stop()
        elif event.type in ("state", "fault"):
            self.app.request(lambda c: c.session("show", self.sid), self._state_changed)  # type: ignore

    def _state_changed(self, info: p.SessionInfo) -> None:
        was = self.info.state if self.info else None
        self._info(info)
        if info.state != was and info.state == "paused":
            self._refresh_stop()
        if info.state != was and info.state in ("failed", "stopped", "deleted", "lost"):
            self.app.notify(f"session {info.name} is {info.state}" + (f": {info.error}" if info.error else ""),
                            severity="error" if info.state in ("failed", "lost") else "warning", timeout=10)

    def console_bytes(self, message: ConsoleBytes) -> None:
        if message.session == self.sid:
            chunk = self.app.link.take_console(self.sid)  # type: ignore[attr-defined]
            if chunk is not None:
                self.query_one(ConsolePane).feed(*chunk)

    def daemon_lost(self, reason: str) -> None:
        self.connected = False
        self._status()

    def daemon_back(self) -> None:
        self.connected = True
        self.app.request(lambda c: c.session("show", self.sid), self._info)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------------------ debug state
    def _refresh_stop(self) -> None:
        """Ask where the target is (with the call stack) if it is stopped, then refresh the panes."""
        if self.info is None or "debug" not in self.info.capabilities:
            return
        if self.stop is not None or self.info.state == "paused":
            self.app.request(lambda c: c.debug("where", self.sid, node=self.node), self._stopped)  # type: ignore
        else:
            self._panes_stop(None)

    def _stopped(self, stop: p.StopInfo) -> None:
        if self.stop is not None and stop.seq < self.stop.seq:
            return  # an answer about an earlier stop, overtaken by a later one's
        self.stop = stop
        self._panes_stop(stop)
        self.refresh_breakpoints()
        self._status()

    def _panes_stop(self, stop: p.StopInfo | None) -> None:
        for pane in self.query(Pane):
            if pane.display and not isinstance(pane, ConsolePane):
                pane.on_stop(stop)

    def refresh_breakpoints(self) -> None:
        if self.info is None or "debug" not in self.info.capabilities:
            return
        self.app.request(lambda c: c.debug("list", self.sid), self._breakpoints)  # type: ignore[attr-defined]

    def _breakpoints(self, reply: p.BreakpointList) -> None:
        self.breakpoints = reply.breakpoints
        self.query_one(BreakpointsPane).show(reply.breakpoints)
        self.query_one(SourcePane)._draw()

    def breakpoint_lines(self, file: str) -> set[int]:
        return {b.line for b in self.breakpoints
                if b.kind == "breakpoint" and b.line and b.file and Path(b.file).name == Path(file).name}

    def breakpoint_at(self, file: str, line: int) -> int | None:
        return next((b.id for b in self.breakpoints if b.kind == "breakpoint" and b.line == line and b.file
                     and Path(b.file).name == Path(file).name), None)

    def on_tabs_tab_activated(self, _event: Tabs.TabActivated) -> None:
        # Read the tab active once things settle, not the event's: activations queued while the tabs
        # were being added arrive late and out of order.
        self.call_after_refresh(self._node_from_tabs)

    def _node_from_tabs(self) -> None:
        active = self.query_one("#node-tabs", Tabs).active or ""
        node = active[len("node-"):] if active.startswith("node-") else None
        if node is not None and node != self.node and self.node is not None:
            self.node = node
            self.stop = None
            if self.info is not None:
                self.query_one(PeripheralsPane).show_board(self.info.peripherals)
            self._refresh_stop()

    # ------------------------------------------------------------------------------ actions
    def action_back(self) -> None:
        self.app.pop_screen()

    def action_run(self, kind: str) -> None:
        node = self.node
        before = self.stop.seq if self.stop is not None else -1
        done = lambda reply: self._ran(reply, before)  # noqa: E731
        if kind == "continue":
            self.app.request(lambda c: c.debug("continue", self.sid, node=node), done, "continue")  # type: ignore
        else:
            self.app.request(lambda c: c.debug("step", self.sid, node=node, kind=kind), done, kind)  # type: ignore

    def _ran(self, reply: p.DebugRunReply, before: int) -> None:
        # A stop arrives as a `stop` event too, and the panes refresh from that one; the event can
        # come before this reply (a fault right after `continue`): a newer stop stays.
        if reply.state == "running" and (self.stop is None or self.stop.seq <= before):
            self.stop = None
            self._status()

    def action_type(self) -> None:
        self.query_one("#console-input").focus()

    def action_pause(self) -> None:
        self.app.request(lambda c: c.session("pause", self.sid), self._info, "pause")  # type: ignore[attr-defined]

    def action_reset(self) -> None:
        def go(yes: bool | None) -> None:
            if yes:
                self.app.request(lambda c: c.session("reset", self.sid), self._info, "reset")  # type: ignore
        self.app.push_screen(Confirm(f"Reset session {self.sid}? The CPU restarts from the reset vector."), go)

    def action_toggle_pane(self, pane: str) -> None:
        widget = self.query_one(f"#{pane}")
        widget.display = not widget.display
        if widget.display and isinstance(widget, Pane) and not isinstance(widget, ConsolePane):
            widget.on_stop(self.stop)

    def action_split(self, delta: int) -> None:
        self.left_width = max(20, min(80, self.left_width + delta))
        self._sizes()

    def action_console_height(self, delta: int) -> None:
        self.console_rows = max(3, min(60, self.console_rows + delta))
        self._sizes()
