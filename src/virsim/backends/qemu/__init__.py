"""The QEMU backend: runs a board node in `qemu-system-*`, controlled over QMP.

QEMU is started paused (`-S`) with three Unix sockets in the session's runtime dir — QMP, the
console UART (a chardev whose `logfile=` makes QEMU itself append every console byte to the
session's console log, so output survives a daemon restart) and the gdb stub — then `cont`.
Power, pause and reset go over QMP; a new program is a power cycle with the new image.
Snapshots are savevm/loadvm into a per-session qcow2; record/replay and reverse debugging are
QEMU's own icount-based rr (replay.py).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import mmap
import re
import shutil
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
    SEMIHOSTING_LOG,
    RunStatus,
    ToolCheck,
)
from virsim.backends.qemu import plugins
from virsim.backends.qemu.qmp import QMPClient
from virsim.backends.qemu.replay import RAW_CONSOLE, ReplayConsole, icount_args, prepare_replay_disk
from virsim.backends.process import EmulatorProcess
from virsim.backends.supervised import SupervisedInstance
from virsim.board import UART_TYPES, Node, nvic_lines
from virsim.errors import EmulatorError, EmulatorMissing, NotSupported, VirsimError
from virsim.backends.faults import FaultTable
from virsim.firmware import FirmwareImage, vector_table

log = logging.getLogger("virsim.backends.qemu")
INSTALL_HINT = "sudo apt-get install -y qemu-system-arm"
SNAPSHOT_DISK = "vm.qcow2"
# Machines whose models break QEMU's loadvm (measured: lm3s6965evb aborts in its SD card model).
NO_SNAPSHOTS = {"lm3s6965evb": "QEMU 7.2 aborts in the lm3s6965evb SD card model when loading a snapshot"}
_BINARIES = {"ARM": "qemu-system-arm", "AArch64": "qemu-system-aarch64", "RISC-V": None}
COVERAGE_MAP = "coverage.map"  # the vcov plugin's block table (backends/qemu/plugins)
FAULT_TABLE = "faults.map"  # vprobe's fault records (virsim.backends.faults)
KEEPER_SOCKET = "qemu-console.sock"  # QEMU's side of the console; the keeper listens on console.sock
KEEPER = Path(__file__).resolve().parent / "keeper.py"
_START_TIMEOUT = 10.0
_INPUT_NUDGE_SECONDS = 10.0
# Under rr=record QEMU hands console input to the UART at its next checkpoint, all bytes read so far
# at once, and a one-byte UART (CMSDK) keeps only the first: input is sent a byte at a time.
_RECORD_INPUT_GAP = 0.1  # 10 bytes/s: 50 ms still lost bytes on this machine


def binary_for(node: Node) -> str:
    if node.qemu and node.qemu.binary:
        return node.qemu.binary
    if node.processor.profile == "rv32":
        return "qemu-system-riscv32"
    if node.processor.profile == "rv64":
        return "qemu-system-riscv64"
    return _BINARIES[node.processor.elf_machine] or "qemu-system-arm"


@lru_cache(maxsize=8)
def qemu_version(binary: str) -> tuple[int, int, int] | None:
    path = shutil.which(binary)
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"version (\d+)\.(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else (0, 0, 0)


# QEMU's seccomp filter: no obsolete system calls, no setuid, no fork/exec, no scheduler or
# resource changes. A Cortex-M machine needs none of them; a QEMU built without seccomp runs without.
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


@functools.lru_cache(maxsize=None)
def has_seccomp(binary: str) -> bool:
    """Whether `binary` is built with seccomp (-sandbox): it links libseccomp."""
    path = shutil.which(binary)
    if path is None:
        return False
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return data.find(b"libseccomp.so") >= 0
    except (OSError, ValueError):
        return False


def _server_opts(version: tuple[int, int, int]) -> str:
    # QEMU 6.0 introduced boolean `server=on,wait=off`; the bare flags were removed later.
    return "server=on,wait=off" if version >= (6, 0, 0) else "server,nowait"


def _firmware_args(image: FirmwareImage, node: Node) -> list[str]:
    if image.format == "elf":
        return ["-kernel", str(image.path)]
    if image.format == "hex":
        return ["-device", f"loader,file={image.path}"]
    device = f"loader,file={image.path},addr={image.load_address:#x},force-raw=on"
    if node.processor.profile != "m":
        # A-profile: start executing at the load address. M-profile reads SP/PC from the vector table.
        device += ",cpu-num=0"
    return ["-device", device]


def build_command(spec: InstanceSpec, version: tuple[int, int, int], probe: Path | None = None) -> list[str]:
    """QEMU's command line for `spec`; `probe`: the vprobe plugin to load (virtual clock, faults)."""
    node = spec.node
    assert node.qemu is not None
    srv = _server_opts(version)
    run = spec.rundir
    args = [binary_for(node), "-M", node.qemu.machine]
    if has_seccomp(args[0]):
        args += ["-sandbox", SANDBOX]
    if node.qemu.cpu:
        args += ["-cpu", node.qemu.cpu]
    console_index = 0
    console = spec.board.console_peripheral(node)
    if console is not None:
        console_index = int(console.options.get("qemu_serial", 0))
    if spec.lockstep:
        # A lockstep node's console is read by the vsync plugin at each barrier, from QEMU's own log
        # (it must be written synchronously with the guest). No one connects to this socket, so
        # QEMU never meets EAGAIN there, which is what makes `logfile=` double bytes.
        console_dev = f"socket,id=console,path={run / 'console.sock'},{srv},logfile={console_file(spec)},logappend=on"
    else:
        # The console keeper (keeper.py) is this socket's one reader and writes the log.
        console_dev = f"socket,id=console,path={run / KEEPER_SOCKET},{srv}"
    args += [
        "-S", "-nodefaults", "-display", "none", "-monitor", "none",
        "-qmp", f"unix:{run / 'qmp.sock'},{srv}",
        "-chardev", console_dev,
    ]
    serials = {console_index: "chardev:console"}
    for _slot, chardev, index, _target, _target_slot, tx in uart_links(spec):
        args += ["-chardev", f"file,id={chardev},path={tx}"]
        serials[index] = f"chardev:{chardev}"
    for index in range(max(serials) + 1):
        args += ["-serial", serials.get(index, "null")]
    args += ["-chardev", f"socket,id=gdb,path={run / 'gdbstub.sock'},{srv}", "-gdb", "chardev:gdb"]
    if spec.lockstep:
        args += lockstep_args(spec, version)
    elif spec.record is not None or spec.replay is not None:
        args += ["-icount", icount_args(spec.record, spec.replay)]
    elif spec.deterministic:
        # Instruction-counted time, no host timing: same firmware + input -> same bytes. One
        # instruction is 2^shift ns, the power of two nearest the board's cycle (25 MHz: 32 ns), so
        # virtual time means what it means on the built-in engine: the board's clock.
        args += ["-icount", f"shift={icount_shift(node.processor.frequency)},align=off,sleep=off"]
    if (spec.workdir / SNAPSHOT_DISK).exists():
        # Cortex-M boards have no disk: this small qcow2, attached to nothing, is where savevm keeps
        # the VM state of `virsim snapshot create`.
        args += ["-drive", f"if=none,format=qcow2,file={spec.workdir / SNAPSHOT_DISK},id=snap"]
    if spec.coverage:
        plugin = plugins.build("vcov", ".".join(map(str, version)))
        args += ["-plugin", f"{plugin},map={spec.workdir / COVERAGE_MAP}"]
    if probe is not None:
        handlers, vectors = fault_handlers(spec), exception_handlers(spec)
        args += ["-plugin", f"{probe},table={spec.rundir / FAULT_TABLE}"
                 + (f",handlers={':'.join(f'{h:#x}' for h in handlers)}" if handlers else "")
                 + (f",vectors={':'.join(f'{h:#x}' for h in vectors)}" if vectors else "")]
    if node.semihosting:
        # The debug console to a file in the session folder (the UART's chardev cannot be shared);
        # files relative to QEMU's working directory, the session folder. QEMU does not confine them.
        args += ["-chardev", f"file,id=semihosting,path={spec.workdir / SEMIHOSTING_LOG}",
                 "-semihosting-config", "enable=on,target=native,chardev=semihosting"]
    if spec.firmware is not None:
        args += _firmware_args(spec.firmware, node)
    args += list(node.qemu.extra_args)
    return args


def fault_handlers(spec: InstanceSpec) -> list[int]:
    """Addresses of the HardFault, MemManage, BusFault and UsageFault handlers in the image's vector
    table (Cortex-M), for vprobe to watch."""
    if spec.firmware is None or spec.node.processor.profile != "m":
        return []
    try:
        table = vector_table(spec.firmware, spec.firmware.load_address or 0, 7)
    except (OSError, ValueError):
        return []
    if table is None:
        return []
    return sorted({table[slot] & ~1 for slot in range(3, 7) if table[slot] & ~1})


def exception_handlers(spec: InstanceSpec) -> list[int]:
    """Every handler address in the image's vector table (Cortex-M), for vprobe's ring of the
    exceptions taken. The table is read up to the node's NVIC lines, and ends early at the first
    word that is not a handler (0 is an unused slot): an image's table may be shorter than the NVIC."""
    node = spec.node
    if spec.firmware is None or node.processor.profile != "m":
        return []
    count = 16 + nvic_lines(node)
    try:
        table = vector_table(spec.firmware, spec.firmware.load_address or 0, count, partial=True)
    except (OSError, ValueError):
        return []
    out: set[int] = set()
    for slot, word in enumerate(table or [], 0):
        if slot < 2 or word == 0 or slot in (7, 8, 9, 10, 13):
            continue  # the initial SP, reset, reserved slots, unused vectors
        if not word & 1 or not any(r.address <= word & ~1 < r.end for r in node.memory):
            break  # past the table's end: code or data
        out.add(word & ~1)
    return sorted(out)


def icount_shift(frequency: int) -> int:
    """The -icount shift (2^shift ns per instruction) nearest to one instruction per cycle at
    `frequency`: 25 MHz (40 ns) -> 5 (32 ns, 31.25 MIPS)."""
    return max(0, min(10, round(math.log2(1e9 / frequency))))


def uart_links(spec: InstanceSpec) -> list[tuple[int, str, int, int, int, Path]]:
    """A lockstep node's linked UARTs (interconnect.uart_links): (peripheral slot, chardev id, QEMU
    serial index — options.qemu_serial, else its place among the node's UARTs —, target node,
    target slot, file its output goes to)."""
    if not spec.lockstep:
        return []
    peripherals = spec.node.peripherals
    uarts = [p.id for p in peripherals if p.type in UART_TYPES]
    out = []
    for uart_id, target, target_slot in spec.lockstep.get("uart_out") or []:
        periph = next(p for p in peripherals if p.id == uart_id)
        index = int(periph.options.get("qemu_serial", uarts.index(uart_id)))
        out.append((peripherals.index(periph), f"link-{uart_id}", index, int(target), int(target_slot),
                    spec.rundir / f"uart-{uart_id}.tx"))
    return out


def lockstep_args(spec: InstanceSpec, version: tuple[int, int, int]) -> list[str]:
    """A node of a multi-node system: instruction-timed, the vsync plugin holding it to the barrier,
    its machine RAM the shared file when it shares memory (virsim.sync.system.plan)."""
    node, cfg = spec.node, spec.lockstep or {}
    assert node.qemu is not None
    plugin = plugins.build("vsync", ".".join(map(str, version)))
    opts = {"seg": cfg["segment"], "index": cfg["index"], "hz": node.processor.frequency,
            "console": console_file(spec), "timeline": cfg["timeline"], "max_quantum": cfg.get("max_quantum") or 0,
            "irq_dev": node.qemu.irq_device}
    links = [f"link={slot}/{chardev}/{target}/{target_slot}/{tx}"
             for slot, chardev, _index, target, target_slot, tx in uart_links(spec)]
    for key, value in [*opts.items(), *(("link", link) for link in links)]:
        if "," in str(value):
            raise NotSupported(f"QEMU's -plugin options cannot hold a comma: {key}={value}", field=key, value=str(value))
    args = ["-icount", f"shift={icount_shift(node.processor.frequency)},align=off,sleep=off",
            "-plugin", f"{plugin}," + ",".join([*(f"{k}={v}" for k, v in opts.items()), *links])]
    files = {m.path for m in spec.shared_memory}
    if files:
        ram = node.qemu.machine_ram
        assert ram is not None and len(files) == 1, "plan() gives a QEMU node one RAM file"
        args += ["-object", f"memory-backend-file,id=vsram,mem-path={files.pop()},size={ram.size},share=on",
                 "-machine", "memory-backend=vsram"]
    return args


def console_file(spec: InstanceSpec) -> Path:
    """Where QEMU logs the console: the session's log, or for a replay the raw file ReplayConsole
    filters (reverse execution re-prints output)."""
    return spec.workdir / RAW_CONSOLE if spec.replay is not None else spec.console_log


class QemuInstance(SupervisedInstance):
    emulator = "QEMU"
    sockets = ("qmp.sock", "console.sock", KEEPER_SOCKET, "gdbstub.sock")

    def __init__(self, spec: InstanceSpec) -> None:
        super().__init__(spec)
        self.qmp: QMPClient | None = None
        self._input_until = 0.0  # keep waking QEMU's main loop until then (console input pending)
        self._paced_input = bytearray()  # recording: console bytes not sent yet
        self._paced_at = 0.0
        self.replay_console = (ReplayConsole(spec.workdir / RAW_CONSOLE, spec.console_log)
                               if spec.replay is not None else None)
        self.probe: Path | None = None  # the vprobe plugin loaded, if it could be built
        self._clock_command: bool | None = None  # QMP x-virsim-clock answers (None: not asked yet)

    # ---------------------------------------------------------------- the supervised process
    def _command(self) -> list[str]:
        version = qemu_version(binary_for(self.spec.node))
        if version is None:
            raise EmulatorMissing(f"{binary_for(self.spec.node)} is not installed: {INSTALL_HINT}",
                                  binary=binary_for(self.spec.node), install=INSTALL_HINT)
        self._snapshot_disk()
        if self.spec.record is not None or self.spec.replay is not None:
            self._rr_ready()
        self.probe = self._build_probe(version)
        if self.probe is not None:
            FaultTable.create(self.spec.rundir / FAULT_TABLE).close()
        command = build_command(self.spec, version, self.probe)
        command[0] = shutil.which(command[0]) or command[0]
        if self.spec.coverage:  # counts start from zero at every power-on
            plugins.CoverageMap(self.spec.workdir / COVERAGE_MAP).create()
        return command

    def _build_probe(self, version: tuple[int, int, int]) -> Path | None:
        """vprobe for a single-node session (lockstep nodes have vsync), if a C compiler is here;
        without it the session runs without fault records and with instruction-count time."""
        if self.spec.lockstep:
            return None
        try:
            return plugins.build("vprobe", ".".join(map(str, version)))
        except VirsimError as err:
            log.warning("QEMU session %s runs without vprobe (no fault records): %s", self.spec.session_id, err)
            return None

    def _probed(self) -> bool:
        """QEMU runs with vprobe (also true of one re-attached after a daemon restart)."""
        return self.probe is not None or any("vprobe" in arg for arg in self.command)

    def fault_table(self) -> Path | None:
        return self.spec.rundir / FAULT_TABLE if self._probed() else None

    def _after_launch(self) -> None:
        if self.spec.lockstep:
            return
        keeper = self.companions.get("console keeper")
        if keeper is not None and keeper.poll() is None:
            return
        run = self.spec.rundir
        # -I -S: the standard library only, no site-packages to scan: it is up in milliseconds.
        self.companions["console keeper"] = EmulatorProcess.launch(
            [sys.executable, "-I", "-S", str(KEEPER), str(run / KEEPER_SOCKET), str(run / "console.sock"),
             str(console_file(self.spec))], self.spec.stderr_log, self.spec.workdir)

    def _console_path(self) -> Path | None:
        return None if self.spec.lockstep else super()._console_path()

    def _open_control(self, deadline: float) -> None:
        self.qmp = QMPClient(self.spec.rundir / "qmp.sock")
        self.qmp.connect(deadline)

    def _close_control(self) -> None:
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None

    def _control_open(self) -> bool:
        return self.qmp is not None

    def _start(self) -> None:
        until = self.spec.replay_until
        if self.spec.replay is not None and until:
            self._qmp().execute("replay-break", icount=int(until))
        self._cont()

    def _quit(self) -> None:
        self._qmp().execute("quit")

    def _qmp(self) -> QMPClient:
        if self.qmp is None:
            raise EmulatorError("QEMU is not running (no QMP connection)")
        return self.qmp

    # ---------------------------------------------------------------------- power
    def _snapshot_disk(self) -> None:
        """Give the VM a qcow2 for savevm, when qemu-img is here and the machine survives loadvm."""
        disk = self.spec.workdir / SNAPSHOT_DISK
        machine = self.spec.node.qemu.machine if self.spec.node.qemu else ""
        if disk.exists() or machine in NO_SNAPSHOTS or shutil.which("qemu-img") is None:
            return
        if self.spec.replay is not None:  # the recording's disk: it holds the start snapshot
            prepare_replay_disk(self.spec.replay.with_name(SNAPSHOT_DISK), disk)
            return
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1M"], check=True,
                       capture_output=True, timeout=30)

    def _snapshot_ready(self) -> None:
        machine = self.spec.node.qemu.machine if self.spec.node.qemu else ""
        if machine in NO_SNAPSHOTS:
            raise NotSupported(f"snapshots are refused on {machine}: {NO_SNAPSHOTS[machine]}",
                               capability=str(Capability.SNAPSHOT), machine=machine)
        if not (self.spec.workdir / SNAPSHOT_DISK).exists() or SNAPSHOT_DISK not in " ".join(self.command):
            raise EmulatorMissing("QEMU snapshots need qemu-img (install it, then power-cycle the session): "
                                  "sudo apt-get install -y qemu-utils", binary="qemu-img",
                                  install="sudo apt-get install -y qemu-utils")

    def _rr_ready(self) -> None:
        """Record and replay need the snapshot disk (the start snapshot lives there)."""
        what = "record" if self.spec.record is not None else "replay"
        machine = self.spec.node.qemu.machine if self.spec.node.qemu else ""
        if machine in NO_SNAPSHOTS:
            raise NotSupported(f"QEMU cannot {what} on {machine}: its replay starts from a snapshot, and "
                               f"{NO_SNAPSHOTS[machine]}", capability=str(Capability.RECORD), machine=machine)
        if not (self.spec.workdir / SNAPSHOT_DISK).exists():
            if self.spec.replay is not None and not self.spec.replay.with_name(SNAPSHOT_DISK).exists():
                raise EmulatorError(f"the recording's start snapshot {self.spec.replay.with_name(SNAPSHOT_DISK)} "
                                    "is missing", file=str(self.spec.replay.with_name(SNAPSHOT_DISK)))
            raise EmulatorMissing(f"QEMU {what} needs qemu-img for its start snapshot: "
                                  "sudo apt-get install -y qemu-utils", binary="qemu-img",
                                  install="sudo apt-get install -y qemu-utils")
        until = self.spec.replay_until
        if until and not until.isdigit():
            raise NotSupported(f"--until {until}: QEMU replays stop at an instruction count (--until <n>); "
                               "its recorded clock is not one instruction per ns", field="until", value=until)

    def limits(self) -> dict[Capability, str]:
        out = {}
        if not self._probed():
            out[Capability.FAULTS] = ("this QEMU session runs without virsim's vprobe plugin (it needs a C compiler: "
                                      f"{plugins.COMPILER_HINT}; multi-node nodes have vsync instead): no fault records")
        if self.spec.replay is None:
            out[Capability.REVERSE] = ("QEMU executes in reverse only while replaying a recording: create the "
                                       "session with --record, then debug `virsim session replay <recording>`")
        else:
            out[Capability.RESET] = "a QEMU replay follows its recording: reset would leave it (power-cycle instead)"
        if self.spec.record is not None or self.spec.replay is not None:
            out[Capability.SNAPSHOT] = ("QEMU snapshots are refused while recording or replaying: its replay seeks "
                                        "from snapshots, and a restore would leave the recorded execution")
        return out

    def power_on(self) -> None:
        if self.replay_console is not None:
            # A replay starts from instruction 0 again: its output re-prints the log, which is kept.
            (self.spec.workdir / RAW_CONSOLE).unlink(missing_ok=True)
            self.replay_console = ReplayConsole(self.spec.workdir / RAW_CONSOLE, self.spec.console_log)
            self.replay_console.pos = 0
        super().power_on()

    def power_off(self) -> None:
        super().power_off()
        if self.replay_console is not None:
            self.replay_console.pump()  # what it printed last, before the log is closed

    def coverage(self, action: str) -> list[tuple[int, int, int]] | None:
        if action == "stop":
            raise NotSupported("QEMU coverage cannot be stopped: the vcov plugin is loaded at launch and counts "
                               "every block until QEMU exits (`virsim coverage reset` zeroes the counts; the built-in "
                               "engine, --backend builtin, can stop)", capability=str(Capability.COVERAGE),
                               action=action)
        if not self.spec.coverage:
            raise NotSupported("QEMU loads its coverage plugin at launch: create the session with --coverage "
                               "(or use `virsim run --coverage FILE`)", capability=str(Capability.COVERAGE))
        table = plugins.CoverageMap(self.spec.workdir / COVERAGE_MAP)
        if action == "blocks":
            return table.blocks()[0]
        if action == "reset":
            table.reset()
        elif action != "start":
            raise NotSupported(f"QEMU coverage cannot {action}: the plugin counts from power-on",
                               capability=str(Capability.COVERAGE))
        return None

    def reverse_begin(self) -> None:
        if self.replay_console is not None:
            self.replay_console.reverse_begin()

    def reverse_end(self) -> None:
        if self.replay_console is not None:
            self.replay_console.reverse_end()

    def _hmp(self, command_line: str) -> str:
        reply = self._qmp().hmp(command_line).strip()
        if reply.startswith("Error") or "error" in reply.lower()[:40]:
            raise EmulatorError(f"QEMU {command_line.split()[0]}: {reply}", command=command_line)
        return reply

    def create_snapshot(self, path: Path, meta: dict[str, Any]) -> dict[str, Any]:
        self._snapshot_ready()
        tag = str(meta["id"])
        self._hmp(f"savevm {tag}")
        size = 0
        for line in self._qmp().hmp("info snapshots").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == tag:
                size = int(float(parts[2]) * {"B": 1, "KiB": 1024, "MiB": 1 << 20, "GiB": 1 << 30}.get(parts[3], 1))
        ns = self.virtual_time_ns()
        meta = dict(meta, backend="qemu", node=self.spec.node.id, tag=tag, virtual_ns=ns, instructions=ns,
                    deterministic=self.spec.deterministic)
        snapshot.write(path, meta, {"qemu": json.dumps({"tag": tag}).encode()}, durable=False)
        return {"virtual_ns": ns, "instructions": ns, "size": size}

    def restore_snapshot(self, path: Path, marker: bytes = b"") -> dict[str, Any]:
        self._snapshot_ready()
        meta = snapshot.read_meta(path)
        tag = str(meta["tag"])
        # One round trip for stop and loadvm (the VM must be stopped while the marker is written,
        # or output of the restored state could land before it) and none for `cont`; whether it
        # ran is the STOP event `stop` emits only for a running VM (a query-status round trip to
        # a busy QEMU costs more). This keeps a restore near a bare loadvm (bench_snapshots.py).
        qmp = self._qmp()
        qmp.drain_events()
        _, reply = qmp.pipeline(("stop", {}), ("human-monitor-command", {"command-line": f"loadvm {tag}"}))
        was_running = any(event.get("event") == "STOP" for event in qmp.drain_events())
        try:
            if str(reply).strip().lower().startswith("error"):
                raise EmulatorError(f"QEMU loadvm: {str(reply).strip()}", command=f"loadvm {tag}")
            if marker:
                # QEMU appends to the same log; the VM is stopped, so the marker lands between the
                # output from before and the replay after (loadvm does not rewind host-side output).
                with self.spec.console_log.open("ab") as log:
                    log.write(marker)
        finally:
            if was_running:
                qmp.post("cont")
        return {"virtual_ns": meta.get("virtual_ns"), "instructions": meta.get("instructions")}

    def delete_snapshot(self, path: Path) -> None:
        if self.qmp is None or not path.exists():
            return
        try:
            self._hmp(f"delvm {snapshot.read_meta(path)['tag']}")
        except (EmulatorError, KeyError):
            pass  # already gone from the qcow2: nothing to free

    def reset(self) -> None:
        self._qmp().execute("system_reset")

    def pause(self) -> None:
        self._qmp().execute("stop")

    def resume(self) -> None:
        if self.spec.lockstep:
            # Without waiting for the reply: the node may reach its first barrier (its plugin's timer
            # callback, which holds QEMU's big lock while it waits) before QEMU writes the reply,
            # and the node it waits for is started only after this returns.
            self._qmp().post("cont")
            return
        self._cont()

    def _cont(self) -> None:
        """`cont`; a firmware that ends QEMU the moment it runs (semihosting SYS_EXIT, a lockup) may
        take the reply with it: QEMU did run, and supervision reports how it ended."""
        try:
            self._qmp().execute("cont")
        except EmulatorError:
            if self.proc is None or not self.proc.wait(2.0):
                raise

    def run_status(self) -> RunStatus:
        status = self._qmp().execute("query-status")
        return RunStatus(bool(status.get("running")), str(status.get("status", "")))

    def _clock(self) -> tuple[int | None, int]:
        """(QEMU's virtual clock in ns, or None without vprobe; instructions executed)."""
        if self._clock_command is not False and self._probed():
            try:
                reply = self._qmp().execute("x-virsim-clock")
                self._clock_command = True
                return int(reply["ns"]), int(reply["icount"])
            except EmulatorError:
                self._clock_command = False  # an older vprobe, or none: count instructions instead
        return None, int(self._qmp().execute("query-replay")["icount"])

    def virtual_time_ns(self) -> int | None:
        if not self.spec.deterministic or self.spec.record is not None or self.spec.replay is not None:
            return None  # rr runs with shift=auto: an instruction is not a fixed time
        ns, count = self._clock()
        # Without vprobe: query-replay's instruction counter (reported whenever icount is on), one
        # instruction = 2^shift ns; time a sleeping CPU skipped is then missing.
        return ns if ns is not None else count << self._shift()

    def instructions(self) -> int | None:
        if not self.spec.deterministic:
            return None
        return self._clock()[1]

    def stop_at(self, virtual_ns: int | None, after_ns: int | None = None) -> int | None:
        if self.virtual_time_ns() is None or not self._probed():
            raise NotSupported("this QEMU session cannot stop at a virtual time (it needs --deterministic and "
                               "virsim's vprobe plugin)", capability=str(Capability.VIRTUAL_TIME))
        args = {"after_ns": int(after_ns)} if after_ns else {"ns": int(virtual_ns or 0)}
        return int(self._qmp().execute("x-virsim-stop-at", **args)["ns"]) or None

    def _shift(self) -> int:
        return icount_shift(self.spec.node.processor.frequency)

    def clock_info(self) -> dict[str, Any] | None:
        hz = self.spec.node.processor.frequency
        if self.spec.record is not None or self.spec.replay is not None:
            return {"board_hz": hz, "instruction_ns": None,
                    "note": "recorded and replayed QEMU runs count time with -icount shift=auto: an instruction is "
                            "no fixed time (stop a replay at an instruction count)"}
        if not self.spec.deterministic:
            return {"board_hz": hz, "instruction_ns": None,
                    "note": "host-timed (not --deterministic): virtual time follows the host's clock"}
        shift = self._shift()
        ns = 1 << shift
        ratio = (1e9 / hz) / ns
        return {"board_hz": hz, "instruction_ns": ns,
                "note": f"QEMU counts {ns} ns per instruction (-icount shift={shift}, the power of two nearest the "
                        f"board's {1e9 / hz:g} ns cycle): code runs {ratio:.3g}x as fast in virtual time as one "
                        "instruction per board cycle (the built-in engine); timers run at the board's rate, and a "
                        "sleeping CPU skips to its next timer"}

    # ----------------------------------------------------------------------------- console
    def console_write(self, data: bytes) -> int:
        if self.spec.lockstep:
            raise NotSupported("console input to a QEMU node of a multi-node board is not supported: QEMU logs "
                               "that console itself for the barrier and no channel carries input (put the "
                               "console UART on a built-in node)", capability=str(Capability.CONSOLE))
        if self.spec.record is None:
            return super().console_write(data)
        if self.console is None:
            raise EmulatorError(f"the console of {self.emulator} is not connected")
        self._paced_input += data
        return len(data)

    def busy(self) -> bool:
        return bool(self._paced_input)

    def _console_written(self) -> None:
        # QEMU's chardev stops watching the socket while the UART cannot receive (e.g. before the
        # firmware enables RX) and only looks again when its main loop wakes up; a bare socket write
        # does not wake it. Any QMP command does: one now, and one every tick for a while (tick()),
        # so input sent before the firmware is ready is not left stuck in the socket buffer.
        if self.spec.lockstep:
            return  # the vsync plugin's timer wakes the main loop every quantum; QMP may be held at a barrier
        self._qmp().execute("query-status")
        self._input_until = time.monotonic() + _INPUT_NUDGE_SECONDS

    def on_readable(self, fd: int) -> None:
        super().on_readable(fd)
        if self.replay_console is not None:
            self.replay_console.pump()

    def tick(self) -> None:
        if self.replay_console is not None:
            self.replay_console.pump()
        if self._paced_input and time.monotonic() - self._paced_at >= _RECORD_INPUT_GAP and self.console:
            super().console_write(bytes(self._paced_input[:1]))
            del self._paced_input[:1]
            self._paced_at = time.monotonic()
        if self._input_until and time.monotonic() < self._input_until and self.qmp is not None:
            try:
                self.qmp.execute("query-status")
            except EmulatorError:
                self._input_until = 0.0

    def endpoints(self) -> dict[str, str]:
        return {"qmp": str(self.spec.rundir / "qmp.sock")}



class QemuBackend(BackendAdapter):
    name = "qemu"
    capabilities = frozenset({
        Capability.POWER, Capability.RESET, Capability.PAUSE, Capability.PROGRAM_ELF, Capability.PROGRAM_BIN,
        Capability.PROGRAM_HEX, Capability.CONSOLE, Capability.DETERMINISTIC, Capability.REATTACH,
        Capability.DEBUG, Capability.VIRTUAL_TIME, Capability.SNAPSHOT, Capability.RECORD, Capability.REVERSE,
        Capability.COVERAGE, Capability.LOCKSTEP, Capability.SHARED_MEMORY, Capability.FAULTS,
    })
    held_at_barrier = True  # QMP does not answer while vsync waits at the barrier

    def check_node(self, node: Node) -> None:
        if node.qemu is None:
            raise NotSupported(f"node {node.id!r} has no 'qemu' section (qemu.machine): it cannot run on QEMU",
                               backend=self.name, node=node.id, field="qemu.machine")
        binary = binary_for(node)
        if qemu_version(binary) is None:
            raise EmulatorMissing(f"{binary} is not installed: {INSTALL_HINT}", binary=binary, install=INSTALL_HINT)

    def create_instance(self, spec: InstanceSpec) -> Instance:
        return QemuInstance(spec)

    def snapshot_export_sections(self, workdir: Path, meta: dict[str, Any]) -> dict[str, bytes]:
        return {"qcow2": (workdir / SNAPSHOT_DISK).read_bytes()}  # holds the VM state savevm wrote

    def snapshot_prepare(self, workdir: Path, sections: dict[str, bytes]) -> None:
        if "qcow2" in sections:
            (workdir / SNAPSHOT_DISK).write_bytes(sections["qcow2"])

    def attach(self, spec: InstanceSpec, handle: dict[str, Any]) -> Instance | None:
        return QemuInstance.reattach(spec, handle)

    def doctor(self) -> list[ToolCheck]:
        checks = []
        for binary in ("qemu-system-arm", "qemu-system-aarch64"):
            version = qemu_version(binary)
            checks.append(ToolCheck(
                name=binary, ok=version is not None, path=shutil.which(binary),
                version=".".join(map(str, version)) if version else None,
                install=None if version else (INSTALL_HINT if binary.endswith("arm") else
                                              "sudo apt-get install -y qemu-system-arm  # ships aarch64 too"),
                note=None if binary.endswith("arm") else "only for AArch64 boards"))
        cc = plugins.compiler()
        for name, label, use in (("vprobe", "qemu probe plugin", "QEMU's virtual clock and fault records"),
                                 ("vcov", "qemu coverage plugin", "coverage on QEMU"),
                                 ("vsync", "qemu lockstep plugin", "QEMU nodes of multi-node boards")):
            try:
                built = plugins.build(name, ".".join(map(str, qemu_version("qemu-system-arm") or (0, 0, 0))))
                checks.append(ToolCheck(label, True, path=str(built), note=f"built from {name}.c, cached"))
            except VirsimError as err:
                checks.append(ToolCheck(label, False, path=cc, install=plugins.COMPILER_HINT,
                                        note=f"{use}: {err.message}"))
        img = shutil.which("qemu-img")
        checks.append(ToolCheck("qemu-img", img is not None, path=img,
                                install=None if img else "sudo apt-get install -y qemu-utils",
                                note="snapshots, record/replay"))
        return checks
