"""The built-in engine: its ARMv7-M model in process (real Unicorn), and the engine process's
synchroniser primitives (run-for-N, IRQ lines, shared memory, UART channels) through the backend
interface. Daemon-level behaviour (sessions, console, debug, run) is covered by the backend-
parametrised tests in test_sessions/test_debug/test_supervision/test_run."""

from __future__ import annotations

import hashlib
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import (HELLO, HELLO_SYSTICK, LM3S_HELLO, ROOT, cli_debug_stop, need_tool, process_progress, reverse_walk,
                      wait_console)
from virsim.backends import get_backend
from virsim.backends.base import Capability, InstanceSpec, SharedMapping
from virsim.backends.builtin.machine import Machine
from virsim.board import parse_board, resolve_board
from virsim.errors import NotSupported
from virsim.firmware import inspect

EXCEPTIONS = ROOT / "tests" / "firmware" / "exceptions.elf"
RTOS = ROOT / "examples" / "rtos" / "rtos.elf"
# What the RTOS example prints, whatever the speed of the emulator or where the ticks fall: the
# sums only come out right if every PendSV context switch kept every register.
RTOS_OUTPUT = b"""rtos: start
A: step 1/5 sum 418414548
B: step 1/5 sum 2587640414
A: step 2/5 sum 4048794421
B: step 2/5 sum 4275886383
A: step 3/5 sum 450400327
B: step 3/5 sum 2739875005
A: step 4/5 sum 1863528219
B: step 4/5 sum 2572331284
A: step 5/5 sum 276729155
B: step 5/5 sum 4207207632
rtos: tasks done
rtos: svc ok
rtos: ready for input
"""


def machine(elf: Path, board: str = "mps2-an385") -> tuple[Machine, bytearray]:
    config, _ = resolve_board(board)
    m = Machine(config, config.nodes[0])
    m.program(inspect(elf))
    out = bytearray()
    uart = m.console_uart()
    assert uart is not None
    uart.sinks.append(out.extend)
    return m, out


def state_digest(m: Machine) -> str:
    """Registers, RAM and clocks: what 'the same final state' means."""
    h = hashlib.sha256()
    for reg in range(66, 79):  # r0..r12
        h.update(m.uc.reg_read(reg).to_bytes(4, "little"))
    h.update(bytes(m.uc.mem_read(0x20000000, 0x10000)))
    h.update(f"{m.cycles}/{m.instructions}/{m.pc()}".encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------ the ARMv7-M model

def test_exception_model_checks_all_pass_and_match_qemu() -> None:
    """SVC, nested preemption, tail-chaining, PRIMASK/BASEPRI, PSP thread mode and EXC_RETURN forms,
    stack realignment, PendSV/SysTick via ICSR, COUNTFLAG, precise BusFault, divide-by-zero
    UsageFault and VTOR: the firmware checks each and prints PASS/FAIL."""
    m, out = machine(EXCEPTIONS)
    stop = m.run(50_000_000)
    assert stop.reason == "idle"  # it ends in a WFI loop with nothing left to wake it
    text = out.decode()
    assert "FAIL" not in text, text
    assert text.count("PASS ") == 12 and "DONE 12/12" in text
    faults = m.stats()["faults"]
    assert any("BusFault" in f and "0xf0000000" in f for f in faults)
    assert any("divide by zero" in f for f in faults)
    need_tool("qemu-system-arm")
    proc = subprocess.Popen(["qemu-system-arm", "-M", "mps2-an385", "-display", "none", "-serial", "stdio",
                             "-monitor", "none", "-kernel", str(EXCEPTIONS)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        seen = b""
        qemu_ran = process_progress([proc.pid])  # fails once QEMU used more CPU than it could need
        while b"DONE" not in seen or not seen.endswith(b"\n"):
            qemu_ran()
            seen += proc.stdout.read1(4096)
    finally:
        proc.kill()
        proc.wait()
    assert seen.decode() == text


def test_rtos_example_behaves_the_same_on_both_backends(client, backend: str) -> None:  # noqa: ANN001
    """Three tasks switched by PendSV from SysTick, SVC services, and UART RX interrupts that
    echo lines sent with `console --send`: the same bytes on QEMU and on the built-in engine."""
    # Deterministic on QEMU too: with host-timed QEMU this test saw one extra "\n" before
    # "rtos: tasks done" about once in ten runs (not understood yet; see the closing note).
    info = client.session_create("mps2-an385", RTOS, backend=backend, deterministic=True)
    wait_console(client, info.id, b"ready for input\n")
    client.console_send(info.id, b"hello\n")
    wait_console(client, info.id, b"echo: hello\n")
    client.console_send(info.id, b"second line\r")
    wait_console(client, info.id, b"echo: second line\n")
    assert client.console_text(info.id) == RTOS_OUTPUT + b"echo: hello\necho: second line\n"


def test_run_for_is_exact_and_resumable() -> None:
    a, out_a = machine(HELLO)
    for _ in range(7):
        assert a.run(1_000_003).reason == "budget"
    b, out_b = machine(HELLO)
    assert b.run(7_000_021).reason == "budget"
    assert a.instructions == b.instructions == 7_000_021  # a CPU-bound loop: one cycle per instruction
    assert state_digest(a) == state_digest(b) and out_a == out_b
    one, _ = machine(HELLO)
    for _ in range(1000):
        one.run(1)
    assert one.instructions == 1000


def test_same_firmware_same_bytes_and_state() -> None:
    runs = []
    for _ in range(3):
        m, out = machine(HELLO_SYSTICK)
        m.run(200_000_000)
        runs.append((bytes(out), state_digest(m), m.stats()["exceptions_taken"]))
    assert runs[0][0].count(b"tick ") >= 40
    assert runs[1:] == runs[:-1]


def test_systick_fires_at_exact_cycles_and_wfi_skips_idle_time() -> None:
    m, out = machine(HELLO_SYSTICK)
    starts: list[int] = []  # the cycle at which each line's first byte was written (exact mid-slice)
    m.console_uart().sinks.append(lambda data: starts.append(m.now()) if data == b"t" else None)
    m.run(25_000_000)  # one second at 25 MHz: SysTick at 10 Hz
    assert 9 <= out.count(b"tick ") <= 10
    gaps = {b - a for a, b in zip(starts, starts[1:])}
    assert gaps == {2_500_000}  # every tick exactly 100 ms of virtual time after the last
    assert m.instructions < 100_000  # the rest was spent asleep in WFI, skipped, not executed
    assert m.sleeping


def test_breakpoint_stops_before_the_instruction_and_resumes() -> None:
    m, _ = machine(HELLO)
    from elftools.elf.elffile import ELFFile

    with HELLO.open("rb") as f:
        sym = ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name("on_tick")[0]
    addr = sym["st_value"] & ~1
    m.add_breakpoint(addr)
    stop = m.run(10**9)
    assert stop.reason == "breakpoint" and stop.pc == addr and m.pc() == addr
    first = m.instructions
    stop = m.run(10**9)
    assert stop.reason == "breakpoint" and m.instructions > first  # went round once, did not re-report
    m.remove_breakpoint(addr)
    assert m.run(1000).reason == "budget"


def test_rom_write_is_a_bus_fault_not_an_engine_error(tmp_path: Path) -> None:
    m, _ = machine(LM3S_HELLO, "lm3s811evb")
    m.run(100)
    # Make the firmware store into its read-only flash: point pc at a `str r0, [r1]` in RAM.
    m.uc.mem_write(0x20000100, bytes.fromhex("0860fee7"))  # str r0, [r1] ; b .
    m.uc.reg_write(66 + 1, 0x100)  # r1 = an address in flash
    m.uc.reg_write(11, 0x20000101)  # pc (Thumb)
    stop = m.run(1000)
    assert stop.reason == "budget"
    cfsr = int.from_bytes(m.uc.mem_read(0xE000ED28, 4), "little")
    bfar = int.from_bytes(m.uc.mem_read(0xE000ED38, 4), "little")
    assert cfsr & (1 << 9) and cfsr & (1 << 15) and bfar == 0x100  # PRECISERR, BFARVALID
    assert "write to read-only address 0x00000100" in m.stats()["faults"][-1]


def test_board_the_engine_cannot_build_is_refused_with_the_field() -> None:
    board = parse_board("""
system_id: odd
name: odd
nodes:
  - id: cpu0
    backend: builtin
    processor: {type: cortex-m3, frequency: 10MHz}
    memory: [{type: RAM, address: 0x20000000, size: 64K}]
    peripherals: [{id: eth, type: stm32-eth, address: 0x40028000}]
""", "odd.yaml")
    with pytest.raises(NotSupported) as err:
        get_backend("builtin").check_node(board.nodes[0])
    assert "stm32-eth" in str(err.value) and err.value.details["field"] == "nodes[cpu0].peripherals[0].type"
    a15, _ = resolve_board("virt-a15")
    with pytest.raises(NotSupported, match="cortex-a15"):
        get_backend("builtin").check_node(a15.nodes[0])


def test_cortex_m4_runs_m3_code_and_has_the_fpu() -> None:
    board = parse_board("""
system_id: m4
name: an M4 with MPS2 peripherals
nodes:
  - id: cpu0
    backend: builtin
    processor: {type: cortex-m4, frequency: 50MHz}
    memory:
      - {type: Flash, address: 0x0, size: 4M, access: RO}
      - {type: RAM, address: 0x20000000, size: 4M}
    peripherals: [{id: uart0, type: cmsdk-uart, address: 0x40004000, irq: 0, console: true}]
""", "m4.yaml")
    m = Machine(board, board.nodes[0])
    m.program(inspect(HELLO))
    out = bytearray()
    m.console_uart().sinks.append(out.extend)
    m.run(100_000_000)
    assert out.startswith(b"Hello from virsim on mps2-an385\ntick 1\n")
    assert m.scs.read(0xD00, 4) == 0x410FC240  # CPUID: Cortex-M4 r0p0, as QEMU (tests/conformance/scbid.c)
    assert m.time_ns() == 2_000_000_000  # 100 M cycles at 50 MHz
    # The FP extension, as QEMU's cortex-m4 has it (tests/conformance/fpframe.c checks the frames).
    assert (m.scs.read(0xF40, 4), m.scs.read(0xF44, 4), m.scs.read(0xF34, 4)) == (0x10110021, 0x11000011, 0xC0000000)


@pytest.mark.parametrize("cut", [6_000, 9_000, 12_000, 15_000])
def test_fp_state_is_in_the_snapshot(cut: int) -> None:
    """The FP registers, FPCCR/FPCAR (a lazy save still pending) and FPDSCR go into the engine's
    state: the FP probe continued from a snapshot prints what it prints uninterrupted."""
    board = str(ROOT / "tests" / "conformance" / "mps2-an386.yaml")
    probe = ROOT / "tests" / "conformance" / "fpframe.elf"
    whole, out = machine(probe, board)
    whole.run(40_000)
    assert out.endswith(b"DONE\n"), out
    first, before = machine(probe, board)
    first.run(cut)
    state, memory = first.save_state()
    second, after = machine(probe, board)
    second.load_state(state, memory)
    second.run(40_000 - cut)
    assert before + after == out


def test_templates_run_on_what_they_say() -> None:
    from virsim.board import list_templates

    for name, board in list_templates().items():
        node = board.nodes[0]
        for backend in ("builtin",):
            if backend in node.runs_on:
                get_backend(backend).check_node(node)
            else:
                with pytest.raises(NotSupported):
                    get_backend(backend).check_node(node)
        assert node.backend in node.runs_on, name


# ------------------------------------------------------------------------------ the engine process

def engine(tmp: Path, elf: Path, shared: list[SharedMapping] | None = None, name: str = "n"):  # noqa: ANN201
    board, _ = resolve_board("mps2-an385")
    run = tmp / name
    spec = InstanceSpec(session_id=name, board=board, node=board.nodes[0], workdir=run, rundir=run,
                        console_log=run / "console.log", stderr_log=run / "stderr.log", firmware=inspect(elf),
                        start_paused=True, shared_memory=shared or [])
    inst = get_backend("builtin").create_instance(spec)
    inst.power_on()
    return inst


@pytest.fixture
def short_tmp() -> Path:
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="vsb-", dir="/tmp"))  # short: Unix socket paths
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_capabilities_are_declared() -> None:
    caps = get_backend("builtin").get_capabilities()
    for cap in (Capability.RUN_FOR, Capability.IRQ_LINES, Capability.SHARED_MEMORY, Capability.UART_CHANNEL,
                Capability.DEBUG, Capability.DETERMINISTIC, Capability.SNAPSHOT, Capability.REVERSE, Capability.RECORD):
        assert cap in caps
    qemu = get_backend("qemu").get_capabilities()
    assert {Capability.SNAPSHOT, Capability.RECORD, Capability.REVERSE} <= qemu  # reverse: on replays only
    assert not {Capability.RUN_FOR, Capability.IRQ_LINES} & qemu


def test_session_show_keeps_the_clock_of_a_slow_engine(client) -> None:  # noqa: ANN001
    """An instruction-level trace of an interrupt-heavy firmware slows the engine to a few million
    instructions a second; it still answers every `session show` with its clock (it sizes each run
    to about 2 ms of host time), where it used to miss one call in three."""
    info = client.session_create("mps2-an385", ROOT / "examples" / "irqload" / "irqload.elf", backend="builtin",
                                 deterministic=True)
    client.request("trace.start", info.id, level="instruction")
    clocks, speeds = [], []
    for _ in range(8):
        shown = client.session("show", info.id)
        clocks.append(shown.virtual_ns)
        speeds.append(shown.instructions_per_s)
    assert None not in clocks and clocks == sorted(clocks), clocks
    assert all(speed is None or speed < 20e6 for speed in speeds), speeds  # it was slow
    client.session_delete(info.id)


def test_engine_run_for_n_reports_where_it_stopped(short_tmp: Path) -> None:
    inst = engine(short_tmp, HELLO)
    try:
        assert not inst.run_status().running
        r = inst.run_for(5_000_000)
        assert (r.reason, r.cycles, r.instructions) == ("budget", 5_000_000, 5_000_000)
        r2 = inst.run_for(12_345)
        assert r2.cycles == 5_012_345 and r2.pc != 0
        assert inst.virtual_time_ns() == 5_012_345 * 40  # 25 MHz
        inst.resume()
        assert inst.run_status().running
        with pytest.raises(Exception, match="pause it before run_for"):
            inst.run_for(10)
        inst.pause()
    finally:
        inst.destroy()
    assert inst.exit_status() is not None


def test_engine_irq_line_is_an_nvic_input(short_tmp: Path) -> None:
    inst = engine(short_tmp, HELLO_SYSTICK)
    try:
        inst.run_for(1000)
        inst.set_irq(5, True)  # this firmware never enables IRQ 5: it stays pending
        inst.run_for(1000)
        assert 16 + 5 in inst.stats()["pending"]
    finally:
        inst.destroy()


# movw r0, #0x100 ; movt r0, #0x2001 ; ldr r1, [r0] ; adds r1, #1 ; str r1, [r0] ; bx lr
COUNT_HANDLER = bytes.fromhex("40f20010c2f201000168013101607047")


def test_external_level_irq_wakes_wfi_and_repends_while_high() -> None:
    m, _ = machine(HELLO_SYSTICK)
    m.run(1_000_000)
    assert m.sleeping
    # A RAM vector table whose IRQ 5 handler counts its calls at 0x20010100.
    table = bytearray(m.uc.mem_read(0, 64)) + bytes(4 * 16)
    table[4 * 21:4 * 22] = (0x20010201).to_bytes(4, "little")
    m.uc.mem_write(0x20010000, bytes(table))
    m.uc.mem_write(0x20010200, COUNT_HANDLER)
    m.scs.write(0xD08, 4, 0x20010000)  # VTOR
    m.scs.write(0x100, 4, 1 << 5)  # NVIC_ISER0: enable IRQ 5
    count = lambda: int.from_bytes(m.uc.mem_read(0x20010100, 4), "little")  # noqa: E731
    m.set_irq(5, True)
    m.run(200)
    assert count() >= 2  # woke from WFI, ran, and ran again: the line is still high
    m.set_irq(5, False)
    m.run(200)
    settled = count()
    m.run(2000)
    assert count() == settled and m.sleeping  # line low: no more calls, back to sleep


def test_engine_shared_memory_is_seen_by_two_engines(short_tmp: Path) -> None:
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else short_tmp
    path = shm / f"virsim-test-{short_tmp.name}"
    region = SharedMapping(str(path), 0x60000000, 0x1000, "mailbox")
    a = engine(short_tmp, HELLO, [region], "a")
    b = engine(short_tmp, HELLO, [region], "b")
    try:
        need_tool("gdb-multiarch")
        # Write through engine a's gdb stub, read through engine b's: the same bytes.
        for inst, cmd in ((a, "set *(unsigned int *)0x60000010 = 0xfeedbeef"), (b, "x/1xw 0x60000010")):
            proc = subprocess.run(["gdb-multiarch", "-q", "-nx", "-batch", "-ex", "set architecture armv7e-m",
                                   "-ex", f"target remote {inst.gdb_endpoint()}", "-ex", cmd],
                                  capture_output=True, text=True, timeout=30)
            assert proc.returncode == 0, proc.stderr
        assert "0xfeedbeef" in proc.stdout
        assert path.read_bytes()[0x10:0x14] == (0xFEEDBEEF).to_bytes(4, "little")
    finally:
        a.destroy()
        b.destroy()
        path.unlink(missing_ok=True)


def test_engine_uart_channel_carries_bytes_both_ways(short_tmp: Path) -> None:
    inst = engine(short_tmp, HELLO)
    try:
        path = inst.uart_channel("uart0")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sock.settimeout(10)
        inst.resume()
        got = b""
        while b"Hello from virsim" not in got:
            got += sock.recv(4096)
        sock.sendall(b"chan\n")
        while b"echo: chan" not in got:  # the socket timeout bounds the wait
            got += sock.recv(4096)
        with pytest.raises(Exception, match="not a UART"):
            inst.uart_channel("timer0")
        sock.close()
    finally:
        inst.destroy()


# ------------------------------------------------------------------------------ reverse execution

def test_history_reverse_step_reaches_exactly_the_previous_instruction() -> None:
    from virsim.backends.builtin.history import History

    m, _ = machine(HELLO)
    history = History(m)
    history.start()
    m.run(3_000_000)
    m.set_irq(7, True)  # an input mid-history: re-execution must apply it at the same cycle
    history.record("irq", 7, True)
    m.run(2_000_000)
    assert history.reverse_step() == "ok" and m.instructions == 4_999_999
    back = state_digest(m)
    fresh, _ = machine(HELLO)
    fresh.run(3_000_000)
    fresh.set_irq(7, True)
    while fresh.instructions < m.instructions:
        fresh.run(m.instructions - fresh.instructions, idle_to_end=True)
    assert fresh.instructions == m.instructions and state_digest(fresh) == back


def test_reverse_debugging_through_the_cli(cli, client) -> None:  # noqa: ANN001
    need_tool("gdb-multiarch")
    sid = client.session_create("mps2-an385", HELLO_SYSTICK, backend="builtin", paused=True).id
    reverse_walk(cli, client, sid)
    start = cli_debug_stop(cli, client, sid, "reverse-continue")["stop"]
    assert start["reason"] == "history-start"
    cli.json("debug", "delete", sid, "--all")
    cli.json("debug", "continue", sid)
    wait_console(client, sid, b"tick 5\n")
    text = client.console_text(sid)
    assert text.count(b"tick 1\n") == 1 and text.count(b"Hello") == 1  # re-executed output is not written twice


def test_reverse_commands_need_a_backend_that_can(cli, client) -> None:  # noqa: ANN001
    need_tool("qemu-system-arm")
    need_tool("gdb-multiarch")
    sid = client.session_create("mps2-an385", HELLO, backend="qemu", paused=True).id
    err = cli.json("debug", "reverse-stepi", sid, check=5)
    assert err["code"] == "NOT_SUPPORTED" and "reverse only while replaying a recording" in err["error"]
