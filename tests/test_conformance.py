"""Conformance of the built-in engine's ARMv7-M exception model and mps2 peripherals, with QEMU as
the oracle.

Each probe in tests/conformance/ exercises one rule group and prints what it observed (register
values read back, the order handlers ran in, stacked values, fault status registers), one line per
check, then "DONE"; nothing it prints depends on instruction timing. The test runs the committed ELF
on QEMU 7.2 (deterministic: -icount) and on the built-in engine in process, and requires the same
bytes, line by line.

Two kinds of known difference are spelled out here rather than hidden:

- QEMU_DEVIATIONS: lines where QEMU 7.2 is known to disagree with the ARMv7-M Architecture
  Reference Manual (or the Cortex-M/CMSDK manuals). For those the engine may print either QEMU's
  line or the architectural one given here; the test also checks that QEMU still prints what this
  table says (a newer QEMU that fixed it shows up as a failure of that check).
- ENGINE_LIMITS: lines where the built-in engine knowingly differs (it models no MPU), each with
  the engine's line and why; docs/builtin-engine.md lists them.
- Probe.diverges: what the built-in engine does not implement at all yet, marked
  xfail(strict=True) naming the difference, so the suite shows the gap; once the engine has it
  the strict xfail fails (XPASS) and the mark goes. (None today: the FP extension, the last one,
  is in.)

The probes are committed prebuilt (like the examples); test_committed_probes_match_their_sources
rebuilds them from clean and requires byte-identical ELFs.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT, need_tool, process_progress, wait_progress

CONFORMANCE = ROOT / "tests" / "conformance"
DONE = b"DONE\n"
# Cycles the built-in engine may run a probe for: the slowest needs about 6 million.
ENGINE_BUDGET = 400_000_000
# QEMU with -icount shift=N: 2**N ns of virtual time per instruction. shift=0 runs the CPU 40 times
# faster than the 25 MHz peripheral clock (the engine runs it at 1 instruction per cycle); shift=6
# slower than it. The probes must print the same at both.
QEMU_SHIFT = 0
QEMU_SLOW_SHIFT = 6


@dataclass(frozen=True)
class Probe:
    name: str
    diverges: str | None = None  # what the built-in engine currently gets wrong (xfail reason)
    machine: str = "mps2-an385"  # QEMU -M
    board: str = "mps2-an385"  # the built-in engine's board: a template name or a file

    @property
    def elf(self) -> Path:
        return CONFORMANCE / f"{self.name}.elf"


AN386 = str(CONFORMANCE / "mps2-an386.yaml")

PROBES = [
    Probe("scbid"),
    Probe("prio"),
    Probe("masks"),
    Probe("preempt"),
    Probe("excreturn"),
    Probe("invpc1"),
    Probe("invpc2"),
    Probe("invpc3"),
    Probe("invpc4"),
    Probe("stack"),
    Probe("svc"),
    Probe("systick"),
    Probe("sleep"),
    Probe("wfe"),
    Probe("bkpt"),
    Probe("apbtimer"),
    Probe("dualtimer"),
    Probe("uartirq"),
    Probe("memmap"),
    Probe("fpframe", machine="mps2-an386", board=AN386),
]

# What the built-in engine knowingly does differently, documented in docs/builtin-engine.md:
# probe -> {QEMU's line: (the engine's line, why)}.
ENGINE_LIMITS: dict[str, dict[str, tuple[str, str]]] = {
    "scbid": {
        "debug dhcsr_low=0x00000000 demcr=0x00000000 mpu_type=0x00000800": (
            "debug dhcsr_low=0x00000000 demcr=0x00000000 mpu_type=0x00000000",
            "the built-in engine models no MPU, and says so: MPU_TYPE.DREGION reads 0 (QEMU models PMSAv7 with 8 "
            "regions)"),
    },
}

# QEMU 7.2 against the architecture: probe -> {QEMU's line: (the architectural line, why)}.
QEMU_DEVIATIONS: dict[str, dict[str, tuple[str, str]]] = {
    "sleep": {
        "scr reset=0x00000000 three_bits=0x00000012 ffffffff=0xfffffff3": (
            "scr reset=0x00000000 three_bits=0x00000016 ffffffff=0x00000016",
            ("QEMU makes SCR.SLEEPDEEP RAZ/WI (it has no deep sleep) and keeps whatever is written to the "
             "reserved bits 31:5, 3 and 0; ARMv7-M B3.2.7 defines SLEEPDEEP as read/write, and a Cortex-M3 "
             "reads its reserved SCR bits as 0")),
        "sleeponexit hits_at_wfi_return=0x00000001 hits=0x00000003": (
            "sleeponexit hits_at_wfi_return=0x00000003 hits=0x00000003",
            ("QEMU does not implement SCR.SLEEPONEXIT: thread code runs on after the first interrupt; "
             "ARMv7-M B1.5.19: with SLEEPONEXIT set, a return from the last active handler to thread mode "
             "sleeps again, so the WFI returns only after the handler that clears it (the third)")),
    },
    "systick": {
        "reload_zero_restart restarts_le_rvr=0x00000000 timeout=1": (
            "reload_zero_restart restarts_le_rvr=0x00000001",
            ("after RVR=0 let the counter reach 0, QEMU's SysTick stops for good (its ptimer disables itself "
             "on a zero period) and ignores a new RVR until CSR.ENABLE is written again. ARMv7-M B3.3.1: the "
             "counter reloads RVR at each wrap and 'writing zero to SYST_RVR disables the counter on the "
             "next wrap'; read as lasting while RVR is 0, a new RVR is loaded at the next wrap and the "
             "counter runs again. The manual is not explicit, so either line is accepted")),
    },
    "bkpt": {
        "bkpt_no_debugger demcr=0x00000000 dfsr_before=0x00000000 hf_hits=0x00000001 hfsr=0x40000000 "
        "cfsr=0x00000000 dfsr=0x00000000 pc_off=0x00000000 xpsr=0x41000000 hfsr_after=0x00000000": (
            ("bkpt_no_debugger demcr=0x00000000 dfsr_before=0x00000000 hf_hits=0x00000001 hfsr=0x80000000 "
             "cfsr=0x00000000 dfsr=0x00000002 pc_off=0x00000000 xpsr=0x41000000 hfsr_after=0x00000000"),
            ("QEMU escalates BKPT as a forced HardFault (HFSR.FORCED) and has no DFSR; ARMv7-M C1.6/B3.2.16: a "
             "debug event escalated to HardFault sets HFSR.DEBUGEVT, and DFSR.BKPT records it")),
        "bkpt_monitor demcr=0x00000000 dm_hits=0x00000000 dm_ipsr=0x00000000 dm_dfsr=0x00000000 "
        "dm_pc_off=0x00000000 hf_hits=0x00000001 hfsr=0x40000000": (
            ("bkpt_monitor demcr=0x00010000 dm_hits=0x00000001 dm_ipsr=0x0000000c dm_dfsr=0x00000002 "
             "dm_pc_off=0x00000000 hf_hits=0x00000000 hfsr=0x00000000"),
            ("QEMU makes DEMCR RAZ/WI, so MON_EN cannot be set and BKPT keeps escalating; ARMv7-M C1.6.5: "
             "with DEMCR.MON_EN set, BKPT is a DebugMonitor exception")),
    },
}


# ------------------------------------------------------------------------------ running a probe

def qemu_output(probe: Probe, shift: int = QEMU_SHIFT) -> bytes:
    """The probe's console output on QEMU up to DONE (or until QEMU exits)."""
    need_tool("qemu-system-arm")
    return _qemu_output(probe, shift)


@functools.cache
def _qemu_output(probe: Probe, shift: int) -> bytes:
    cmd = ["qemu-system-arm", "-M", probe.machine, "-display", "none", "-serial", "stdio", "-monitor", "none",
           "-icount", f"shift={shift},align=off,sleep=off", "-kernel", str(probe.elf)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    seen = bytearray()

    def finished() -> bool:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            chunk = None
        if chunk:
            seen.extend(chunk)
        return DONE in seen or (chunk == b"" and proc.poll() is not None)

    cpu = process_progress([proc.pid], name=f"QEMU running {probe.name}.elf")
    try:
        wait_progress(finished, progress=lambda: (cpu(), len(seen)), what=f"DONE from {probe.name}.elf on QEMU")
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    return bytes(seen)


@functools.cache
def engine_output(probe: Probe) -> tuple[bytes, str]:
    """The probe's console output on the built-in engine, and why the run ended."""
    from virsim.backends.builtin.machine import Machine
    from virsim.board import resolve_board
    from virsim.firmware import inspect

    config, _ = resolve_board(probe.board)
    m = Machine(config, config.nodes[0])
    m.program(inspect(probe.elf))
    out = bytearray()
    uart = m.console_uart()
    assert uart is not None
    uart.sinks.append(out.extend)
    reason = "budget"
    while DONE not in out and m.cycles < ENGINE_BUDGET:
        stop = m.run(5_000_000)
        reason = stop.reason + (f" ({stop.detail['message']})" if stop.detail.get("message") else "")
        if stop.reason != "budget":
            break
    return bytes(out), f"{reason} at pc={m.pc():#x} after {m.cycles} cycles"


def first_difference(expected: list[str], got: list[str], allowed: dict[str, tuple[str, str]]) -> str | None:
    for i in range(max(len(expected), len(got))):
        want = expected[i] if i < len(expected) else "<no line>"
        have = got[i] if i < len(got) else "<no line>"
        if have != want and not (want in allowed and have == allowed[want][0]):
            alt = f"\n  or (ARM ARM): {allowed[want][0]}" if want in allowed else ""
            return f"line {i + 1}:\n  QEMU:     {want}{alt}\n  built-in: {have}"
    return None


def marked(probe: Probe) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=probe.diverges)] if probe.diverges else []
    return pytest.param(probe, id=probe.name, marks=marks)


# ------------------------------------------------------------------------------ the tests

@pytest.mark.parametrize("probe", [marked(p) for p in PROBES])
def test_builtin_engine_prints_what_qemu_prints(probe: Probe) -> None:
    expected = qemu_output(probe).decode()
    got, why = engine_output(probe)
    diff = first_difference(expected.splitlines(), got.decode(errors="replace").splitlines(),
                            {**QEMU_DEVIATIONS.get(probe.name, {}), **ENGINE_LIMITS.get(probe.name, {})})
    assert diff is None and got.endswith(DONE), f"{probe.name}.elf differs ({why}), first at {diff}"


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_probe_runs_to_the_end_on_qemu(probe: Probe) -> None:
    """The oracle side alone: the probe finishes, hits no handler it did not expect and no spin
    timeout, and QEMU still deviates from the architecture exactly where QEMU_DEVIATIONS says."""
    text = qemu_output(probe).decode()
    assert text.startswith(f"probe {probe.name}\n") and text.endswith("DONE\n"), text
    documented = QEMU_DEVIATIONS.get(probe.name, {})
    lines = text.splitlines()
    for line in lines:
        if line not in documented:
            assert not any(bad in line for bad in ("UNEXPECTED", "HARDFAULT", "timeout")), text
    for qemu_line in documented:
        assert qemu_line in lines, f"QEMU no longer prints the documented deviation {qemu_line!r}:\n{text}"


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_probe_output_does_not_depend_on_timing(probe: Probe) -> None:
    """The same on QEMU with the CPU 40 times faster than the peripheral clock (shift=0) and about
    1.6 times slower (shift=6): what a probe prints does not depend on instruction timing."""
    assert qemu_output(probe, QEMU_SLOW_SHIFT) == qemu_output(probe)


def test_every_probe_is_listed() -> None:
    built = {p.stem for p in CONFORMANCE.glob("*.elf")}
    assert built == {p.name for p in PROBES}


def test_committed_probes_match_their_sources(tmp_path: Path) -> None:
    """A clean rebuild (same Debian toolchain as CI) gives byte-identical ELFs: a stale committed
    probe shows here. Built in a copy elsewhere, so the build directory must not leak in either."""
    need_tool("arm-none-eabi-gcc")
    need_tool("make")
    for folder in ("tests/conformance", "examples/hello"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("obj", "*.o"))
    build = tmp_path / "tests" / "conformance"
    subprocess.run(["make", "-s", "clean"], cwd=build, check=True)
    subprocess.run(["make", "-s", "-j2"], cwd=build, check=True, capture_output=True)
    committed = sorted(p.name for p in CONFORMANCE.glob("*.elf"))
    assert sorted(p.name for p in build.glob("*.elf")) == committed
    stale = [name for name in committed if (build / name).read_bytes() != (CONFORMANCE / name).read_bytes()]
    assert not stale, f"stale: {stale}: run 'make -C tests/conformance' and commit the result"


def test_unmodelled_accesses_are_reported_once_per_address(client) -> None:  # noqa: ANN001
    """The memmap probe touches three reserved addresses (0x00800000 written then read, 0x1F000000
    and 0x20800000 read): each reads zero, and each is reported once, in session show and in the
    session's emulator log."""
    from conftest import wait_console

    sid = client.session_create("mps2-an385", CONFORMANCE / "memmap.elf", backend="builtin").id
    wait_console(client, sid, DONE)
    seen = client.session("show", sid).unmodelled_accesses
    assert [(a["address"], a["range"], a["access"]) for a in seen] == [
        (0x00800000, "reserved", "write"), (0x1F000000, "reserved", "read"), (0x20800000, "reserved", "read")]
    log = (Path(client.session("show", sid).console_log).parent / "emulator.log").read_text()
    assert log.count("0x00800000 (reserved: not modelled") == 1 and "read of 0x1f000000" in log
