"""`virsim session …`: create, list, show, pause/resume/reset, power off/on and delete sessions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from virsim.cli.common import JsonOpt, SessionArg, client, parse_int, split_firmware
from virsim.cli.render import duration, emit, err, out, state, table, when, working
from virsim import limits
from virsim.errors import FirmwareError, InvalidInput, NotFound

if TYPE_CHECKING:
    from rich.table import Table

    from virsim.client import Client
    from virsim.protocol import ExceptionTaken, SessionInfo

app = typer.Typer(help="Emulation sessions: create, list, show, control, delete.", no_args_is_help=True)


def show_info(info: SessionInfo) -> None:
    out.print(f"[bold]{info.id}[/]  {info.name}")
    rows = [("state", state(info.state)), ("board", info.board), ("backend", info.backend),
            ("program", info.program or "-"), ("pid", str(info.pid or "-")),
            ("deterministic", "yes" if info.deterministic else "no"),
            ("created", when(info.created_at)), ("uptime", duration(info.uptime_s)),
            ("console", f"{info.console_log} ({info.console_bytes} bytes)")]
    rows += [(name, value) for name, value in sorted(info.endpoints.items())]
    if info.virtual_ns is not None:
        rows.append(("virtual time", f"{info.virtual_ns / 1e9:.6f} s"))
    if info.instructions is not None:
        rows.append(("instructions", f"{info.instructions:,}"))
    if info.sync:
        rows.append(("sync", f"{info.sync.get('mode')}, quantum {info.sync.get('quantum_cycles'):,} cycles, "
                             f"{info.sync.get('quanta'):,} quanta run, "
                             f"{info.sync.get('barrier_wait_s', 0):.3f} s waited at barriers (all nodes)"))
    for node in info.nodes:
        clock = f", {node['virtual_ns'] / 1e9:.6f} s virtual, {node['instructions']:,} instructions" \
            if node.get("virtual_ns") is not None else ""
        if node.get("barrier_wait_s") is not None:
            clock += f", {node['barrier_wait_s']:.3f} s at barriers"
        if node.get("skew_max_ns") is not None:
            clock += f", skew <= {node['skew_max_ns']} ns"
        rows.append((f"node {node['node']}", f"{node['backend']}, {node['state']}, pid {node.get('pid') or '-'}{clock}"))
    for access in info.unmodelled_accesses:
        rows.append(("unmodelled", f"{access['access']} of {access['address']:#010x} ({access['range']}): reads zero, "
                                   "writes ignored"))
    if info.recording:
        rows.append(("recording", info.recording))
    if info.replaying:
        rows.append(("replaying", info.replaying))
    if info.debugger:
        rows.append(("debugger", info.debugger))
    if info.stop:
        where = info.stop.function or (f"{info.stop.pc:#x}" if info.stop.pc is not None else "?")
        rows.append(("last stop", f"{info.stop.reason} at {where}"))
    if info.error:
        rows.append(("error", f"[red]{info.error}[/]"))
    for key, value in rows:
        out.print(f"  [dim]{key:>13}[/]  {value}")
    if info.stderr_tail:
        out.print("  [dim]emulator stderr (tail):[/]")
        out.print(info.stderr_tail, markup=False)


@app.command("create")
def create(
    board: Annotated[Optional[str], typer.Option("--board", "-b", help="Board name (virsim board list) or board file.")] = None,
    firmware: Annotated[Optional[list[str]], typer.Option("--firmware", "-f", help="Firmware image: ELF, Intel hex or raw binary; on a multi-node board NODE=IMAGE for each node.")] = None,
    backend: Annotated[Optional[str], typer.Option(help="Override the board's backend: qemu, builtin or renode (see board show: runs on); multi-node boards: one for every node, or NODE=BACKEND pairs (cpu1=renode,cpu2=qemu).")] = None,
    name: Annotated[Optional[str], typer.Option(help="A name to refer to the session by.")] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Start with the CPU halted (resume to run).")] = False,
    deterministic: Annotated[bool, typer.Option("--deterministic", help="Instruction-counted virtual time: same firmware + input -> same output.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="Image format: auto, elf, hex or bin.")] = "auto",
    load_address: Annotated[Optional[str], typer.Option(help="Load address of a raw binary, e.g. 0x0.")] = None,
    from_snapshot: Annotated[Optional[Path], typer.Option("--from-snapshot", help="Start from an exported .vsnap "
                                                          "(board, backend, program and state come from it).")] = None,
    record: Annotated[bool, typer.Option("--record", help="Record the execution (implies --deterministic) to "
                                                           "<session dir>/recording.vrec for `session replay`.")] = False,
    coverage: Annotated[bool, typer.Option("--coverage", help="Count executed code from the first instruction "
                                                               "(virsim coverage report).")] = False,
    sync: Annotated[str, typer.Option(help="Multi-node boards: timeslice (every node runs a quantum of virtual time, "
                                           "then all meet), step (a quantum of instructions) or event (quanta grow "
                                           "while no node sends anything).")] = "timeslice",
    quantum: Annotated[str, typer.Option(help="Multi-node boards: the quantum: a time (100us, 1ms) or cycles for "
                                              "timeslice; instructions for step.")] = "100us",
    semihosting: Annotated[bool, typer.Option(
        "--semihosting", help="Serve ARM semihosting (BKPT 0xAB): the firmware reads and writes files in the "
        "session folder (on QEMU: any file you can), its debug console goes to semihosting.log.")] = False,
    allow_unsafe_qemu_args: Annotated[bool, typer.Option(
        "--allow-unsafe-qemu-args", help="Run the board's qemu.extra_args even where they open the host "
        "(network backends, semihosting, monitors, TCP character devices).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a session running the firmware; print its id.

    Starts the board's emulator with the firmware.

    Example: virsim session create --board mps2-an385 --firmware examples/hello/hello.elf

    Example: virsim session create --board boards/dual-core-mailbox.yaml --firmware cpu0=examples/multinode/cpu0.elf --firmware cpu1=examples/multinode/cpu1.elf --sync timeslice --quantum 100us
    """
    if from_snapshot is not None and (board or firmware):
        raise InvalidInput("--from-snapshot brings its own board and program: drop --board/--firmware",
                           field="from_snapshot")
    image, per_node = split_firmware(firmware)
    for path in ([image] if image else []) + list(per_node.values()):
        # said now, before a daemon is started for nothing
        limits.open_checked(Path(path).expanduser(), "firmware file", error=FirmwareError)
    c = client()
    what = f"snapshot {from_snapshot}" if from_snapshot else f"{board}" + (f" on {backend}" if backend else "")
    with working(f"starting the emulator for {what} (a first QEMU session also builds virsim's QEMU plugins)",
                 as_json):
        info = c.session_create(board or "", image, backend=backend, name=name, paused=paused,
                                node_firmware={n: str(Path(f).expanduser().resolve()) for n, f in per_node.items()},
                                sync=sync, quantum=quantum,
                                deterministic=deterministic, firmware_format=fmt,
                                load_address=parse_int(load_address, "--load-address"),
                                from_snapshot=from_snapshot, record=record, coverage=coverage,
                                allow_unsafe_qemu_args=allow_unsafe_qemu_args, semihosting=semihosting)

    def human() -> None:
        print(info.id)
        err.print(f"[dim]session {info.name} {info.state} on {info.backend}; "
                  f"console: virsim console {info.id} --follow[/]")

    emit(info, as_json, human)


def recording_of(c: Client, arg: str) -> Path:
    """RECORDING as typed: a file path (it has a `/` or ends in .vrec, or exists), else a session
    created with --record, whose recording `session show` names."""
    path = Path(arg).expanduser()
    if "/" in arg or arg.endswith(".vrec") or path.exists():
        return path
    try:
        recording = c.session("show", arg).recording
    except NotFound as err:
        raise InvalidInput(f"{arg}: neither a recording file nor a session", field="recording", value=arg) from err
    if recording is None:
        raise InvalidInput(f"session {arg} has no recording: create a session with --record to replay it",
                           field="recording", value=arg)
    return Path(recording)


@app.command("replay")
def replay(
    recording: Annotated[str, typer.Argument(help="A recording.vrec (session show: recording), or the session "
                                                  "that recorded it.", show_default=False)],
    until: Annotated[Optional[str], typer.Option(help="Pause there: an instruction count (5000000), or on the "
                                                      "built-in engine also a virtual time (250ms).")] = None,
    name: Annotated[Optional[str], typer.Option(help="A name for the new session.")] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Start halted.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Replay a recording in a new session.

    Same board, backend and program, the recorded inputs instead of live ones, so the console shows
    the same bytes; --until pauses it there. A recording still being written (its session is live)
    is refused: power that session off first.

    Example: virsim session replay 3fa9c2d1   # the recording of session 3fa9c2d1

    Example: virsim session replay ~/.local/share/virsim/sessions/3fa9c2d1/recording.vrec --until 5000000

    Example: virsim session replay RECORDING --until 250ms   # built-in engine: a virtual time too
    """
    c = client()
    info = c.session_replay(recording_of(c, recording), until=until, name=name, paused=paused)

    def human() -> None:
        print(info.id)
        err.print(f"[dim]session {info.name} replays {info.replaying} on {info.backend}; "
                  f"console: virsim console {info.id} --follow[/]")

    emit(info, as_json, human)


@app.command("list")
def list_(all_: Annotated[bool, typer.Option("--all", help="Include deleted sessions.")] = False,
          as_json: JsonOpt = False) -> None:
    """List sessions: id, name, board, backend, state, uptime.

    Example: virsim session list --all
    """
    sessions = client().session_list(all=all_)

    def human() -> None:
        if not sessions:
            err.print("no sessions (create one: virsim session create --board mps2-an385 --firmware app.elf)")
            return
        t = table("ID", "NAME", "BOARD", "BACKEND", "STATE", "UPTIME")
        for s in sessions:
            t.add_row(s.id, s.name, s.board, s.backend, state(s.state), duration(s.uptime_s))
        out.print(t)

    emit(sessions, as_json, human)


@app.command("show")
def show(session: SessionArg, as_json: JsonOpt = False) -> None:
    """Show one session in full.

    State, program, pid, endpoints, and the emulator's last words if it failed.

    Example: virsim session show 3fa9c2d1
    """
    info = client().session("show", session)
    emit(info, as_json, lambda: show_info(info))


def _action(action: str, verb: str, doc: str) -> None:
    def command(session: SessionArg, as_json: JsonOpt = False) -> None:
        info = client().session(action, session)
        emit(info, as_json, lambda: out.print(f"session {info.id}: {verb} ({state(info.state)})"))

    command.__doc__ = doc
    app.command(action.replace("_", "-"))(command)


_action("pause", "paused", "Pause the CPU.\n\nExample: virsim session pause 3fa9c2d1")
_action("resume", "resumed", "Resume a paused (or --paused) session.\n\nExample: virsim session resume 3fa9c2d1")
_action("reset", "reset", "Reset the board (CPU restarts from its reset vector).\n\nExample: virsim session reset 3fa9c2d1")
_action("power_off", "powered off", "Power off: stop the emulator, keep the session.\n\n"
        "Example: virsim session power-off 3fa9c2d1")
_action("power_on", "powered on", "Power on a stopped, failed or lost session.\n\nIt boots its current program.\n\n"
        "Example: virsim session power-on 3fa9c2d1")


def exceptions_table(entries: list[ExceptionTaken]) -> Table:
    """The exceptions taken, oldest first: when, which, its handler, and what it interrupted."""
    t = table("VIRTUAL TIME", "EXCEPTION", "HANDLER", "INTERRUPTED AT", "EXC_RETURN")
    for e in entries:
        at = ("" if e.clock_exact else ">= ") + f"{e.virtual_ns / 1e9:.9f} s"
        handler = e.handler_function or f"{e.handler:#010x}"
        back = "-" if e.return_pc is None else f"{e.return_pc:#010x}" + (
            f" {e.return_location}" if e.return_location else "")
        t.add_row(at, e.name, handler, back, f"{e.exc_return:#010x}")
    return t


@app.command("exceptions")
def exceptions(session: SessionArg,
               last: Annotated[int, typer.Option("--last", "-n", min=1, max=256,
                                                 help="How many of the last exceptions (at most 256).")] = 16,
               as_json: JsonOpt = False) -> None:
    """List the last exceptions the CPU took.

    Interrupts, SysTick, PendSV, SVCall and faults, oldest first, each with its virtual time, handler, and where the code it interrupted goes on
    (the stacked pc). On QEMU the time is a lower bound (shown >=): QEMU's clock inside a block is
    the one at the start of its instruction budget (exact for a timer's interrupt).

    Example: virsim session exceptions 3fa9c2d1 --last 8
    """
    reply = client().request("session.exceptions", session, last=last)

    def human() -> None:
        if not reply.exceptions:
            out.print(f"session {reply.session}: no exception taken yet")
            return
        out.print(f"session {reply.session}: the last {len(reply.exceptions)} of {reply.total:,} exceptions taken")
        out.print(exceptions_table(reply.exceptions))

    emit(reply, as_json, human)


@app.command("delete")
def delete(session: SessionArg,
           purge: Annotated[bool, typer.Option("--purge", help="Also delete the console log and other artifacts.")] = False,
           as_json: JsonOpt = False) -> None:
    """Delete a session and stop its emulator.

    Its console log is kept unless --purge.

    Example: virsim session delete 3fa9c2d1 --purge
    """
    reply = client().session_delete(session, purge=purge)
    kept = "" if reply.purged else f"; console log kept at {reply.console_log}"
    emit(reply, as_json, lambda: out.print(f"session {reply.session} deleted{kept}"))
