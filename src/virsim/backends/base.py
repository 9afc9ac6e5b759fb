"""The backend interface: what every emulator adapter implements (the spec's BackendAdapter).

An adapter (`BackendAdapter`) describes a backend: its type, its capabilities, whether it can run
a board node and what it needs installed. It creates `Instance`s, one per emulated node; the
instance carries the spec's per-instance operations (power, reset, program, debug, snapshot,
analysis). Operations a backend cannot do raise NotSupported; the daemon checks `capabilities`
first and never looks at a backend's name.

Contract every instance keeps:
- the console UART's output is appended to `spec.console_log` as the firmware emits it (the daemon
  tails that file for the live stream, so nothing is lost while no client or daemon is attached);
- `poll_fds()` are file descriptors the daemon watches; `on_readable(fd)` drains one;
- `handle()` is JSON that lets `BackendAdapter.attach()` re-attach after a daemon restart.
"""

from __future__ import annotations

import json
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

from virsim.backends.process import ExitStatus
from virsim.board import BoardConfig, Node
from virsim.errors import NotSupported
from virsim.firmware import FirmwareImage


class Capability(str, Enum):
    POWER = "power"  # power on/off
    RESET = "reset"
    PAUSE = "pause"  # pause/resume execution
    PROGRAM_ELF = "program-elf"
    PROGRAM_BIN = "program-bin"
    PROGRAM_HEX = "program-hex"
    CONSOLE = "console"  # UART console out and in
    DETERMINISTIC = "deterministic"  # same firmware + inputs -> same output
    VIRTUAL_TIME = "virtual-time"  # deterministic sessions report their virtual clock
    REATTACH = "reattach"  # instances survive a daemon restart
    DEBUG = "debug"
    SNAPSHOT = "snapshot"
    RECORD = "record"  # record an execution and replay it byte for byte (session create --record / replay)
    REVERSE = "reverse"  # reverse execution under the debugger (reverse-stepi/-step/-continue)
    COVERAGE = "coverage"
    TRACE = "trace"
    # Primitives the multi-node synchroniser drives (Instance.run_for / set_irq / uart_channel,
    # InstanceSpec.shared_memory):
    RUN_FOR = "run-for"  # run exactly N cycles of virtual time (or to a breakpoint), then report
    IRQ_LINES = "irq-lines"  # raise/lower an external interrupt line
    SHARED_MEMORY = "shared-memory"  # regions backed by a file other processes map too
    UART_CHANNEL = "uart-channel"  # a UART's TX/RX connected to an external byte stream
    LOCKSTEP = "lockstep"  # joins a multi-node barrier (InstanceSpec.lockstep, virsim.sync.lockstep)
    FAULTS = "faults"  # records the Cortex-M faults the firmware takes (Instance.fault_table)

    def __str__(self) -> str:
        return self.value


# What each capability means to a user: docs/backends.md's table is generated from these.
CAPABILITY_MEANING = {
    Capability.POWER: "session power-off / power-on",
    Capability.RESET: "session reset",
    Capability.PAUSE: "session pause / resume",
    Capability.PROGRAM_ELF: "load ELF images",
    Capability.PROGRAM_BIN: "load raw binaries (--load-address)",
    Capability.PROGRAM_HEX: "load Intel hex images",
    Capability.CONSOLE: "the board's UART as the session console, out and in",
    Capability.DETERMINISTIC: "--deterministic: same firmware + inputs, same bytes",
    Capability.VIRTUAL_TIME: "a virtual clock: session clock, stop_at, virtual-time timeouts of virsim run",
    Capability.REATTACH: "emulators survive a daemon restart and are re-attached",
    Capability.DEBUG: "virsim debug (breakpoints, watchpoints, steps, registers, memory, gdb attach)",
    Capability.SNAPSHOT: "snapshot create / restore / export, session create --from-snapshot",
    Capability.RECORD: "session create --record and session replay, byte for byte",
    Capability.REVERSE: "reverse-stepi / reverse-step / reverse-continue",
    Capability.COVERAGE: "coverage start / report / export (lcov, json, drcov)",
    Capability.TRACE: "trace start / export (function and block traces, Chrome format)",
    Capability.RUN_FOR: "multi-node: run exactly N cycles, then report",
    Capability.IRQ_LINES: "multi-node: another node raises its interrupt lines",
    Capability.SHARED_MEMORY: "multi-node: memory shared with other nodes",
    Capability.UART_CHANNEL: "multi-node: a UART linked to another node's",
    Capability.LOCKSTEP: "multi-node: joins the synchroniser's barrier",
    Capability.FAULTS: "Cortex-M faults recorded and decoded (virsim run fails on them); session exceptions",
}


def capability_table() -> str:
    """The Markdown table of every backend's capabilities, as docs/backends.md shows it."""
    from virsim.backends import PLANNED, all_backends

    backends = [(b.name, set(b.get_capabilities())) for b in all_backends()]
    names = [n for n, _ in backends] + list(PLANNED)
    lines = ["| capability | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for cap in Capability:
        cells = ["yes" if cap in caps else "—" for _, caps in backends] + ["planned"] * len(PLANNED)
        lines.append(f"| `{cap.value}`: {CAPABILITY_MEANING[cap]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# The raw trace file every backend's `Instance.trace("dump")` writes (virsim.analysis.trace reads it):
# one JSON header line (trace_header), then little-endian records: cycle, address, size.
TRACE_RECORD = struct.Struct("<QII")


def trace_header(info: dict[str, Any], frequency: int, ranges: list[tuple[int, int]]) -> bytes:
    """The raw trace file's first line: the trace's info, the clock its cycles count, its ranges."""
    header = dict(info, format="virsim-trace", version=1, frequency=frequency, record=TRACE_RECORD.format,
                  ranges=[list(r) for r in ranges])
    return json.dumps(header).encode() + b"\n"


# Where a session's semihosting debug console goes (SYS_WRITE0, ':tt'), in its folder, on every backend.
SEMIHOSTING_LOG = "semihosting.log"
FORMAT_CAPABILITY = {"elf": Capability.PROGRAM_ELF, "bin": Capability.PROGRAM_BIN, "hex": Capability.PROGRAM_HEX}


@dataclass
class SharedMapping:
    """A memory region backed by a file (e.g. /dev/shm/...) that other processes map too."""

    path: str
    address: int
    size: int
    name: str = ""
    offset: int = 0  # where the region starts in the file (a QEMU node's whole RAM is the file)


@dataclass
class RunReport:
    """What `Instance.run_for` did: why it returned, where the CPU is, and the clocks after it."""

    reason: str  # budget (ran the whole time) | breakpoint | watchpoint | bkpt | lockup
    pc: int
    cycles: int
    instructions: int
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class InstanceSpec:
    """Everything an adapter needs to start one node of a session."""

    session_id: str
    board: BoardConfig
    node: Node
    workdir: Path  # the session's artifact dir (persistent)
    rundir: Path  # the session's runtime dir (sockets)
    console_log: Path
    stderr_log: Path
    firmware: FirmwareImage | None = None
    deterministic: bool = False
    start_paused: bool = False
    shared_memory: list[SharedMapping] = field(default_factory=list)
    record: Path | None = None  # write a recording of the execution here (Capability.RECORD)
    replay: Path | None = None  # replay this recording instead of taking live input
    replay_until: str | None = None  # "<n>" instructions or "<n>ns": stop (pause) there
    coverage: bool = False  # collect coverage from the first instruction (Capability.COVERAGE)
    # Multi-node boards: the lockstep segment and this node's cross-node routes (virsim.sync.system).
    lockstep: dict[str, Any] | None = None
    # A multi-node session (backend "system"): {"firmware": {node: path}, "sync": mode, "quantum": cycles}.
    system: dict[str, Any] | None = None


@dataclass
class ToolCheck:
    """One thing a backend needs, for `virsim doctor`."""

    name: str
    ok: bool
    version: str | None = None
    path: str | None = None
    install: str | None = None
    note: str | None = None


@dataclass
class RunStatus:
    running: bool
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Instance(ABC):
    """One emulated node: a supervised emulator process plus its control channels."""

    def __init__(self, spec: InstanceSpec) -> None:
        self.spec = spec

    # ---- supervision
    @property
    @abstractmethod
    def pid(self) -> int | None: ...

    def pids(self) -> list[int]:
        """Every process of this instance (several for a multi-node system)."""
        return [self.pid] if self.pid is not None else []

    @abstractmethod
    def handle(self) -> dict[str, Any]:
        """JSON-able data that lets the adapter re-attach to this instance."""

    @abstractmethod
    def exit_status(self) -> ExitStatus | None:
        """None while the emulator lives; why it ended once it has."""

    def poll_fds(self) -> list[int]:
        return []

    def tick(self) -> None:
        """Called by the daemon about every 100 ms while the instance lives (housekeeping), and
        every few ms while busy() says it has work queued."""

    def busy(self) -> bool:
        """True while the instance has queued work (e.g. paced console input) for tick()."""
        return False

    def on_readable(self, fd: int) -> None:
        """Drain `fd`; called by the daemon's loop when it is readable."""

    # ---- power
    @abstractmethod
    def power_on(self) -> None:
        """Start the emulator (paused if spec.start_paused)."""

    @abstractmethod
    def power_off(self) -> None:
        """Stop the emulator process; the instance can be powered on again."""

    @abstractmethod
    def reset(self) -> None: ...

    @abstractmethod
    def pause(self) -> None: ...

    @abstractmethod
    def resume(self) -> None: ...

    @abstractmethod
    def run_status(self) -> RunStatus:
        """Ask the emulator whether the CPU is running."""

    def virtual_time_ns(self) -> int | None:
        """Virtual time since power-on in ns, where the backend counts it deterministically
        (Capability.VIRTUAL_TIME); None otherwise."""
        return None

    def instructions(self) -> int | None:
        """Instructions executed since power-on, where the backend counts them exactly; else None."""
        return None

    def stop_at(self, virtual_ns: int | None, after_ns: int | None = None) -> int | None:
        """Stop the CPU when the virtual clock reaches `virtual_ns` (as a pause would), within one
        instruction of it whatever the host does; or `after_ns` after now, "now" read exactly (the
        CPU held meanwhile); neither cancels. Returns the deadline set. Backends with VIRTUAL_TIME."""
        raise NotSupported(f"{type(self).__name__} cannot stop at a virtual time",
                           capability=str(Capability.VIRTUAL_TIME))

    def fault_table(self) -> Path | None:
        """Where the emulator records the faults the firmware takes (virsim.backends.faults), for
        backends with Capability.FAULTS; None if this instance records none."""
        return None

    def clock_info(self) -> dict[str, Any] | None:
        """What virtual time means for this instance (board_hz, instruction_ns, a note on how it
        differs from one instruction per board cycle), for `session show`."""
        return None

    def limits(self) -> dict[Capability, str]:
        """Capabilities the backend has that this instance cannot use, each with the reason a user
        is shown (QEMU, for one, executes backwards only while replaying a recording)."""
        return {}

    def destroy(self) -> None:
        """Power off and release every resource the instance holds."""
        self.power_off()

    # ---- console
    def console_write(self, data: bytes) -> int:
        raise NotSupported(f"{type(self).__name__} has no console input", capability=str(Capability.CONSOLE))

    # ---- debug: the generic debugger (daemon/debugger.py) drives this gdb remote endpoint
    def release_undebugged(self, run: bool) -> None:
        """Multi-node instances: let the nodes other than the debugged one run (`run`) or hold them,
        as the debugger runs or halts its node (they wait for it at the barrier either way)."""

    def gdb_endpoint(self) -> str | None:
        """Where a GDB remote-protocol client reaches this instance's CPU (unix socket path or
        host:port), for backends with the DEBUG capability. The spec's SetBreakpoint,
        ReadRegisters and ReadMemory are served through it."""
        return None

    def reverse_begin(self) -> None:
        """The debugger is about to execute backwards: whatever the emulator re-executes to get
        there must not reach the console log twice (see QEMU's ReplayConsole)."""

    def reverse_end(self) -> None:
        """The backwards command has stopped (pairs with reverse_begin)."""

    # ---- synchroniser primitives (Capability.RUN_FOR / IRQ_LINES / UART_CHANNEL)
    def run_for(self, cycles: int) -> RunReport:
        """With the CPU paused: run exactly `cycles` of virtual time (one instruction = one cycle;
        a sleeping CPU idles through them), or less if a breakpoint or watchpoint stops it first."""
        raise NotSupported(f"{type(self).__name__} cannot run for an exact count", capability=str(Capability.RUN_FOR))

    def set_irq(self, line: int, level: bool) -> None:
        """Drive external interrupt input `line` (NVIC IRQ number) high or low."""
        raise NotSupported(f"{type(self).__name__} has no external IRQ lines", capability=str(Capability.IRQ_LINES))

    def uart_channel(self, peripheral: str) -> str:
        """Connect UART `peripheral` to a byte stream; returns the Unix socket path to connect to
        (bytes written there arrive at the UART's receiver; what it transmits is read from it)."""
        raise NotSupported(f"{type(self).__name__} has no UART channels", capability=str(Capability.UART_CHANNEL))

    # ---- snapshot, analysis: later issues implement these per backend
    def create_snapshot(self, path: Path, meta: dict[str, Any]) -> dict[str, Any]:
        """Save the complete machine state to `path` (a .vsnap written with virsim.snapshot, `meta`
        in its header), at an instruction boundary, without changing whether the CPU runs.
        Returns {"virtual_ns", "instructions", "size"}."""
        raise NotSupported("snapshots are not supported by this backend yet", capability=str(Capability.SNAPSHOT))

    def restore_snapshot(self, path: Path, marker: bytes = b"") -> dict[str, Any]:
        """Load a state saved by create_snapshot (already verified by the caller); the CPU keeps
        running or stays paused as it was. `marker` goes into the console log at that point.
        Returns {"virtual_ns", "instructions"}, and "gdb_replaced": True where the load replaced the
        gdb endpoint (Renode makes its GDB server again): a debugger attached before must reconnect."""
        raise NotSupported("snapshots are not supported by this backend yet", capability=str(Capability.SNAPSHOT))

    def delete_snapshot(self, path: Path) -> None:
        """Forget a snapshot's state kept inside the emulator (QEMU keeps it in its qcow2)."""

    # ---- analysis (Capability.COVERAGE / TRACE); virsim.analysis turns the raw data into files
    def coverage(self, action: str) -> list[tuple[int, int, int]] | None:
        """action "start" | "stop" | "reset": switch block counting on / off (the counts so far are
        kept; a start adds to them) / zero the counts (returns None); "blocks": the executed blocks so
        far as (start address, size in bytes, times entered). A backend that cannot do an action
        raises NotSupported saying why."""
        raise NotSupported("coverage is not supported by this backend", capability=str(Capability.COVERAGE))

    def trace(self, action: str, **options: Any) -> dict[str, Any]:
        """action "start" (level, ranges [(lo, hi)], limit, functions: start addresses, for level
        "function") | "stop" | "info" | "dump" (path): the
        trace file as TRACE_RECORD says. Returns the trace's info: level,
        events, truncated, limit, active."""
        raise NotSupported("tracing is not supported by this backend", capability=str(Capability.TRACE))

    def endpoints(self) -> dict[str, str]:
        """User-visible endpoints (e.g. the gdb stub) for `session show`."""
        return {}


class BackendAdapter(ABC):
    """A kind of emulator. Register subclasses in virsim.backends.registry."""

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]
    always_deterministic: ClassVar[bool] = False  # no host timing ever reaches the guest
    # Lockstep nodes of this backend pause by being held at the barrier (the segment's PAUSE), never
    # over their control channel, and their clock is read from their segment slot (QEMU, Renode).
    held_at_barrier: ClassVar[bool] = False
    # The backend runs every node of a multi-node board that uses it in one emulator process
    # (create_group / attach_group) instead of one process per node (Renode: one emulation).
    one_emulation_per_board: ClassVar[bool] = False
    replay_stops_at_time: ClassVar[bool] = False  # a replay can halt at a virtual time, not only an instruction count

    def backend_type(self) -> str:
        return self.name

    def get_capabilities(self) -> frozenset[Capability]:
        return self.capabilities

    @abstractmethod
    def check_node(self, node: Node) -> None:
        """Raise NotSupported / EmulatorMissing if this backend cannot run `node` here."""

    @abstractmethod
    def create_instance(self, spec: InstanceSpec) -> Instance:
        """A new instance, not yet powered on."""

    @abstractmethod
    def attach(self, spec: InstanceSpec, handle: dict[str, Any]) -> Instance | None:
        """Re-attach to a live instance after a daemon restart; None if it is gone."""

    def create_group(self, specs: list[InstanceSpec]) -> Instance:
        """One instance running every node of `specs` (lockstep nodes of one board), for backends
        with one_emulation_per_board."""
        raise NotSupported(f"backend {self.name} runs one process per node")

    def attach_group(self, specs: list[InstanceSpec], handle: dict[str, Any]) -> Instance | None:
        """Re-attach to a live group instance after a daemon restart; None if it is gone."""
        return None

    def snapshot_export_sections(self, workdir: Path, meta: dict[str, Any]) -> dict[str, bytes]:
        """Extra sections an exported snapshot needs besides the .vsnap's own (QEMU: its qcow2)."""
        return {}

    def snapshot_prepare(self, workdir: Path, sections: dict[str, bytes]) -> None:
        """Before a session made from an exported snapshot powers on: put back what
        snapshot_export_sections() added."""

    @abstractmethod
    def doctor(self) -> list[ToolCheck]:
        """What this backend needs and whether it is installed."""
