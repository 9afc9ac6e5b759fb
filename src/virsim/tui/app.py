"""The Textual app: connects the link, opens the sessions screen (or one session), routes the
pump's messages to every screen on the stack, and offers every key binding in the command palette.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen

from virsim.errors import VirsimError
from virsim.paths import Paths
from virsim.tui.link import Link
from virsim.tui.messages import ConsoleBytes, DaemonBack, DaemonEvent, DaemonLost

DEFAULT_SCROLLBACK = 10_000


class DaemonView:
    """What a screen implements to follow the daemon (all optional)."""

    def daemon_event(self, event: Any) -> None: ...
    def console_bytes(self, message: ConsoleBytes) -> None: ...
    def daemon_lost(self, reason: str) -> None: ...
    def daemon_back(self) -> None: ...


class VirsimApp(App[None]):
    CSS_PATH = "virsim.tcss"
    TITLE = "virsim"
    BINDINGS = [
        Binding("question_mark", "toggle_keys", "Keys"),
        Binding("ctrl+r", "reconnect", "Reconnect", show=False),
        Binding("ctrl+q", "quit", "Quit"),
    ]

    def __init__(self, session: str | None = None, paths: Paths | None = None,
                 scrollback: int = DEFAULT_SCROLLBACK) -> None:
        super().__init__()
        self.link = Link(paths)
        self.first_session = session
        self.scrollback = scrollback
        self.lost: str | None = None

    # ------------------------------------------------------------------------------ life
    def on_mount(self) -> None:
        from virsim.tui.sessions import SessionsScreen

        self.push_screen(SessionsScreen())
        self._connect()

    @work(thread=True, exclusive=True, group="link")
    def _connect(self) -> None:
        try:
            self.link.start(self.post_message)
        except VirsimError as err:
            self.post_message(DaemonLost(str(err)))
            return
        self.call_from_thread(self._connected)

    def _connected(self) -> None:
        for screen in self._views():
            screen.daemon_back()
        if self.first_session:
            from virsim.tui.session import SessionScreen

            self.push_screen(SessionScreen(self.first_session))
            self.first_session = None

    def on_unmount(self) -> None:
        self.link.close()

    # ------------------------------------------------------------------------------ routing
    def _views(self) -> list[Any]:
        return [s for s in self.screen_stack if isinstance(s, DaemonView)]

    def _each_view(self, call: Any) -> None:
        for screen in self._views():
            try:
                call(screen)
            except NoMatches:
                pass  # a screen being taken down (the app quitting): nothing left to update

    def on_console_bytes(self, message: ConsoleBytes) -> None:
        self._each_view(lambda screen: screen.console_bytes(message))
        self.link.take_console(message.session)  # no screen shows that console: drop what it did not take

    def on_daemon_event(self, message: DaemonEvent) -> None:
        self._each_view(lambda screen: screen.daemon_event(message.event))

    def on_daemon_lost(self, message: DaemonLost) -> None:
        self.lost = message.reason
        self.sub_title = "daemon gone: ctrl+r reconnects"
        for screen in self._views():
            screen.daemon_lost(message.reason)
        self.notify(f"{message.reason}. Press ctrl+r to reconnect (starts the daemon again).", title="daemon gone",
                    severity="error", timeout=30)

    def on_daemon_back(self, _message: DaemonBack) -> None:
        self.lost = None
        self.sub_title = ""
        for screen in self._views():
            screen.daemon_back()
        self.notify("connected to the daemon again", timeout=3)

    # ------------------------------------------------------------------------------ actions
    def action_reconnect(self) -> None:
        if self.lost is None:
            self.notify("connected: nothing to reconnect")
            return
        self._reconnect()

    @work(thread=True, exclusive=True, group="link")
    def _reconnect(self) -> None:
        try:
            if self.link._thread is None:  # never connected: start from scratch
                self.link.start(self.post_message)
                self.call_from_thread(self.on_daemon_back, DaemonBack())
            else:
                self.link.reconnect()
        except VirsimError as err:
            self.call_from_thread(self.notify, f"still no daemon: {err}", severity="error")

    def action_toggle_keys(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Textual's own commands and every action of this screen and of its panes, wherever the
        focus is: the palette reaches every action the keys do."""
        yield from super().get_system_commands(screen)
        seen: set[tuple[int, str]] = set()
        nodes: list[Any] = [screen, *screen.query("Pane")]
        for key, active in screen.active_bindings.items():
            nodes.append(active.node)
        for node in nodes:
            for binding in getattr(node, "BINDINGS", ()):
                if not isinstance(binding, Binding) or not binding.description or (id(node), binding.action) in seen:
                    continue
                seen.add((id(node), binding.action))
                keys = binding.key_display or binding.key
                where = f" ({node.border_title})" if getattr(node, "border_title", None) else ""

                async def run(node: Any = node, action: str = binding.action) -> None:
                    await self.run_action(action, node)

                yield SystemCommand(f"{binding.description}{where}", f"key {keys}", run)

    # ------------------------------------------------------------------------------ helpers
    def request(self, fn: Any, done: Any = None, what: str = "", quiet: bool = False) -> None:
        """Run `fn(client)` on a worker thread; `done(result)` back on the UI thread; a failure
        becomes a notification naming `what` (none with `quiet`: an answer that may not exist)."""
        self._request(fn, done, what, quiet)

    @work(thread=True, group="requests")
    def _request(self, fn: Any, done: Any, what: str, quiet: bool) -> None:
        try:
            result = self.link.call(fn)
        except VirsimError as err:
            if not quiet:
                self.call_from_thread(self.notify, f"{what + ': ' if what else ''}{err}", severity="error", timeout=8)
            return
        if done is not None:
            self.call_from_thread(self._deliver, done, result)

    @staticmethod
    async def _deliver(done: Any, result: Any) -> None:
        try:
            outcome = done(result)
            if hasattr(outcome, "__await__"):
                await outcome
        except NoMatches:
            pass  # the screen that asked was closed meanwhile: nothing left to update


def run(session: str | None = None, scrollback: int = DEFAULT_SCROLLBACK) -> None:
    VirsimApp(session, scrollback=scrollback).run()
