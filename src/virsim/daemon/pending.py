"""Replies that wait for an event: `debug continue --wait` answers when the target stops.

A handler returns a `Deferred` instead of a result; the server parks the request here, and the
service that sees the event resolves it (or the deadline passes and `on_timeout` answers). The
daemon stays single-threaded and keeps serving other clients while a request waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from virsim.errors import VirsimError
from virsim.protocol import Message

Send = Callable[[bytes, str, "Message | VirsimError"], None]


@dataclass
class Deferred:
    key: str  # what it waits for, e.g. a session id
    deadline: float  # time.monotonic() value
    on_timeout: Callable[[], Message]


@dataclass
class _Waiter:
    identity: bytes
    request_id: str
    deferred: Deferred


@dataclass
class PendingReplies:
    send: Send
    waiters: list[_Waiter] = field(default_factory=list)

    def add(self, identity: bytes, request_id: str, deferred: Deferred) -> None:
        self.waiters.append(_Waiter(identity, request_id, deferred))

    def waiting(self, key: str) -> bool:
        return any(w.deferred.key == key for w in self.waiters)

    def resolve(self, key: str, answer: Message | VirsimError) -> int:
        """Answer every request waiting on `key`; return how many there were."""
        hit = [w for w in self.waiters if w.deferred.key == key]
        self.waiters = [w for w in self.waiters if w.deferred.key != key]
        for w in hit:
            self.send(w.identity, w.request_id, answer)
        return len(hit)

    def expire(self) -> None:
        now = time.monotonic()
        due = [w for w in self.waiters if w.deferred.deadline <= now]
        self.waiters = [w for w in self.waiters if w.deferred.deadline > now]
        for w in due:
            try:
                answer: Message | VirsimError = w.deferred.on_timeout()
            except VirsimError as err:
                answer = err
            self.send(w.identity, w.request_id, answer)

    def next_deadline(self) -> float | None:
        return min((w.deferred.deadline for w in self.waiters), default=None)
