"""`virsim run`: one command for Makefiles and CI jobs (expectations, scenarios, JUnit).

Spellings of Wokwi CLI (`wokwi-cli`) are accepted too, as CI users bring them: `--serial-log-file`,
`--expect-regex`, `--fail-regex`, `--timeout-exit-code`, `--interactive`, and a bare `--timeout`
number meaning milliseconds of simulated time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer

from virsim.atomic import write_atomic
from virsim.cli.common import JsonOpt, parse_duration, split_firmware
from virsim.cli.render import err, out, print_error

STATUS_STYLE = {"passed": "green", "failed": "red", "timeout": "yellow", "error": "red", "skipped": "dim",
                "interrupted": "yellow"}


def _ordered(kind: str, regex: bool) -> Any:
    """A callback that keeps --expect-text and --expect-regex (or the fail pair) in the order they
    were typed (click calls callbacks in command-line order)."""
    def collect(ctx: click.Context, _param: click.Parameter, values: tuple[str, ...] | None) -> list[str]:
        from virsim.ci.scenario import Pattern
        from virsim.errors import InvalidInput

        order = ctx.meta.setdefault(f"virsim.{kind}", [])
        for value in values or ():
            if regex:
                try:
                    order.append(Pattern(regex=value))
                except ValueError as error:
                    raise InvalidInput(f"--{kind}-regex {value!r} is not a valid regular expression",
                                       field=f"{kind}-regex", value=value) from error
            else:
                order.append(value)
        return list(values or ())
    return collect


def run_timeout(value: str) -> float:
    """`2s`, `500ms`, `1m` -> seconds; a bare number is milliseconds of simulated time, as in Wokwi CLI."""
    text = value.strip()
    try:
        ms = float(text)
    except ValueError:
        return parse_duration(text, "--timeout")
    if ms <= 0:
        raise typer.BadParameter(f"--timeout must be positive, got {value!r}")
    err.print(f"[yellow]note[/]: a bare --timeout number is milliseconds of simulated time (as in Wokwi CLI): "
              f"{text} = {ms / 1000:g}s; write {ms / 1000:g}s or {text}ms to say so", highlight=False)
    return ms / 1000


def run(
    ctx: typer.Context,
    firmware: Annotated[Optional[Path], typer.Argument(help="Firmware image (ELF, hex or bin).")] = None,
    node_firmware: Annotated[Optional[list[str]], typer.Option("--firmware", "-f", help="Multi-node boards: NODE=IMAGE "
                                                               "for each node (instead of FIRMWARE).")] = None,
    sync: Annotated[str, typer.Option(help="Multi-node boards: timeslice, step or event.")] = "timeslice",
    quantum: Annotated[str, typer.Option(help="Multi-node boards: the sync quantum (100us; step: instructions).")] = "100us",
    board: Annotated[str, typer.Option("--board", "-b", help="Board name or board file.")] = "mps2-an385",
    backend: Annotated[Optional[str], typer.Option(help="Override the board's backend: qemu, builtin or renode; multi-node boards: one for every node, or NODE=BACKEND pairs (cpu1=renode,cpu2=qemu).")] = None,
    expect_text: Annotated[Optional[list[str]], typer.Option(
        "--expect-text", "-e", help="Pass once the console shows this (repeat: in order).",
        callback=_ordered("expect", False))] = None,
    expect_regex: Annotated[Optional[list[str]], typer.Option(
        "--expect-regex", help="Like --expect-text, a Python regular expression.",
        callback=_ordered("expect", True))] = None,
    fail_text: Annotated[Optional[list[str]], typer.Option(
        "--fail-text", "-F", help="Fail as soon as the console shows this (repeatable).",
        callback=_ordered("fail", False))] = None,
    fail_regex: Annotated[Optional[list[str]], typer.Option(
        "--fail-regex", help="Like --fail-text, a Python regular expression.", callback=_ordered("fail", True))] = None,
    timeout: Annotated[Optional[str], typer.Option(help="Time limit of the firmware's own time, e.g. 2s or 500ms "
                                                        "(default 10s; per step with --scenario; a bare number is ms).")] = None,
    timeout_is: Annotated[Optional[str], typer.Option("--timeout-is", help="virtual (default when deterministic) or wall.")] = None,
    timeout_exit_code: Annotated[int, typer.Option("--timeout-exit-code", min=0, max=255,
                                                   help="Exit code of a run that timed out.")] = 42,
    scenario: Annotated[Optional[Path], typer.Option(help="Scenario file (YAML) of steps to run and check.")] = None,
    junit: Annotated[Optional[Path], typer.Option(help="Write a JUnit XML report here.")] = None,
    serial_log: Annotated[Optional[Path], typer.Option("--serial-log", "--serial-log-file",
                                                       help="Write the console output here.")] = None,
    coverage: Annotated[Optional[Path], typer.Option(help="Write the run's line coverage here: lcov (genhtml reads "
                                                          "it); a .json or .drcov name picks that format.")] = None,
    allow_faults: Annotated[bool, typer.Option("--allow-faults", help="Keep running when the firmware faults "
                                                                      "(for firmware that handles its own faults).")] = False,
    interactive: Annotated[bool, typer.Option("--interactive", help="Send what is typed on stdin to the console UART.")] = False,
    allow_unsafe_qemu_args: Annotated[bool, typer.Option(
        "--allow-unsafe-qemu-args", help="Run the board's qemu.extra_args even where they open the host.")] = False,
    semihosting: Annotated[bool, typer.Option(
        "--semihosting", help="Serve ARM semihosting: files in the run's session folder, debug console to "
        "semihosting.log.")] = False,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the session (on the per-user daemon) and print its id.")] = False,
    compare: Annotated[Optional[str], typer.Option(
        "--compare", help="Run on two backends (qemu,builtin) and report the first console byte where they differ, "
        "with both backends' pc, registers and last exceptions there.")] = None,
    deterministic: Annotated[bool, typer.Option("--deterministic/--no-deterministic", help="Instruction-counted time (default on).")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not stream the console while running.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", hidden=True, help="Stream the console (the default).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run firmware until it prints what you expect (for CI).

    Exit 0 passed, 1 failed, 42 timed out (--timeout-exit-code), 2 could not run. The console is streamed while the run goes on (--quiet silences it; with --json it goes to stderr).
    A fault of the firmware (HardFault, MemManage, BusFault, UsageFault, lockup) fails the run at once
    with the decoded fault, unless --allow-faults. SIGINT/SIGTERM stop everything and exit 130/143.

    Example: virsim run examples/hello/hello.elf --board mps2-an385 --expect-text "tick 3" --timeout 5s

    Example: virsim run examples/hello/hello.elf --scenario examples/ci/boot.yaml --junit out/junit.xml --serial-log out/uart.log

    Example: virsim run examples/hello/hello.elf --expect-text "tick 1" --coverage out/cov.info && genhtml out/cov.info -o out/html

    Example: virsim run examples/hello/fault.elf --expect-text "tick 3"     # FAILED: UsageFault (DIVBYZERO) at ...

    Example: virsim run --board boards/dual-core-mailbox.yaml --firmware cpu0=examples/multinode/cpu0.elf --firmware cpu1=examples/multinode/cpu1.elf --expect-text "cpu1: got 10"

    Example: virsim run examples/irqload/irqload.elf --compare qemu,builtin --timeout 2s     # exit 1 where they differ
    """
    from virsim.ci.junit import write_junit
    from virsim.ci.result import CheckResult, RunResult, Status
    from virsim.ci.runner import Runner, RunOptions, interruptible
    from virsim.ci.scenario import load_scenario
    from virsim.errors import VirsimError

    image, per_node = split_firmware(node_firmware)
    if firmware is None and image is not None:
        firmware = Path(image)
    label = firmware or Path("+".join(sorted(per_node)) or "firmware")
    stream = sys.stderr if as_json else sys.stdout
    said: list[Any] = []  # the verdict printed before the clean-up (its status then)
    streamed = bytearray(b"\n")  # the last byte streamed: the verdict starts on a line of its own

    def show(data: bytes) -> None:
        stream.buffer.write(data)
        stream.buffer.flush()
        streamed[-1:] = data[-1:]

    def progress(text: str) -> None:
        if not as_json and err.is_terminal:
            err.print(f"[dim]{text}[/]", highlight=False)

    try:
        with interruptible():
            if firmware is None and not per_node:
                raise typer.BadParameter("give the FIRMWARE image (or --firmware NODE=IMAGE for each node of a board)")
            from virsim.firmware import inspect
            for path in ([firmware] if firmware else []) + [Path(f) for f in per_node.values()]:
                inspect(path.expanduser())  # a missing or unreadable image is reported now, before any daemon starts
            opts = RunOptions(
                firmware=firmware.expanduser().resolve() if firmware else label, board=board,
                node_firmware={n: Path(f).expanduser().resolve() for n, f in per_node.items()}, sync=sync,
                quantum=quantum, backend=backend, expect_text=ctx.meta.get("virsim.expect", []),
                fail_text=ctx.meta.get("virsim.fail", []), timeout=run_timeout(timeout) if timeout else None,
                timeout_is=timeout_is, deterministic=deterministic,
                scenario=load_scenario(scenario) if scenario is not None else None, keep=keep,
                coverage=coverage.expanduser().resolve() if coverage is not None else None,
                allow_faults=allow_faults, interactive=interactive, allow_unsafe_qemu_args=allow_unsafe_qemu_args,
                semihosting=semihosting,
                on_output=None if quiet else show, on_progress=progress,
                on_verdict=None if as_json else lambda r: (said.append(r.status), _verdict(
                    r, streamed[-1:] != b"\n", streamed=not quiet)))
            if compare is not None:
                _run_compare(opts, compare, backend, serial_log, junit, as_json)
            result = Runner(opts).run()
    except VirsimError as error:  # before the run could start: bad scenario, bad option, missing file
        result = RunResult(name=label.name, firmware=str(label), board=board, status=Status.ERROR,
                           seconds=0.0, checks=[CheckResult("set-up", Status.ERROR, message=str(error))],
                           message=str(error), error=error.to_wire())
    except typer.BadParameter as error:
        result = RunResult(name=label.name, firmware=str(label), board=board, status=Status.ERROR,
                           seconds=0.0, checks=[CheckResult("set-up", Status.ERROR, message=str(error))],
                           message=str(error))
    if serial_log is not None:
        serial_log.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(serial_log, result.serial_log)
    if junit is not None:
        write_junit(junit, [result])
    code = timeout_exit_code if result.status == Status.TIMEOUT else result.exit_code
    if as_json:
        doc = {"name": result.name, "status": result.status.value, "exit_code": code,
               "seconds": round(result.seconds, 3), "virtual_ns": result.virtual_ns, "board": result.board,
               "firmware": result.firmware, "session": result.session, "message": result.message,
               "error": result.error, "fault": result.fault, "coverage": result.coverage,
               "instructions_per_s": result.instructions_per_s,
               "checks": [{"name": c.name, "status": c.status.value, "seconds": round(c.seconds, 3),
                           "message": c.message, "virtual_ns": c.virtual_ns, "fault": c.fault}
                          for c in result.checks],
               "serial_log": result.serial_log.decode("latin-1")}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    elif not said:
        _verdict(result, streamed[-1:] != b"\n", streamed=not quiet)
    elif said[0] != result.status:  # the clean-up changed it (it had to kill something)
        err.print(f"[red]{result.status.value.upper()}[/] {result.message}", highlight=False)
    raise typer.Exit(code)


def _run_compare(opts: Any, compare: str, backend: str | None, serial_log: Path | None, junit: Path | None,
                 as_json: bool) -> None:
    """`--compare A,B`: both runs, the comparison, its report; exits."""
    from virsim.ci.compare import Compare, parse_backends, to_json
    from virsim.ci.junit import write_junit
    from virsim.errors import InvalidInput

    if backend is not None:
        raise InvalidInput("--compare names the backends: drop --backend", field="backend", value=backend)
    backends = parse_backends(compare)
    progress = opts.on_progress
    comparison = Compare(opts, backends).run(on_progress=progress)
    for name, result in zip(backends, comparison.results):
        result.name = f"{result.name} [{name}]"
        if serial_log is not None:
            path = serial_log.with_name(f"{serial_log.stem}.{name}{serial_log.suffix}")
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, result.serial_log)
    if junit is not None:
        write_junit(junit, comparison.results)
    if as_json:
        sys.stdout.write(json.dumps(to_json(comparison), indent=2) + "\n")
    else:
        _comparison_report(comparison, opts)
    raise typer.Exit(comparison.exit_code)


def _comparison_report(comparison: Any, opts: Any) -> None:
    from rich.markup import escape

    from virsim.ci.compare import REGISTER_ORDER
    from virsim.cli.render import table
    from virsim.cli.session import exceptions_table
    from virsim.protocol import ExceptionTaken

    names = comparison.backends
    width = max(len(n) for n in names)
    for name, r in zip(names, comparison.results):
        virtual = f", {r.virtual_ns / 1e9:.3f}s virtual" if r.virtual_ns is not None else ""
        speed = f" ({r.instructions_per_s / 1e6:.1f} M instructions/s)" if r.instructions_per_s else ""
        style = STATUS_STYLE[r.status.value]
        detail = f" — {escape(r.message)}" if r.message and r.status.value != "passed" else ""
        out.print(f"  {name:<{width}}  [{style}]{r.status.value.upper():>7}[/] in {r.seconds:.2f}s{virtual}{speed}, "
                  f"{len(r.serial_log)} console bytes{detail}", highlight=False)
    label = f"{Path(str(opts.firmware)).name} on {opts.board}"
    if comparison.results and any(r.status.value in ("error", "interrupted") for r in comparison.results):
        out.print(f"[bold red]NOT COMPARED[/] {label}: a run did not complete", highlight=False)
        return
    if comparison.identical:
        same = len({r.status for r in comparison.results}) == 1
        verdict = "[bold green]SAME[/]" if same else "[bold red]DIFFERENT VERDICTS[/]"
        out.print(f"{verdict} {label}: {len(comparison.results[0].serial_log)} console bytes identical on "
                  f"{' and '.join(names)}", highlight=False)
        return
    at = comparison.offset
    out.print(f"[bold red]DIFFERENT[/] {label}: {' and '.join(names)} part at console byte {at} "
              f"(line {comparison.line}, column {comparison.column})", highlight=False)
    for name, r in zip(names, comparison.results):
        log = r.serial_log
        start = log.rfind(b"\n", 0, at) + 1
        end = log.find(b"\n", at)
        text = log[start:end + 1 if end >= 0 else len(log)]
        shown = repr(text.decode("latin-1")) if text else "(nothing: the console ends before this line)"
        out.print(f"  {name:<{width}}  {escape(shown)}", highlight=False)
    column = at - (comparison.results[0].serial_log.rfind(b"\n", 0, at) + 1)
    out.print(f"  {'':<{width}}  {' ' * (column + 1)}^", highlight=False)
    if comparison.error:
        err.print(f"[yellow]could not stop the backends at that byte[/]: {escape(comparison.error)}", highlight=False)
        return
    states = comparison.states
    t = table("", *names)
    t.add_row("stopped", *["sent byte " + str(at) if s.reason == "sent" else "its run's end (never sent it)"
                           for s in states])
    t.add_row("virtual time", *[f"{s.virtual_ns / 1e9:.9f} s" if s.virtual_ns is not None else "-" for s in states])
    t.add_row("instructions", *[f"{s.instructions:,}" if s.instructions is not None else "-" for s in states])
    t.add_row("location", *[escape(s.location or "-") for s in states])
    present = [n for n in REGISTER_ORDER if any(n in s.registers for s in states)]
    for reg in present:
        values = [s.registers.get(reg) for s in states]
        differ = len({v for v in values if v is not None}) > 1
        cells = ["-" if v is None else f"{v:#010x}" for v in values]
        t.add_row(f"[bold]{reg} *[/]" if differ else reg, *[f"[yellow]{c}[/]" if differ else c for c in cells])
    out.print(t)
    out.print("  (* differs)", style="dim", highlight=False)
    for s in states:
        out.print(f"  [bold]{s.backend}[/]: the last {len(s.exceptions)} of {s.exceptions_total or 0:,} exceptions "
                  "taken (oldest first)" if s.exceptions else f"  [bold]{s.backend}[/]: no exception taken"
                  + (f" ({escape(s.note)})" if s.note else ""), highlight=False)
        if s.exceptions:
            out.print(exceptions_table([ExceptionTaken(**e) for e in s.exceptions]))


def _verdict(result: Any, newline: bool, streamed: bool) -> None:
    from virsim.ci.result import Status

    if newline:
        out.print()
    checks = result.checks
    if result.status == Status.ERROR and [c.name for c in checks] == ["set-up"]:
        # Could not start (bad file, board, option): the error, once, with its details.
        from virsim.errors import VirsimError
        print_error(VirsimError.from_wire(result.error or {"error": result.message, "code": "INVALID_INPUT"}),
                    as_json=False)
        checks = []
    elif result.status == Status.INTERRUPTED:
        err.print(f"[yellow]interrupted[/] ({result.message.removeprefix('interrupted by ')}): stopped the emulator "
                  "and the run's daemon", highlight=False)
    for c in checks:
        style = STATUS_STYLE[c.status.value]
        detail = f" — {c.message}" if c.message and c.status != Status.PASSED else ""
        out.print(f"[{style}]{c.status.value.upper():>7}[/] {c.name}{detail}", highlight=False, markup=True)
    if result.fault:
        for line in _fault_lines(result.fault):
            out.print(f"        {line}", highlight=False, markup=False)
    virtual = f", {result.virtual_ns / 1e9:.3f}s virtual" if result.virtual_ns is not None else ""
    speed = f" ({result.instructions_per_s / 1e6:.1f} M instructions/s)" if result.instructions_per_s else ""
    style = STATUS_STYLE[result.status.value]
    out.print(f"[bold {style}]{result.status.value.upper()}[/] {result.name} on {result.board} in "
              f"{result.seconds:.2f}s{virtual}{speed}" + (f"; session kept: {result.session}" if result.session else "")
              + (f"; coverage: {result.coverage}" if result.coverage else ""), highlight=False)
    if result.status in (Status.FAILED, Status.TIMEOUT) and not result.fault:
        failed = next((c for c in result.checks if c.status == result.status), None)
        if failed and failed.console_excerpt and not streamed:
            err.print("[dim]console (last bytes):[/]")
            err.print(failed.console_excerpt[-800:], markup=False, highlight=False)


def _fault_lines(fault: dict[str, Any]) -> list[str]:
    """A decoded fault as a firmware engineer reads it: what, where, and the status bits."""
    lines = [str(fault.get("summary") or fault.get("handler"))]
    where = fault.get("fault_location")
    if fault.get("fault_pc") is not None:
        lines.append(f"faulting pc {int(fault['fault_pc']):#010x}" + (f" in {where}" if where else ""))
    for name in ("CFSR", "HFSR", "MMFAR", "BFAR"):
        if fault.get(name) is not None and (name in ("CFSR", "HFSR") or fault.get(name)):
            lines.append(f"{name} = {int(fault[name]):#010x}")
    for bit in fault.get("bits") or []:
        lines.append(f"  {bit['bit']}: {bit['meaning']}")
    return lines
