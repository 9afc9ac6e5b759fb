"""The session state machine: which operation is allowed in which state, and where it leads.

    created ──resume──▶ running ◀──resume── paused
       │                  │ ──pause──────────▶ │
       └──── power-off ───┴──── power-off ─────┴──▶ stopped ──power-on──▶ running
    running/paused ── emulator died ──▶ failed      (power-on restarts it)
    any live state ── daemon restarted, emulator gone ──▶ lost   (power-on restarts it)
    any state ── delete ──▶ deleted (terminal; artifacts kept unless --purge)

`created` is an instance whose emulator is up but whose CPU has not run yet (`--paused`).
"""

from __future__ import annotations

from enum import Enum

from virsim.errors import InvalidState


class SessionState(str, Enum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    FAILED = "failed"
    LOST = "lost"
    DELETED = "deleted"

    def __str__(self) -> str:
        return self.value


S = SessionState
# States in which an emulator process exists.
LIVE = frozenset({S.CREATED, S.RUNNING, S.PAUSED})
# States from which power-on (re)starts an emulator.
DOWN = frozenset({S.STOPPED, S.FAILED, S.LOST})

# operation -> states it may be asked in.
ALLOWED: dict[str, frozenset[SessionState]] = {
    "pause": frozenset({S.RUNNING}),
    "resume": frozenset({S.PAUSED, S.CREATED}),
    "reset": LIVE,
    "power-off": LIVE,
    "power-on": DOWN,
    "console-send": LIVE,
    "program-upload": LIVE | DOWN,
    "program-start": LIVE | DOWN,
    "delete": LIVE | DOWN,
    "snapshot": LIVE,  # create and restore need a live emulator; list/delete/export do not
}


def require(operation: str, session_id: str, current: SessionState) -> None:
    """Raise InvalidState unless `operation` is allowed in `current`."""
    allowed = ALLOWED[operation]
    if current not in allowed:
        need = " or ".join(sorted(s.value for s in allowed))
        raise InvalidState(
            f"cannot {operation} session {session_id}: it is {current.value}; {operation} needs {need}",
            session=session_id, operation=operation, current=current.value, required=sorted(s.value for s in allowed))
