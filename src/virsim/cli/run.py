"""`virsim run`: one command for Makefiles and CI jobs (expectations, scenarios, JUnit)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from virsim.cli.common import JsonOpt, parse_duration, split_firmware
from virsim.cli.render import err, out, print_error

STATUS_STYLE = {"passed": "green", "failed": "red", "timeout": "yellow", "error": "red", "skipped": "dim"}


def run(
    firmware: Annotated[Optional[Path], typer.Argument(help="Firmware image (ELF, hex or bin).")] = None,
    node_firmware: Annotated[Optional[list[str]], typer.Option("--firmware", "-f", help="Multi-node boards: NODE=IMAGE "
                                                               "for each node (instead of FIRMWARE).")] = None,
    sync: Annotated[str, typer.Option(help="Multi-node boards: timeslice, step or event.")] = "timeslice",
    quantum: Annotated[str, typer.Option(help="Multi-node boards: the sync quantum (100us; step: instructions).")] = "100us",
    board: Annotated[str, typer.Option("--board", "-b", help="Board name or board file.")] = "mps2-an385",
    backend: Annotated[Optional[str], typer.Option(help="Override the board's backend: qemu or builtin.")] = None,
    expect_text: Annotated[Optional[list[str]], typer.Option("--expect-text", "-e", help="Pass once the console shows this (repeat: in order).")] = None,
    fail_text: Annotated[Optional[list[str]], typer.Option("--fail-text", "-F", help="Fail as soon as the console shows this (repeatable).")] = None,
    timeout: Annotated[Optional[str], typer.Option(help="Time limit, e.g. 2s or 500ms (default 10s; per step with --scenario).")] = None,
    timeout_is: Annotated[Optional[str], typer.Option("--timeout-is", help="virtual (default when deterministic) or wall.")] = None,
    scenario: Annotated[Optional[Path], typer.Option(help="Scenario file (YAML) of steps to run and check.")] = None,
    junit: Annotated[Optional[Path], typer.Option(help="Write a JUnit XML report here.")] = None,
    serial_log: Annotated[Optional[Path], typer.Option("--serial-log", help="Write the console output here.")] = None,
    coverage: Annotated[Optional[Path], typer.Option(help="Write the run's line coverage here: lcov (genhtml reads "
                                                          "it); a .json or .drcov name picks that format.")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the session (on the per-user daemon) and print its id.")] = False,
    deterministic: Annotated[bool, typer.Option("--deterministic/--no-deterministic", help="Instruction-counted time (default on).")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Stream the console while running.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run firmware until it prints what you expect: exit 0 passed, 1 failed, 42 timed out, 2 could not run.

    Example: virsim run examples/hello/hello.elf --board mps2-an385 --expect-text "tick 3" --timeout 2s

    Example: virsim run app.elf --scenario tests/boot.yaml --junit out/junit.xml --serial-log out/uart.log

    Example: virsim run app.elf --expect-text PASS --coverage out/cov.info && genhtml out/cov.info -o out/html

    Example: virsim run --board boards/dual-core-mailbox.yaml --firmware cpu0=examples/multinode/cpu0.elf --firmware cpu1=examples/multinode/cpu1.elf --expect-text "cpu1: got 10"
    """
    from virsim.ci.junit import write_junit
    from virsim.ci.result import CheckResult, RunResult, Status
    from virsim.ci.runner import RunOptions, Runner
    from virsim.ci.scenario import load_scenario
    from virsim.errors import VirsimError

    image, per_node = split_firmware(node_firmware)
    if firmware is None and image is not None:
        firmware = Path(image)
    label = firmware or Path("+".join(sorted(per_node)) or "firmware")
    try:
        if firmware is None and not per_node:
            raise typer.BadParameter("give the FIRMWARE image (or --firmware NODE=IMAGE for each node of a board)")
        opts = RunOptions(
            firmware=firmware.expanduser().resolve() if firmware else label, board=board,
            node_firmware={n: Path(f).expanduser().resolve() for n, f in per_node.items()}, sync=sync, quantum=quantum, backend=backend, expect_text=expect_text or [],
            fail_text=fail_text or [], timeout=parse_duration(timeout, "--timeout") if timeout else None,
            timeout_is=timeout_is, deterministic=deterministic,
            scenario=load_scenario(scenario) if scenario is not None else None, keep=keep,
            coverage=coverage.expanduser().resolve() if coverage is not None else None,
            on_output=(lambda data: (sys.stderr.buffer.write(data), sys.stderr.buffer.flush())) if verbose else None)
        result = Runner(opts).run()
    except VirsimError as error:  # before the run could start: bad scenario, bad option
        result = RunResult(name=label.name, firmware=str(label), board=board, status=Status.ERROR,
                           seconds=0.0, checks=[CheckResult("set-up", Status.ERROR, message=str(error))],
                           message=str(error), error=error.to_wire())
        if not as_json:
            print_error(error, as_json=False)
    except typer.BadParameter as error:
        result = RunResult(name=label.name, firmware=str(label), board=board, status=Status.ERROR,
                           seconds=0.0, checks=[CheckResult("set-up", Status.ERROR, message=str(error))],
                           message=str(error))
        if not as_json:
            err.print(f"[red]error[/]: {error}")
    if serial_log is not None:
        serial_log.parent.mkdir(parents=True, exist_ok=True)
        serial_log.write_bytes(result.serial_log)
    if junit is not None:
        write_junit(junit, [result])
    if as_json:
        doc = {"name": result.name, "status": result.status.value, "exit_code": result.exit_code,
               "seconds": round(result.seconds, 3), "virtual_ns": result.virtual_ns, "board": result.board,
               "firmware": result.firmware, "session": result.session, "message": result.message,
               "error": result.error, "coverage": result.coverage,
               "checks": [{"name": c.name, "status": c.status.value, "seconds": round(c.seconds, 3),
                           "message": c.message, "virtual_ns": c.virtual_ns} for c in result.checks],
               "serial_log": result.serial_log.decode("latin-1")}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        for c in result.checks:
            style = STATUS_STYLE[c.status.value]
            detail = f" — {c.message}" if c.message and c.status != Status.PASSED else ""
            out.print(f"[{style}]{c.status.value.upper():>7}[/] {c.name}{detail}", highlight=False)
        virtual = f", {result.virtual_ns / 1e9:.3f}s virtual" if result.virtual_ns is not None else ""
        style = STATUS_STYLE[result.status.value]
        out.print(f"[bold {style}]{result.status.value.upper()}[/] {result.name} on {result.board} in "
                  f"{result.seconds:.2f}s{virtual}" + (f"; session kept: {result.session}" if result.session else "")
                  + (f"; coverage: {result.coverage}" if result.coverage else ""), highlight=False)
        if result.status in (Status.FAILED, Status.TIMEOUT):
            failed = next((c for c in result.checks if c.status == result.status), None)
            if failed and failed.console_excerpt:
                err.print("[dim]console (last bytes):[/]")
                err.print(failed.console_excerpt[-800:], markup=False, highlight=False)
    raise typer.Exit(result.exit_code)
