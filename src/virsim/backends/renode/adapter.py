"""The Renode backend: runs a board node in a headless Renode, driven through its monitor.

One Renode process per session, in a jail of its own (jail.py: a network namespace with only a
loopback, so none of the ports stock Renode opens on 0.0.0.0 is reachable from outside; Unix
sockets in the session's runtime dir are the way in). At power-on the adapter writes the node's
platform (platform.py) into the session folder, or names the board's stock Renode platform, and
sets the machine up over the monitor (monitor.py): load the platform, serial execution with a
fixed seed, one instruction per board cycle, the firmware (`sysbus LoadELF` / LoadBinary /
LoadHEX), a server-socket terminal on the console UART (the jail keeps its log) and the GDB
server that virsim's debugger drives. Then `start`, unless the session starts paused.

Renode counts virtual time itself, from executed instructions (never from the host), so virtual
time here means what it means on the built-in engine: one instruction per cycle of the board's
clock.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from virsim import snapshot
from virsim.backends.base import (
    BackendAdapter,
    Capability,
    Instance,
    InstanceSpec,
    RunStatus,
    ToolCheck,
    trace_header,
)
from virsim.backends.renode import INSTALL_HINT, find_renode, stock, stock_path, stock_root, svd_path
from virsim.backends.renode.monitor import Monitor
from virsim.backends.renode.platform import entry_name, monitor_name, monitor_path, monitor_string, platform
from virsim.backends.supervised import SupervisedInstance
from virsim.board import Node
from virsim.errors import EmulatorError, EmulatorMissing, InvalidInput, NotSupported, Timeout
from virsim.firmware import FirmwareImage

JAIL = Path(__file__).resolve().parent / "jail.py"
# virsim's own C# extension (probes, shared memory, the lockstep participant), compiled by Renode
# at `include` (about a second) the first time a session needs it.
EXTENSION = Path(__file__).resolve().parent / "VirsimRenode.cs"
PLATFORM_FILE = "renode-platform.repl"
RENODE_LOG = "renode.log"  # Renode's own log, in the session folder
# Ports inside the session's own network namespace: no other session or host sees them.
TERM_PORT, GDB_PORT, MONITOR_PORT = 3456, 3333, 1234
TERMINAL = "term"
SEED = 42
_SLOW = 60.0  # s for the commands that load files (a platform, an image, a state) on a loaded machine
_TIME = re.compile(r"(\d+):(\d\d):(\d\d)(?:\.(\d+))?")


@lru_cache(maxsize=4)
def renode_version(path: str) -> str | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"v?(\d+\.\d+\.\d+(?:\.\d+)?)", out)
    return m.group(1) if m else None


def _machine(node: Node) -> str:
    return entry_name(node.id)


def console_uart(spec_node: Node, console_id: str | None) -> str | None:
    """The Renode peripheral the console terminal connects to."""
    if spec_node.renode and spec_node.renode.uart:
        return spec_node.renode.uart
    return f"sysbus.{entry_name(console_id)}" if console_id else None


def _parse_duration_ns(text: str) -> int:
    """Renode's "HH:MM:SS.fffffff" (as ElapsedVirtualTime and friends print it) in ns."""
    m = _TIME.search(text)
    if m is None:
        raise EmulatorError(f"Renode printed no time: {text!r}", reply=text[-200:])
    h, mi, s, frac = m.groups()
    frac = (frac or "0")[:9].ljust(9, "0")
    return ((int(h) * 60 + int(mi)) * 60 + int(s)) * 1_000_000_000 + int(frac)


class RenodeInstance(SupervisedInstance):
    emulator = "Renode"
    sockets = ("monitor.sock", "console.sock", "gdbstub.sock")
    start_timeout = 120.0  # mono and Renode take 4-6 s to answer on a loaded machine, a platform 1 s more

    def __init__(self, spec: InstanceSpec) -> None:
        super().__init__(spec)
        self.monitor: Monitor | None = None
        self._sock: socket.socket | None = None
        self._deadline: int | None = None  # stop_at's pending deadline (virtual ns)
        self._armed = False  # its clock entry is on Renode's clock
        self._extended = False  # VirsimRenode.cs is compiled into this Renode
        self._probes = False  # the extension's probes have been used (hooked) in this Renode
        self._trace_ranges: list[tuple[int, int]] = []

    # ---------------------------------------------------------------- the supervised process
    def _command(self) -> list[str]:
        node = self.spec.node
        if not (node.renode and node.renode.platform):
            (self.spec.workdir / PLATFORM_FILE).write_text(platform(node).repl)
        (self.spec.rundir / "term.connected").unlink(missing_ok=True)
        return self._jailed(["--term-port", str(TERM_PORT), "--forward", f"gdbstub={GDB_PORT}"])

    def _jailed(self, jail_args: list[str]) -> list[str]:
        """Headless Renode in its jail, its monitor on stdin/stdout, a private temp dir and config."""
        renode = find_renode()
        if renode is None:
            raise EmulatorMissing(f"Renode not found: {INSTALL_HINT}", binary="renode", install=INSTALL_HINT)
        run = self.spec.rundir
        tmp = run / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        self.spec.console_log.parent.mkdir(parents=True, exist_ok=True)
        self.spec.console_log.touch()
        return [sys.executable, "-I", "-S", str(JAIL), "--rundir", str(run), "--log", str(self.spec.console_log),
                *jail_args, "--tmpdir", str(tmp), "--",
                renode, "--disable-xwt", "--plain", "--console", "--hide-log", "-P", str(MONITOR_PORT),
                "--config", str(run / "renode.config")]

    def _open_control(self, deadline: float) -> None:
        path = self.spec.rundir / "monitor.sock"
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                status = self.exit_status()
                if status is not None:
                    raise EmulatorError(f"Renode {status.reason} while starting: {status.stderr_tail or 'no output'}",
                                        stderr_tail=status.stderr_tail, returncode=status.returncode)
                if time.monotonic() > deadline:
                    raise EmulatorError(f"Renode's jail did not open its monitor socket ({path})")
                time.sleep(0.01)
        self._sock = sock
        self.monitor = Monitor(sock.sendall, self._read)
        fresh = not self._configured()
        try:
            self.monitor.handshake(timeout=max(1.0, deadline - time.monotonic()))
        except Timeout as err:
            raise EmulatorError(f"Renode's monitor did not answer within {self.start_timeout:g} s") from err
        if fresh:
            self._configure()
        else:
            self._cmd(f"mach set {monitor_name(_machine(self.spec.node), 'node id')}")

    def _configured(self) -> bool:
        return (self.spec.rundir / "term.connected").exists()

    def _read(self, timeout: float) -> bytes | None:
        assert self._sock is not None
        self._sock.settimeout(max(0.001, timeout))
        try:
            return self._sock.recv(65536)
        except TimeoutError:
            return None
        except OSError:
            return b""

    def _cmd(self, command: str, timeout: float | None = None) -> str:
        if self.monitor is None:
            raise EmulatorError("Renode is not running (no monitor connection)")
        return self.monitor.command(command, timeout=timeout)

    def _configure(self) -> None:
        spec, node = self.spec, self.spec.node
        machine = monitor_name(_machine(node), "node id")
        # Renode's log (warnings about registers of absent peripherals among them) to a file of the
        # session's: on the console it would interleave with the monitor's replies.
        self._cmd(f"logFile {monitor_path(spec.workdir / RENODE_LOG)}")
        self._cmd(f"mach create {machine}")
        if node.renode and node.renode.platform:
            # The stock platform without the SVD downloads of its init (stock.py): Renode is offline.
            opts = node.renode
            derived = stock.derived(stock.read(stock_path(opts.platform), stock_root()), svd_path(opts.svd))
            (spec.workdir / PLATFORM_FILE).write_text(derived)
            self._cmd(f"machine LoadPlatformDescription {monitor_path(spec.workdir / PLATFORM_FILE)}", timeout=_SLOW)
        else:
            self._cmd(f"machine LoadPlatformDescription {monitor_path(spec.workdir / PLATFORM_FILE)}", timeout=_SLOW)
        # Deterministic by construction: one CPU thread at a time, a fixed seed for every model's
        # randomness, and one instruction per cycle of the board's clock.
        self._cmd("emulation SetGlobalSerialExecution true")
        self._cmd(f"emulation SetSeed {SEED}")
        self._cmd(f"sysbus.cpu PerformanceInMips {max(1, round(node.processor.frequency / 1e6))}")
        if spec.deterministic:
            self._cmd("emulation SetAdvanceImmediately true")  # a sleeping CPU skips to its next event
        if spec.firmware is not None:
            self._load(spec.firmware, node)
        self._terminal()
        self._cmd(f"machine StartGdbServer {GDB_PORT}")
        if spec.coverage:
            self.coverage("start")  # from the first instruction

    def _load(self, fw: FirmwareImage, node: Node) -> None:
        """The image into the current machine. A Cortex-M boots from its vector table: Renode takes
        the lowest section of an ELF for it (as a real part boots from where its flash is aliased,
        e.g. an STM32's 0x08000000 at 0); a raw or hex image has its at the lowest address it loads."""
        where = monitor_path(fw.path, "firmware")
        if fw.format == "elf":
            self._cmd(f"sysbus LoadELF {where}", timeout=_SLOW)
            return
        if fw.format == "hex":
            self._cmd(f"sysbus LoadHEX {where}", timeout=_SLOW)
        else:
            self._cmd(f"sysbus LoadBinary {where} {fw.load_address or 0:#x}", timeout=_SLOW)
        if node.processor.profile == "m":
            base = fw.load_address if fw.load_address is not None else min((a for a, _ in fw.segments), default=0)
            self._cmd(f"sysbus.cpu VectorTableOffset {base:#x}")

    def _terminal(self) -> None:
        """The console UART's server-socket terminal, and the jail connected to it."""
        uart = console_uart(self.spec.node, getattr(self.spec.board.console_peripheral(self.spec.node), "id", None))
        if uart is None:
            return
        mark = self.spec.rundir / "term.connected"
        before = mark.read_text() if mark.exists() else ""
        self._cmd(f'emulation CreateServerSocketTerminal {TERM_PORT} "{TERMINAL}" false')
        self._cmd(f"connector Connect {uart} {TERMINAL}")
        deadline = time.monotonic() + 10.0
        while not mark.exists() or mark.read_text() == before:
            if time.monotonic() > deadline:
                raise EmulatorError("Renode's console terminal did not accept the jail's connection within 10 s")
            time.sleep(0.005)

    def _extension(self) -> None:
        """Compile virsim's C# extension into this Renode (once; a re-attached daemon's `include`
        finds it compiled already)."""
        if not self._extended:
            self._cmd(f"include {monitor_path(EXTENSION, 'extension')}", timeout=_SLOW)
            self._extended = True

    def _close_control(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.monitor = None

    def _control_open(self) -> bool:
        return self.monitor is not None

    def _start(self) -> None:
        self._cmd("start")

    def _quit(self) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(b"quit\n")  # no prompt follows: Renode exits
        except OSError:
            pass

    # ---------------------------------------------------------------- power, run control
    def reset(self) -> None:
        self._cmd("machine Reset")

    def pause(self) -> None:
        self._cmd("pause")

    def resume(self) -> None:
        self._cmd("start")

    def run_status(self) -> RunStatus:
        paused = self._cmd("machine IsPaused").strip().lower()
        running = paused == "false"
        return RunStatus(running, "running" if running else "paused")

    def virtual_time_ns(self) -> int | None:
        return _parse_duration_ns(self._cmd("machine ElapsedVirtualTime"))

    def instructions(self) -> int | None:
        return int(self._cmd("sysbus.cpu ExecutedInstructions").split()[-1], 0)

    def stop_at(self, virtual_ns: int | None, after_ns: int | None = None) -> int | None:
        # A one-shot entry on the machine's clock runs at its exact virtual time on the CPU thread;
        # a precise pause there stops the CPU at that instruction (measured: 1.234567 s -> 30,864,175
        # instructions at 25 MIPS). The entry is virsim's own (not ScheduleAction's) so that it can
        # be taken off again: to cancel, and around a Save (a Python handler cannot be serialised).
        self._disarm()
        self._deadline = None
        if not virtual_ns and not after_ns:
            return None
        running = self.run_status().running
        if running:
            self._cmd("pause")  # "now" is read with the CPU held
        try:
            now = self.virtual_time_ns() or 0
            target = int(virtual_ns) if virtual_ns else now + int(after_ns or 0)
            if target <= now:
                running = False  # already there: it stays stopped
                return target
            self._arm(target - now)
            self._deadline = target
            return target
        finally:
            if running:
                self._cmd("start")

    def _arm(self, delay_ns: int) -> None:
        self._cmd('python "from Antmicro.Renode.Time import TimeInterval, ClockEntry, WorkMode; from System import '
                  'Action; virsim_m = self.Machine; virsim_h = Action(lambda: (virsim_m.ClockSource.'
                  'TryRemoveClockEntry(virsim_h), virsim_m.PauseAndRequestEmulationPause(True))); '
                  f'virsim_m.ClockSource.AddClockEntry(ClockEntry(TimeInterval.FromNanoseconds({delay_ns}).Ticks, '
                  'TimeInterval.TicksPerSecond, virsim_h, virsim_m, \'virsim-stop\', workMode=WorkMode.OneShot))"')
        self._armed = True

    def _disarm(self) -> None:
        if self._armed:
            self._cmd('python "virsim_m.ClockSource.TryRemoveClockEntry(virsim_h)"')
            self._armed = False

    def _rearm(self) -> None:
        """After a Save or Load: the pending deadline again, from the clock as it is now."""
        if self._deadline is not None:
            now = self.virtual_time_ns() or 0
            if self._deadline > now:
                self._arm(self._deadline - now)
            else:
                self._deadline = None

    def clock_info(self) -> dict[str, Any] | None:
        hz = self.spec.node.processor.frequency
        mips = max(1, round(hz / 1e6))
        return {"board_hz": hz, "instruction_ns": 1e3 / mips,
                "note": f"Renode runs {mips} M instructions per virtual second (PerformanceInMips {mips}): one "
                        f"instruction per cycle of the board's {hz / 1e6:g} MHz clock; timers at the board's rate"}

    def endpoints(self) -> dict[str, str]:
        return {"monitor": str(self.spec.rundir / "monitor.sock")}

    # ---------------------------------------------------------------- snapshots
    def create_snapshot(self, path: Path, meta: dict[str, Any]) -> dict[str, Any]:
        state = path.with_suffix(".renode")
        running = self.run_status().running
        if running:
            self._cmd("pause")
        try:
            ns, count = self.virtual_time_ns(), self.instructions()
            self._disarm()
            self._probe_hook(False)  # a hook into virsim's extension cannot be serialised
            try:
                self._cmd(f"Save {monitor_path(state, 'snapshot')}", timeout=_SLOW)
            finally:
                self._rearm()
                self._probe_hook(True)
        finally:
            if running:
                self._cmd("start")
        data = state.read_bytes()
        state.unlink()
        meta = dict(meta, backend="renode", node=self.spec.node.id, virtual_ns=ns, instructions=count)
        snapshot.write(path, meta, {"renode": data}, durable=False)
        return {"virtual_ns": ns, "instructions": count, "size": len(data)}

    def restore_snapshot(self, path: Path, marker: bytes = b"") -> dict[str, Any]:
        meta = snapshot.read_meta(path)
        state = path.with_suffix(".renode-load")
        state.write_bytes(snapshot.read(path)[1]["renode"])
        running = self.run_status().running
        # A CPU the debugger holds (at a breakpoint, after a step) is in single-step mode in a
        # started machine; the state a Load brings back runs continuously: hold it again after.
        held = self._cmd("sysbus.cpu ExecutionMode").split()[:1] == ["SingleStep"]
        try:
            self._cmd("pause")
            self._probe_hook(False)
            self._cmd(f"Load {monitor_path(state, 'snapshot')}", timeout=_SLOW)
        finally:
            state.unlink(missing_ok=True)
        # A Load replaces the emulation: the machine is selected again, and its socket terminal
        # and GDB server (not part of the saved state) are made again.
        self._cmd(f"mach set {monitor_name(_machine(self.spec.node), 'node id')}")
        if marker:
            with self.spec.console_log.open("ab") as log:
                log.write(marker)
        self._terminal()
        self._cmd(f"machine StartGdbServer {GDB_PORT}")
        self._armed = False  # the Load replaced the clock its entry was on
        self._rearm()
        self._probe_hook(True)  # onto the CPU the Load made: coverage counts and the trace go on
        if held:
            self._cmd("sysbus.cpu ExecutionMode SingleStep")
        if running:
            self._cmd("start")
        return {"virtual_ns": meta.get("virtual_ns"), "instructions": meta.get("instructions"), "gdb_replaced": True}


    # ---------------------------------------------------------------- coverage and traces
    def _hz(self) -> int:
        return int(self.spec.node.processor.frequency)

    def _probe_hook(self, on: bool) -> None:
        if self._probes:
            self._cmd(f'sysbus.cpu VirsimCoverage "{"attach" if on else "detach"}" "" {self._hz()}')

    def _probe_file(self, name: str) -> Path:
        path = self.spec.rundir / name
        path.unlink(missing_ok=True)
        return path

    def coverage(self, action: str) -> list[tuple[int, int, int]] | None:
        # Counted inside Renode by virsim's extension, per translated block (start, instructions),
        # from the block-finished hook Renode's own execution tracer uses.
        if action not in ("start", "stop", "reset", "blocks"):
            raise NotSupported(f"Renode coverage cannot {action}", capability=str(Capability.COVERAGE))
        self._extension()
        self._probes = True
        if action != "blocks":
            self._cmd(f'sysbus.cpu VirsimCoverage "{action}" "" {self._hz()}')
            return None
        path = self._probe_file("coverage.dump")
        try:
            self._cmd(f'sysbus.cpu VirsimCoverage "dump" {monitor_string(path)} {self._hz()}', timeout=_SLOW)
            blocks = []
            for line in path.read_text().splitlines():
                start, size, _insns, count = (int(v) for v in line.split())
                blocks.append((start, size, count))
            return blocks
        finally:
            path.unlink(missing_ok=True)

    def trace(self, action: str, **options: Any) -> dict[str, Any]:
        self._extension()
        self._probes = True
        hz = self._hz()
        if action == "start":
            level = str(options.get("level", "block"))
            if level not in ("block", "instruction", "function"):
                raise InvalidInput(f"trace level {level!r}: one of block, instruction, function", field="level",
                                   value=level)
            self._trace_ranges = [(int(lo), int(hi)) for lo, hi in options.get("ranges") or []]
            ranges = ",".join(f"{lo}-{hi}" for lo, hi in self._trace_ranges)
            functions = self._probe_file("trace.functions")
            functions.write_text("".join(f"{int(a)}\n" for a in options.get("functions") or []))
            reply = self._cmd(f'sysbus.cpu VirsimTrace "start" "{level}" {max(1, int(options.get("limit") or 1))} '
                              f'"{ranges}" {monitor_string(functions)} {hz}')
            functions.unlink(missing_ok=True)
            return _trace_info(reply)
        if action in ("stop", "info"):
            return _trace_info(self._cmd(f'sysbus.cpu VirsimTrace "{action}" "block" 1 "" "" {hz}'))
        if action == "dump":
            out = Path(str(options["path"]))
            raw = self._probe_file("trace.raw")
            try:
                info = _trace_info(self._cmd(f'sysbus.cpu VirsimTrace "dump" "block" 1 "" {monitor_string(raw)} {hz}',
                                             timeout=_SLOW))
                with out.open("wb") as f:
                    f.write(trace_header(info, hz, self._trace_ranges))
                    with raw.open("rb") as src:
                        shutil.copyfileobj(src, f)
            finally:
                raw.unlink(missing_ok=True)
            return info
        raise NotSupported(f"Renode traces cannot {action}", capability=str(Capability.TRACE))


def _trace_info(reply: str) -> dict[str, Any]:
    """The extension's "level=block events=12 truncated=0 limit=100 active=1" as a trace info dict."""
    fields = dict(part.split("=", 1) for part in reply.split() if "=" in part)
    try:
        return {"level": fields["level"], "events": int(fields["events"]), "truncated": fields["truncated"] == "1",
                "limit": int(fields["limit"]), "active": fields["active"] == "1"}
    except (KeyError, ValueError) as err:
        raise EmulatorError(f"Renode's trace reply is not understood: {reply!r}", reply=reply[-200:]) from err


class RenodeBackend(BackendAdapter):
    name = "renode"
    capabilities = frozenset({
        Capability.POWER, Capability.RESET, Capability.PAUSE, Capability.PROGRAM_ELF, Capability.PROGRAM_BIN,
        Capability.PROGRAM_HEX, Capability.CONSOLE, Capability.DETERMINISTIC, Capability.VIRTUAL_TIME,
        Capability.REATTACH, Capability.DEBUG, Capability.SNAPSHOT, Capability.COVERAGE, Capability.TRACE,
        Capability.LOCKSTEP, Capability.SHARED_MEMORY,
    })
    always_deterministic = True  # its clock counts instructions; no host timing reaches the guest
    held_at_barrier = True  # the extension holds the emulation at the barrier (PAUSE) in its sync hook
    one_emulation_per_board = True  # every Renode node of a board: one emulation (emulation.py)

    def check_node(self, node: Node) -> None:
        # The board's problems first: they hold wherever Renode is installed.
        if not (node.renode and node.renode.platform):
            plat = platform(node)  # NotSupported for a processor it cannot run
            absent = set(node.renode.absent if node.renode else [])
            for pid in plat.unmodelled:
                if pid not in absent:
                    p = next(p for p in node.peripherals if p.id == pid)
                    raise NotSupported(
                        f"node {node.id!r}: Renode has no model for peripheral {pid!r} (type {p.type}); list it in "
                        "the node's renode.absent to run without it on Renode, or use another backend",
                        backend=self.name, node=node.id, field=f"nodes[{node.id}].peripherals[{pid}]", value=p.type)
        elif node.renode.svd is not None:
            svd_path(node.renode.svd)
        if find_renode() is None:
            raise EmulatorMissing(f"Renode not found: {INSTALL_HINT}", binary="renode", install=INSTALL_HINT)
        if node.renode and node.renode.platform:
            stock.read(stock_path(node.renode.platform), stock_root())  # it and every file it uses are there

    def create_instance(self, spec: InstanceSpec) -> Instance:
        return RenodeInstance(spec)

    def attach(self, spec: InstanceSpec, handle: dict[str, Any]) -> Instance | None:
        return RenodeInstance.reattach(spec, handle)

    def create_group(self, specs: list[InstanceSpec]) -> Instance:
        from virsim.backends.renode.emulation import RenodeEmulation

        return RenodeEmulation(specs[0], specs)

    def attach_group(self, specs: list[InstanceSpec], handle: dict[str, Any]) -> Instance | None:
        from virsim.backends.renode.emulation import RenodeEmulation

        return RenodeEmulation.attach_members(specs, handle)

    def doctor(self) -> list[ToolCheck]:
        path = find_renode()
        version = renode_version(path) if path else None
        return [ToolCheck("renode", version is not None, version=version, path=path,
                          install=None if version else INSTALL_HINT,
                          note="found through VIRSIM_RENODE, else `renode` on PATH; runs in a network namespace "
                               "of its own")]
