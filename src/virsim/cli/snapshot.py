"""`virsim snapshot …`: save, list, restore, delete and export machine snapshots of a session."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from virsim.cli.common import JsonOpt, SessionArg, client
from virsim.cli.render import emit, out, table, when, working

app = typer.Typer(help="Snapshots: save and restore a session's machine state.", no_args_is_help=True)
SnapshotArg = Annotated[str, typer.Argument(help="Snapshot name or id (see virsim snapshot list).")]


def _size(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def _vtime(ns: int | None) -> str:
    return "-" if ns is None else f"{ns / 1e9:.6f} s"


@app.command("create")
def create(
    session: SessionArg,
    name: Annotated[Optional[str], typer.Option(help="A name unique in the session (default snap-N).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Save the machine state now.

    CPU, memory, peripherals, virtual time. A running session keeps running (the state is taken
    between two instructions).

    Example: virsim snapshot create 3fa9c2d1 --name before-crash
    """
    info = client().snapshot("create", session, name=name)
    emit(info, as_json, lambda: out.print(f"snapshot {info.name} ({info.id}) of session {info.session}: "
                                          f"{_size(info.size)}, virtual time {_vtime(info.virtual_ns)}"))


@app.command("list")
def list_(session: SessionArg, as_json: JsonOpt = False) -> None:
    """List a session's snapshots.

    Name, id, virtual time, instructions, size, created.

    Example: virsim snapshot list 3fa9c2d1
    """
    reply = client().snapshot("list", session)

    def human() -> None:
        t = table("NAME", "ID", "VIRTUAL TIME", "INSTRUCTIONS", "SIZE", "CREATED")
        for s in reply.snapshots:
            t.add_row(s.name, s.id, _vtime(s.virtual_ns), "-" if s.instructions is None else f"{s.instructions:,}",
                      _size(s.size), when(s.created_at))
        out.print(t)

    emit(reply, as_json, human)


@app.command("restore")
def restore(session: SessionArg, snapshot: SnapshotArg, as_json: JsonOpt = False) -> None:
    """Put the machine back in a snapshot's state.

    It runs on from there exactly as it did the first time. The console log gets a marker line;
    breakpoints stay.

    Example: virsim snapshot restore 3fa9c2d1 before-crash
    """
    info = client().snapshot("restore", session, snapshot=snapshot)
    emit(info, as_json, lambda: out.print(f"restored {info.name} ({info.id}): virtual time {_vtime(info.virtual_ns)}"))


@app.command("delete")
def delete(session: SessionArg, snapshot: SnapshotArg, as_json: JsonOpt = False) -> None:
    """Delete a snapshot and its file (exported copies stay).

    Example: virsim snapshot delete 3fa9c2d1 before-crash
    """
    info = client().snapshot("delete", session, snapshot=snapshot)
    emit(info, as_json, lambda: out.print(f"deleted snapshot {info.name} ({info.id})"))


@app.command("export")
def export(
    session: SessionArg,
    snapshot: SnapshotArg,
    out_path: Annotated[Path, typer.Option("--out", "-o", help="The .vsnap file to write.")],
    as_json: JsonOpt = False,
) -> None:
    """Write a snapshot file that outlives the session.

    State plus the program image, checksummed; start a new session from it with
    `session create --from-snapshot`.

    Example: virsim snapshot export 3fa9c2d1 before-crash --out crash.vsnap
    """
    with working(f"writing {out_path}", as_json):
        info = client().snapshot("export", session, snapshot=snapshot, out=out_path)
    emit(info, as_json, lambda: out.print(f"wrote {info.path} ({_size(info.size)})"))
