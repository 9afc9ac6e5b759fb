"""`virsim debug …`: breakpoints, watchpoints, run control, registers, memory, expressions, gdb."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from virsim.atomic import write_atomic
from virsim.cli.common import JsonOpt, SessionArg, client, parse_duration, parse_int
from virsim.cli.render import emit, err, out, print_json, table
from virsim.errors import InvalidInput, Timeout
from virsim.bytestext import hexdump_lines

if TYPE_CHECKING:
    from virsim.protocol import DebugRunReply, RegisterList, StopInfo

app = typer.Typer(help="Debug a session: breakpoints, stepping, registers, memory, gdb.", no_args_is_help=True)
PeekOpt = Annotated[bool, typer.Option("--peek", help="On a running session: halt, read, resume.")]
NodeOpt = Annotated[Optional[str], typer.Option("--node", help="Multi-node boards: the (built-in) node to debug; "
                                                "default: the node debugged last (at first the board's first).")]


def describe_stop(stop: StopInfo) -> str:
    where = stop.function or (f"{stop.pc:#x}" if stop.pc is not None else "?")
    if stop.file:
        where += f" ({stop.file}:{stop.line})"
    pc = f", pc {stop.pc:#010x}" if stop.pc is not None else ""
    if stop.reason == "breakpoint":
        return f"breakpoint {stop.breakpoint} at {where}{pc}"
    if stop.reason == "running":  # where --peek on a running target
        return f"running; peeked at {where}{pc}"
    if stop.reason == "watchpoint" and stop.watch:
        w = stop.watch
        change = f"{w.get('old')} -> {w.get('new')}" if w.get("new") is not None else f"value {w.get('value')}"
        return f"watchpoint on {w.get('expression')}: {change}, at {where}{pc}"
    if stop.reason == "fault" and stop.fault:
        f = stop.fault
        text = f"FAULT {f.get('summary')}"
        if f.get("fault_pc") is not None:
            text += f"; faulting instruction at {f['fault_pc']:#010x}"
            if f.get("fault_location"):
                text += f" ({f['fault_location']})"
        for bit in f.get("bits", []):
            text += f"\n  {bit['bit']}: {bit['meaning']}"
        text += f"\n  CFSR={f.get('CFSR', 0):#010x} HFSR={f.get('HFSR', 0):#010x}; now in {where}"
        return text
    return f"{stop.reason} at {where}{pc}"


def _run_result(reply: DebugRunReply, as_json: bool, waited: float | None) -> None:
    if reply.timed_out and waited is not None:
        raise Timeout(f"session {reply.session} is still running after {waited:g}s (no stop)", session=reply.session)
    emit(reply, as_json, lambda: out.print(f"stopped: {describe_stop(reply.stop)}" if reply.stop
                                           else f"session {reply.session}: running", markup=False))


@app.command("break")
def break_(session: SessionArg,
           location: Annotated[str, typer.Argument(help="Symbol (main), file:line (hello.c:42) or *0xADDRESS.")],
           condition: Annotated[Optional[str], typer.Option("--condition", "-c", help="Stop only when this is true.")] = None,
           temporary: Annotated[bool, typer.Option("--temporary", help="Delete after the first hit.")] = False,
           ignore_count: Annotated[int, typer.Option("--ignore-count", min=0, help="Pass it N times first.")] = 0,
           node: NodeOpt = None, as_json: JsonOpt = False) -> None:
    """Set a breakpoint.

    It is kept across resets and restarts of the session.

    Example: virsim debug break 3fa9c2d1 hello.c:24 --condition "n > 5"

    Multi-node board: virsim debug break 3fa9c2d1 --node cpu1 IRQ7_Handler (a stop there halts every
    node: the others wait for it at their next barrier).
    """
    bp = client().debug("break", session, node=node, location=location, condition=condition, temporary=temporary,
                        ignore_count=ignore_count)
    emit(bp, as_json, lambda: out.print(f"breakpoint {bp.id} at {bp.resolved or bp.location}", markup=False))


@app.command("watch")
def watch(session: SessionArg,
          target: Annotated[str, typer.Argument(help="A symbol (counter) or an address (0x20000054).")],
          access: Annotated[str, typer.Option(help="write, read or access.")] = "write",
          size: Annotated[Optional[int], typer.Option(help="Bytes at an address: 1, 2, 4 or 8 (default 4).")] = None,
          ignore_count: Annotated[int, typer.Option("--ignore-count", min=0, help="Let N hits pass, stop at the next.")] = 0,
          node: NodeOpt = None, as_json: JsonOpt = False) -> None:
    """Set a watchpoint on a variable or address.

    The target stops when the program writes (or reads) it.

    Example: virsim debug watch 3fa9c2d1 tick_count --access write

    Example: virsim debug watch 3fa9c2d1 0x40004000 --access access --ignore-count 99     # the 100th byte sent to UART0
    """
    bp = client().debug("watch", session, node=node, target=target, access=access, size=size, ignore_count=ignore_count)
    at = f", {bp.size} bytes at {bp.address:#010x}" if bp.address is not None else ""
    emit(bp, as_json, lambda: out.print(f"watchpoint {bp.id} on {bp.location} ({bp.access}{at})", markup=False))


@app.command("list")
def list_(session: SessionArg, as_json: JsonOpt = False) -> None:
    """List breakpoints and watchpoints with their hit counts.

    Example: virsim debug list 3fa9c2d1
    """
    reply = client().debug("list", session)

    def human() -> None:
        t = table("ID", "TYPE", "WHERE", "CONDITION", "HITS")
        for b in reply.breakpoints:
            kind = b.kind if b.kind == "breakpoint" else f"watch ({b.access})"
            extra = [b.condition or ""]
            if b.temporary:
                extra.append("temporary")
            if b.ignore_count:
                extra.append(f"ignore {b.ignore_count}")
            if not b.enabled:
                extra.append("disabled")
            t.add_row(str(b.id), kind, b.location, " ".join(x for x in extra if x), str(b.hits))
        out.print(t)

    emit(reply, as_json, human)


@app.command("delete")
def delete(session: SessionArg,
           breakpoint: Annotated[Optional[int], typer.Argument(help="Breakpoint id (see debug list).")] = None,
           all_: Annotated[bool, typer.Option("--all", help="Delete every breakpoint and watchpoint.")] = False,
           node: NodeOpt = None, as_json: JsonOpt = False) -> None:
    """Delete a breakpoint or watchpoint, or all of them.

    Example: virsim debug delete 3fa9c2d1 --all
    """
    reply = client().debug("delete", session, node=node, breakpoint=breakpoint, all=all_)
    emit(reply, as_json, lambda: out.print(f"deleted {', '.join(map(str, reply.deleted)) or 'nothing'}"))


def _set_enabled(session: str, breakpoint: int, enabled: bool, node: str | None, as_json: bool) -> None:
    reply = client().debug("enable", session, node=node, breakpoint=breakpoint, enabled=enabled)
    emit(reply, as_json, lambda: out.print(f"{reply.kind} {reply.id} ({reply.location}) "
                                           f"{'enabled' if reply.enabled else 'disabled'}"))


@app.command("enable")
def enable(session: SessionArg, breakpoint: Annotated[int, typer.Argument(help="Breakpoint id (see debug list).")],
           node: NodeOpt = None, as_json: JsonOpt = False) -> None:
    """Stop at a disabled breakpoint or watchpoint again.

    Example: virsim debug enable 3fa9c2d1 2
    """
    _set_enabled(session, breakpoint, True, node, as_json)


@app.command("disable")
def disable(session: SessionArg, breakpoint: Annotated[int, typer.Argument(help="Breakpoint id (see debug list).")],
            node: NodeOpt = None, as_json: JsonOpt = False) -> None:
    """Keep a breakpoint or watchpoint but do not stop there.

    It keeps its number and hit count; `debug enable` turns it back on.

    Example: virsim debug disable 3fa9c2d1 2
    """
    _set_enabled(session, breakpoint, False, node, as_json)


@app.command("source")
def source(session: SessionArg,
           file: Annotated[Optional[str], typer.Argument(help="A source file of the program (its base name will "
                                                         "do); default: where the target stopped.")] = None,
           around: Annotated[Optional[int], typer.Option("--line", "-l", help="Print 10 lines around this one "
                                                         "(default: the stop's line, else the whole file).")] = None,
           as_json: JsonOpt = False) -> None:
    """Print a source file with the stop and breakpoints marked.

    '>' marks the line the target stopped at, 'B' a breakpoint, '·' a line with code.

    Example: virsim debug source 3fa9c2d1 hello.c --line 24
    """
    c = client()
    reply = c.program_source(session, file)
    if as_json:
        print_json(reply)
        return
    if reply.path is None:
        err.print(f"{reply.file}: the source file is not where the program was built from; lines with code: "
                  f"{', '.join(map(str, reply.code_lines[:40]))}")
        raise typer.Exit(1)
    info = c.session("show", session)
    stop_line = info.stop.line if info.stop and info.stop.file and \
        Path(info.stop.file).name == Path(reply.file).name else None
    marks = {b.line for b in c.debug("list", session).breakpoints
             if b.line and b.file and Path(b.file).name == Path(reply.file).name}
    centre = around or stop_line
    first, last = (max(1, centre - 5), centre + 5) if centre else (1, len(reply.lines))
    code = set(reply.code_lines)
    for n in range(first, min(last, len(reply.lines)) + 1):
        mark = (">" if n == stop_line else " ") + ("B" if n in marks else ("·" if n in code else " "))
        out.print(f"{mark} {n:5d}  {reply.lines[n - 1]}", markup=False, highlight=False)


@app.command("continue")
def continue_(session: SessionArg,
              wait: Annotated[bool, typer.Option("--wait", help="Block until the target stops; print why.")] = False,
              timeout: Annotated[str, typer.Option(help="With --wait: give up after this long (exit 42).")] = "10s",
              node: NodeOpt = None, as_json: JsonOpt = False) -> None:
    """Continue execution; --wait waits for the next stop.

    A stop: a breakpoint, a watchpoint, a fault.

    Example: virsim debug continue 3fa9c2d1 --wait --timeout 5s
    """
    seconds = parse_duration(timeout, "--timeout")
    reply = client().debug("continue", session, node=node, wait=wait, timeout=seconds)
    _run_result(reply, as_json, seconds if wait else None)


def _stepper(kind: str, doc: str) -> None:
    def command(session: SessionArg,
                count: Annotated[int, typer.Option("--count", "-n", min=1, help="Repeat N times.")] = 1,
                timeout: Annotated[str, typer.Option(help="Give up after this long (exit 42).")] = "10s",
                node: NodeOpt = None, as_json: JsonOpt = False) -> None:
        seconds = parse_duration(timeout, "--timeout")
        reply = client().debug("step", session, node=node, kind=kind, count=count, timeout=seconds)
        _run_result(reply, as_json, seconds)

    command.__doc__ = doc
    app.command(kind)(command)


_stepper("step", "Step one source line, into calls.\n\nExample: virsim debug step 3fa9c2d1")
_stepper("next", "Step one source line, over calls.\n\nExample: virsim debug next 3fa9c2d1 --count 3")
_stepper("finish", "Run until the current function returns.\n\nExample: virsim debug finish 3fa9c2d1")
_stepper("stepi", "Step one machine instruction.\n\nExample: virsim debug stepi 3fa9c2d1 -n 10")
_REVERSE = ("Needs a backend with reverse execution (the built-in engine): it goes back by restoring a "
            "checkpoint and re-executing deterministically.")
_stepper("reverse-stepi", f"Step one machine instruction backwards.\n\n{_REVERSE}\n\n"
                          "Example: virsim debug reverse-stepi 3fa9c2d1 -n 5")
_stepper("reverse-step", f"Step one source line backwards, into calls.\n\n{_REVERSE}\n\n"
                         "Example: virsim debug reverse-step 3fa9c2d1")
_stepper("reverse-next", f"Step one source line backwards, over calls.\n\n{_REVERSE}\n\n"
                         "Example: virsim debug reverse-next 3fa9c2d1")
_stepper("reverse-finish", f"Run backwards to where the current function was called.\n\n{_REVERSE}\n\n"
                           "Example: virsim debug reverse-finish 3fa9c2d1")
_stepper("reverse-continue", "Run backwards to the previous breakpoint or watchpoint.\n\n"
                             f"It stops at the latest hit before the present, or at the start of history. "
                             f"{_REVERSE}\n\nExample: virsim debug reverse-continue 3fa9c2d1")


@app.command("where")
def where(session: SessionArg, peek: PeekOpt = False, node: NodeOpt = None, as_json: JsonOpt = False) -> None:
    """Show why and where the target stopped.

    Reason, pc, function, file:line, backtrace.

    Example: virsim debug where 3fa9c2d1
    """
    stop = client().debug("where", session, node=node, peek=peek)

    def human() -> None:
        text = describe_stop(stop)
        out.print(text if stop.reason == "running" else f"stopped: {text}", markup=False)
        t = table("#", "PC", "FUNCTION", "LOCATION")
        for f in stop.backtrace:
            loc = f"{f['file']}:{f['line']}" if f.get("file") else ""
            t.add_row(str(f.get("level")), f"{f['pc']:#010x}" if f.get("pc") is not None else "?",
                      f.get("function") or "??", loc)
        out.print(t)

    emit(stop, as_json, human)


def _regs_table(regs: RegisterList) -> None:
    t = table("REGISTER", "HEX", "DECIMAL", "GROUP")
    for r in regs.registers:
        style = "bold yellow" if r.changed else ""
        t.add_row(r.name, f"{r.value:#010x}", str(r.value), r.group, style=style)
    out.print(t)
    if regs.note:
        out.print(f"[dim]note: {regs.note}[/]")
    if regs.unavailable:
        out.print(f"[dim]unavailable here: {', '.join(regs.unavailable)}[/]")


@app.command("regs")
def regs(session: SessionArg,
         scope: Annotated[str, typer.Option(help="general, all, fp or system.")] = "general",
         watch: Annotated[bool, typer.Option("--watch", help="Show them again at every stop until Ctrl-C.")] = False,
         peek: PeekOpt = False, node: NodeOpt = None, as_json: JsonOpt = False) -> None:
    """Show the registers as a table.

    Those changed since the previous stop are highlighted.

    Example: virsim debug regs 3fa9c2d1 --scope system
    """
    c = client()
    reply = c.debug("regs", session, node=node, scope=scope, peek=peek)
    emit(reply, as_json, lambda: _regs_table(reply))
    if not watch:
        return
    try:
        with c.subscribe(reply.session) as sub:
            while True:
                got = sub.recv(0.5)
                if got is None or got[0].type != "stop":
                    continue
                reply = c.debug("regs", session, node=node, scope=scope)
                if as_json:
                    print_json(reply)
                else:
                    out.print(f"\n[dim]stop {got[0].stop.seq if got[0].stop else ''}:[/]")
                    _regs_table(reply)
    except KeyboardInterrupt:
        pass


@app.command("reg-set")
def reg_set(session: SessionArg, name: Annotated[str, typer.Argument(help="Register, e.g. r0 or pc.")],
            value: Annotated[str, typer.Argument(help="New value, e.g. 0x10.")], node: NodeOpt = None,
            as_json: JsonOpt = False) -> None:
    """Set a register of a stopped target.

    Example: virsim debug reg-set 3fa9c2d1 r0 0x10
    """
    reg = client().debug("reg_set", session, node=node, name=name, value=parse_int(value, "value"))
    emit(reg, as_json, lambda: out.print(f"{reg.name} = {reg.value:#010x}"))


def hexdump(address: int, data: bytes) -> str:
    return "\n".join(hexdump_lines(address, data))


@app.command("mem")
def mem(session: SessionArg,
        address: Annotated[str, typer.Argument(help="Address (0x20000000) or symbol (counter).")],
        size: Annotated[Optional[str], typer.Argument(help="Bytes, e.g. 64 or 0x100 (default: the symbol's size, or 64).")] = None,
        fmt: Annotated[str, typer.Option("--format", help="hex, u32, ascii or bin (raw bytes).")] = "hex",
        out_file: Annotated[Optional[Path], typer.Option("--out", help="Write the raw bytes to this file.")] = None,
        peek: PeekOpt = False, node: NodeOpt = None, as_json: JsonOpt = False) -> None:
    """Read memory as a hexdump, words, text or a file.

    Formats: a hexdump, 32-bit words, text, or raw bytes to a file.

    Example: virsim debug mem 3fa9c2d1 0x20000000 64 --format u32
    """
    if fmt not in ("hex", "u32", "ascii", "bin"):
        raise InvalidInput(f"--format must be hex, u32, ascii or bin, got {fmt!r}", field="format")
    chunk = client().debug("mem", session, node=node, address=address, size=parse_int(size, "size"), peek=peek)
    data = bytes.fromhex(chunk.data)
    if out_file is not None:
        write_atomic(out_file, data)

    def human() -> None:
        if out_file is not None:
            err.print(f"wrote {len(data)} bytes from {chunk.address:#010x} to {out_file}")
        elif fmt == "bin":
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        elif fmt == "u32":
            words = [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data) - len(data) % 4, 4)]
            for i in range(0, len(words), 4):
                print(f"{chunk.address + i * 4:08x}  " + " ".join(f"{w:#010x}" for w in words[i:i + 4]))
        elif fmt == "ascii":
            sys.stdout.buffer.write(data + b"\n")  # the bytes as they are, not re-encoded
            sys.stdout.buffer.flush()
        else:
            print(hexdump(chunk.address, data))

    emit(chunk, as_json, human)


@app.command("mem-write")
def mem_write(session: SessionArg,
              address: Annotated[str, typer.Argument(help="Address (0x20000000) or symbol (counter).")],
              value: Annotated[Optional[str], typer.Argument(help="A number to store (see --width).")] = None,
              width: Annotated[int, typer.Option(help="Bytes of the number: 1, 2, 4 or 8 (little-endian).")] = 4,
              from_file: Annotated[Optional[Path], typer.Option("--from-file", help="Write this file's bytes.")] = None,
              node: NodeOpt = None, as_json: JsonOpt = False) -> None:
    """Write memory of a stopped target.

    A number of --width bytes, or the bytes of a file.

    Example: virsim debug mem-write 3fa9c2d1 tick_count 0x0 --width 4
    """
    if (value is None) == (from_file is None):
        raise InvalidInput("give either a value or --from-file", field="value")
    if from_file is not None:
        data = from_file.read_bytes()
    else:
        if width not in (1, 2, 4, 8):
            raise InvalidInput(f"--width must be 1, 2, 4 or 8, got {width}", field="width")
        number = parse_int(value, "value") or 0
        data = (number % (1 << (8 * width))).to_bytes(width, "little")
    chunk = client().debug("mem_write", session, node=node, address=address, data=data.hex())
    emit(chunk, as_json, lambda: out.print(f"wrote {chunk.size} bytes at {chunk.address:#010x}: {chunk.data}"))


@app.command("eval")
def eval_(session: SessionArg, expression: Annotated[str, typer.Argument(help="C expression, e.g. 'counter * 2'.")],
          peek: PeekOpt = False, node: NodeOpt = None, as_json: JsonOpt = False) -> None:
    """Evaluate an expression in the program's terms.

    Globals, and the locals of the current frame.

    Example: virsim debug eval 3fa9c2d1 "tick_count * 2"
    """
    reply = client().debug("eval", session, node=node, expression=expression, peek=peek)
    emit(reply, as_json, lambda: print(reply.value))


@app.command("disasm")
def disasm(session: SessionArg,
           at: Annotated[Optional[str], typer.Option(help="Address or symbol (default: the pc).")] = None,
           count: Annotated[int, typer.Option(min=1, help="How many instructions.")] = 16,
           peek: PeekOpt = False, node: NodeOpt = None, as_json: JsonOpt = False) -> None:
    """Disassemble at the pc, an address or a symbol.

    Example: virsim debug disasm 3fa9c2d1 --at main --count 8
    """
    reply = client().debug("disasm", session, node=node, at=at, count=count, peek=peek)

    def human() -> None:
        for ins in reply.instructions:
            where = f"<{ins.function}+{ins.offset}>" if ins.function else ""
            print(f"{ins.address:#010x} {where:<20} {ins.text}")

    emit(reply, as_json, human)


@app.command("gdb")
def gdb(session: SessionArg,
        tcp: Annotated[bool, typer.Option("--tcp", help="Also listen on 127.0.0.1 (for IDEs that need TCP).")] = False,
        port: Annotated[Optional[int], typer.Option("--port", min=1, max=65535,
                                                    help="With --tcp: this fixed port, e.g. for a launch.json "
                                                    "(default: a free one).")] = None,
        as_json: JsonOpt = False) -> None:
    """Show how to attach your own gdb (or IDE) to the session.

    The address and the exact command.

    While it is attached, virsim's debug commands answer DEBUGGER_BUSY; detach to get them back.
    `by name` is a socket path that stays the same for every session of this name.

    Example: virsim debug gdb 3fa9c2d1 --tcp --port 3333
    """
    ep = client().debug("gdb", session, tcp=tcp or port is not None, port=port)

    def human() -> None:
        out.print(f"address: {ep.address}", markup=False)
        if ep.by_name:
            out.print(f"by name: {ep.by_name}", markup=False)
        out.print(f"command: {ep.command}", markup=False)
        if ep.held_by:
            out.print(f"[yellow]held by an {ep.held_by} debugger now[/]")

    emit(ep, as_json, human)
