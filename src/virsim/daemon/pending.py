"""Replies that wait, and how long a client waits for one.

A handler returns a `Deferred` instead of a result; the server parks the request here, and the
service that sees the event resolves it (or the deadline passes and `on_timeout` answers). The
daemon stays single-threaded and keeps serving other clients while a request waits.

A client says in each envelope until when it waits (`deadline`, wall-clock seconds: client and
daemon share the machine's clock). The server sets it for the request it serves (`serving`); work
that creates something checks `check_client_waiting` before it commits, so a request the client
gave up on is undone rather than completed behind its back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from virsim.errors import Timeout, VirsimError
from virsim.protocol import Message

# Answer this much before the client's deadline: the reply must still reach it.
REPLY_MARGIN = 0.25
_client_deadline: ContextVar[float | None] = ContextVar("client_deadline", default=None)


@contextmanager
def serving(deadline: float | None) -> Iterator[None]:
    """While the server serves a request whose client waits until `deadline` (time.time())."""
    token = _client_deadline.set(deadline)
    try:
        yield
    finally:
        _client_deadline.reset(token)


def check_client_waiting(what: str) -> None:
    """Timeout when the client of the request being served has stopped waiting for it."""
    deadline = _client_deadline.get()
    if deadline is not None and time.time() > deadline - REPLY_MARGIN:
        raise Timeout(f"{what}: not done, its client stopped waiting for it (nothing is done behind a client's "
                      "back): try again, or wait longer (the CLI's --timeout)", request=what)

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
