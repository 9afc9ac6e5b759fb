"""Textual messages the event pump (link.py) posts to the app: one per kind of daemon event,
plus the daemon's loss and return. Console bytes are not carried in messages: ConsoleBytes says
that a session has some buffered (Link.take_console), so a firmware printing megabytes a second
costs the UI a few messages a second, however slow the UI is."""

from __future__ import annotations

from textual.message import Message

from virsim import protocol as p


class ConsoleBytes(Message):
    def __init__(self, session: str) -> None:
        super().__init__()
        self.session = session


class DaemonEvent(Message):
    """A state, stop, fault or clock event, as the daemon published it."""

    def __init__(self, event: p.Event) -> None:
        super().__init__()
        self.event = event


class DaemonLost(Message):
    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class DaemonBack(Message):
    pass
