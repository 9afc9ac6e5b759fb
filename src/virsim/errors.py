"""The one error tree of virsim.

Every error a user can see is a `VirsimError` subclass with a stable `code` (the wire's
ERROR_CODE), a process `exit_code`, structured `details` and a human message. The daemon sends
`{"error": message, "code": code, "details": {...}}`; the client rebuilds the same class from the
code, so the CLI prints the same message and exits with the same code whichever side raised it.

Exit codes are part of the CLI contract (docs/exit-codes.md); never renumber one.
"""

from __future__ import annotations

from typing import Any, ClassVar

# code -> class, filled by __init_subclass__ so a wire error maps back to its class.
_BY_CODE: dict[str, type[VirsimError]] = {}


class VirsimError(Exception):
    """Base of every virsim error."""

    code: ClassVar[str] = "INTERNAL"
    exit_code: ClassVar[int] = 70  # EX_SOFTWARE: a bug in virsim, not in the user's input

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = {k: v for k, v in details.items() if v is not None}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _BY_CODE.setdefault(cls.code, cls)

    def __str__(self) -> str:
        return self.message

    def to_wire(self) -> dict[str, Any]:
        """The error as the wire carries it: message and details bounded (clip), whatever input
        they were built from, so an error reply always fits a frame."""
        return {"error": clip(self.message, 4000), "code": self.code, "details": clip(self.details, 2000)}

    @staticmethod
    def from_wire(reply: dict[str, Any]) -> VirsimError:
        cls = _BY_CODE.get(str(reply.get("code")), VirsimError)
        err = cls.__new__(cls)
        VirsimError.__init__(err, str(reply.get("error", "unknown error")), **dict(reply.get("details") or {}))
        if str(reply.get("code")) not in _BY_CODE and reply.get("code"):
            # An error code this client does not know (newer daemon): keep the code for --json output.
            err.details.setdefault("unknown_code", reply.get("code"))
        return err


_BY_CODE[VirsimError.code] = VirsimError


def clip(value: Any, limit: int = 200, _depth: int = 0) -> Any:
    """`value` bounded for a message or an error's details: strings cut to `limit` characters
    (saying how long they were), containers to 100 items and 6 levels; numbers too long to print
    shown by their size. User input goes into errors only through this."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}… ({len(value)} characters)"
    if isinstance(value, bytes):
        return clip(value.decode("latin-1"), limit, _depth)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if abs(value) < 10**18 else f"an integer of {value.bit_length()} bits"
    if _depth >= 6:
        return f"({type(value).__name__} nested deeper)"
    if isinstance(value, dict):
        items = list(value.items())
        out = {clip(str(k), 80): clip(v, limit, _depth + 1) for k, v in items[:100]}
        if len(items) > 100:
            out["…"] = f"{len(items) - 100} more"
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        seq = list(value)
        out_list = [clip(v, limit, _depth + 1) for v in seq[:100]]
        return out_list + ([f"… {len(seq) - 100} more"] if len(seq) > 100 else [])
    return clip(repr(value), limit)


class InvalidInput(VirsimError):
    """A request or argument is malformed or out of range."""

    code = "INVALID_INPUT"
    exit_code = 2


class BoardConfigError(InvalidInput):
    """A BoardConfig file or value is invalid. details: file, problems[{path, value, message, line}]."""

    code = "BOARD_INVALID"


class FirmwareError(InvalidInput):
    """A firmware image cannot run on the session's board (format, architecture, addresses)."""

    code = "FIRMWARE_INVALID"


class ScenarioError(InvalidInput):
    """A scenario file is invalid. details: file, problems[{path, line, value, message}]."""

    code = "SCENARIO_INVALID"


class SnapshotInvalid(InvalidInput):
    """A snapshot file is not usable: not a snapshot, truncated, corrupted (checksum), or made on
    another board or backend. details: file, section."""

    code = "SNAPSHOT_INVALID"


class DebugCommandFailed(InvalidInput):
    """The debugger refused a command (bad expression, location, register). details: gdb_message."""

    code = "DEBUG_COMMAND_FAILED"


class NotFound(VirsimError):
    """A session, program, board or artifact does not exist. details: kind, id."""

    code = "NOT_FOUND"
    exit_code = 3


class InvalidState(VirsimError):
    """An operation was asked of a session in a state that does not allow it.

    details: session, operation, current, required.
    """

    code = "INVALID_STATE"
    exit_code = 4


class DebuggerBusy(InvalidState):
    """An external debugger holds the session's gdb stub. details: session, held_by."""

    code = "DEBUGGER_BUSY"


class NotSupported(VirsimError):
    """The backend (or virsim) cannot do this yet. details: backend, capability."""

    code = "NOT_SUPPORTED"
    exit_code = 5


class EmulatorError(VirsimError):
    """An emulator failed to start, crashed or stopped answering. details: stderr_tail, returncode."""

    code = "EMULATOR_FAILED"
    exit_code = 6


class EmulatorMissing(EmulatorError):
    """The emulator binary a backend needs is not installed. details: binary, install."""

    code = "EMULATOR_NOT_INSTALLED"


class Timeout(VirsimError):
    """What was awaited did not happen in time (exit code 42, as Wokwi CLI uses for timeouts)."""

    code = "TIMEOUT"
    exit_code = 42


class DaemonUnavailable(VirsimError):
    """The daemon could not be started or reached in time."""

    code = "DAEMON_UNAVAILABLE"
    exit_code = 7


class DaemonMismatch(DaemonUnavailable):
    """The running daemon comes from another virsim install or version and has live sessions, so it
    was not restarted. details: pid, daemon_version, daemon_install, client_version, client_install."""

    code = "DAEMON_MISMATCH"


class StorageError(VirsimError):
    """virsim could not write its own state or an artifact: the disk is full, or the store or a
    file cannot be written (details: path, reason). Nothing was half-changed."""

    code = "STORAGE_FAILED"
    exit_code = 74  # EX_IOERR


class UnsafeDirectory(VirsimError):
    """A directory virsim would keep its sockets or data in is not this user's alone (another
    user owns it, or it is a symlink): virsim refuses to use it (details: path)."""

    code = "UNSAFE_DIRECTORY"
    exit_code = 77  # EX_NOPERM


class ProtocolError(VirsimError):
    """A wire frame was malformed, too large or of an unknown type."""

    code = "PROTOCOL_ERROR"
    exit_code = 7


class VersionMismatch(ProtocolError):
    """Client and daemon speak different major protocol versions."""

    code = "PROTOCOL_VERSION_MISMATCH"


def error_codes() -> dict[str, type[VirsimError]]:
    """All known error codes (for docs and the docs test)."""
    return dict(_BY_CODE)
