"""One Cortex-M node of the built-in engine: Unicorn CPU, memory map, peripherals and virtual time.

The machine is built from a BoardConfig node: `memory[]` regions mapped with their access rights
(a mirror maps the same host memory a second time; a write to ROM or an access to an unmapped
address becomes a precise BusFault for the firmware, not an engine error), `unmodelled[]` ranges
that read zero and ignore writes (each address reported once), bit-band aliases where the
processor has them, `peripherals[]` instantiated from `peripherals.MODELS` and the ARMv7-M System
Control Space from `armv7m`.

Time: `cycles` is virtual time in processor clock cycles, one per instruction executed, plus the
cycles a WFI sleeps through. `run(budget)` executes in slices of `emu_start(count=N)` where N ends
at the next peripheral event, so timers fire at exact instruction counts with no Python hook on the
hot path. Hooks exist only where something happens: MMIO, SVC/exception return (interrupt hook),
invalid accesses, breakpoints/watchpoints, and — once an interrupt has waited behind
PRIMASK/BASEPRI/FAULTMASK — the blocks after the instructions that can drop a mask. Same
firmware and inputs give the same cycles, output and state.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unicorn import (
    UC_ARCH_ARM,
    UC_HOOK_CODE,
    UC_HOOK_INTR,
    UC_HOOK_MEM_INVALID,
    UC_HOOK_MEM_READ,
    UC_HOOK_MEM_WRITE,
    UC_MEM_FETCH_PROT,
    UC_MEM_FETCH_UNMAPPED,
    UC_MEM_WRITE,
    UC_MEM_WRITE_PROT,
    UC_MEM_WRITE_UNMAPPED,
    UC_MODE_MCLASS,
    UC_MODE_THUMB,
    UC_PROT_ALL,
    UC_PROT_EXEC,
    UC_PROT_READ,
    UC_PROT_WRITE,
    Uc,
    UcError,
)
from unicorn.arm_const import (
    UC_ARM_REG_BASEPRI,
    UC_ARM_REG_CONTROL,
    UC_ARM_REG_FAULTMASK,
    UC_ARM_REG_LR,
    UC_ARM_REG_MSP,
    UC_ARM_REG_PC,
    UC_ARM_REG_PRIMASK,
    UC_ARM_REG_PSP,
    UC_ARM_REG_R0,
    UC_ARM_REG_SP,
    UC_ARM_REG_XPSR,
    UC_CPU_ARM_CORTEX_M3,
    UC_CPU_ARM_CORTEX_M4,
)

from virsim.backends.builtin import armv7m
from virsim.backends.builtin.counter import InstructionCounter
from virsim.backends.builtin.direct import BlockHook
from virsim.backends.builtin.peripherals import CORE_TYPES, MODELS, Device, Uart
from virsim.backends.builtin.probes import Probes
from virsim.firmware import FirmwareImage, load_image

if TYPE_CHECKING:  # the engine process builds plain views of these (engine.py): no pydantic at startup
    from virsim.board import BoardConfig, MemoryRegion, Node

PAGE = 0x1000
_CPU_MODELS = {"cortex-m3": UC_CPU_ARM_CORTEX_M3, "cortex-m4": UC_CPU_ARM_CORTEX_M4}
SUPPORTED_CPUS = tuple(_CPU_MODELS)
FPU_CPUS = frozenset({"cortex-m4"})  # with the FP extension (as QEMU's cortex-m4: an M4F)
_DIV = re.compile(rb"[\x90-\x9f\xb0-\xbf]\xfb[\xf0-\xff][\xf0-\xff]", re.DOTALL)  # SDIV/UDIV (T1)
# The instructions that can lower the execution priority, and so unmask a pending exception: MSR to
# PRIMASK, BASEPRI or FAULTMASK (T1: F38n 88xx, SYSm 0x10, 0x11, 0x13; BASEPRI_MAX only raises it)
# and CPSIE (B661-B663). Exception returns arrive as an interrupt hook; NVIC and SCB writes call
# Machine._attention.
_UNMASK = re.compile(rb"[\x80-\x8f]\xf3[\x10\x11\x13]\x88|[\x61-\x63]\xb6", re.DOTALL)
# MRS Rd, CONTROL (F3EF 8d14): on a CPU with the FPU, CONTROL is read without Unicorn's SFPA bit.
_MRS_CONTROL = re.compile(rb"\xef\xf3\x14[\x80-\x8f]", re.DOTALL)
MAX_UNMODELLED_REPORTED = 100  # in stats (session show); every address still reads zero after that
_PERMS = {"RW": UC_PROT_ALL, "RO": UC_PROT_READ | UC_PROT_EXEC, "WO": UC_PROT_WRITE}
EXCP_UDEF, EXCP_SWI, EXCP_PREFETCH_ABORT, EXCP_BKPT, EXCP_EXCEPTION_EXIT = 1, 2, 3, 7, 8
# The registers a debugger sees and a snapshot saves, in the GDB target description's order.
REGISTERS = ([(f"r{i}", UC_ARM_REG_R0 + i) for i in range(13)] +
               [("sp", UC_ARM_REG_SP), ("lr", UC_ARM_REG_LR), ("pc", UC_ARM_REG_PC), ("xpsr", UC_ARM_REG_XPSR),
                ("msp", UC_ARM_REG_MSP), ("psp", UC_ARM_REG_PSP), ("primask", UC_ARM_REG_PRIMASK),
                ("basepri", UC_ARM_REG_BASEPRI), ("faultmask", UC_ARM_REG_FAULTMASK),
                ("control", UC_ARM_REG_CONTROL)])
EXCP_NOCP, EXCP_INVSTATE = 17, 18


class MachineError(Exception):
    """The board cannot be built (unsupported CPU, unaligned region, unknown peripheral type)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Stop:
    """Why `run()` returned."""

    reason: str  # budget | idle | breakpoint | watchpoint | bkpt | lockup | reset | exit (semihosting)
    pc: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class SharedRegion:
    """A region backed by a file (e.g. in /dev/shm) that other processes map too."""

    path: str
    address: int
    size: int
    name: str = ""
    offset: int = 0  # into the file (page aligned)


try:  # the C entry point behind Uc.reg_read (unicorn's Python binding keeps it as `uclib`)
    from unicorn.unicorn_py3.unicorn import uclib as _uclib

    _uc_reg_read = _uclib.uc_reg_read
except (ImportError, AttributeError):  # another binding layout: the slower public call still works
    _uc_reg_read = None


def _carve(start: int, end: int, windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[start, end) without the shared-memory windows inside it (mapped from their files instead)."""
    pieces, at = [], start
    for lo, hi in windows:
        if hi <= at or lo >= end:
            continue
        if lo > at:
            pieces.append((at, lo))
        at = max(at, hi)
    if at < end:
        pieces.append((at, end))
    return pieces


def check_node(node: Node) -> None:
    """Raise MachineError naming the field this engine cannot build."""
    if node.processor.type not in _CPU_MODELS:
        raise MachineError(f"processor {node.processor.type!r} is not supported by the built-in engine "
                           f"(supported: {', '.join(SUPPORTED_CPUS)})", "processor.type")
    for i, region in enumerate(node.memory):
        if region.address % PAGE or region.size % PAGE:
            raise MachineError(f"memory[{i}] ({region.address:#x}, size {region.size:#x}) is not 4 KiB aligned; "
                               "the built-in engine maps memory in 4 KiB pages", f"memory[{i}]")
    for i, per in enumerate(node.peripherals):
        if per.type not in MODELS and per.type not in CORE_TYPES:
            raise MachineError(f"peripheral {per.id!r} has type {per.type!r}, which has no built-in model "
                               f"(models: {', '.join(sorted(MODELS) + sorted(CORE_TYPES))})",
                               f"peripherals[{i}].type")


class Machine:
    def __init__(self, board: BoardConfig, node: Node, shared: list[SharedRegion] | None = None) -> None:
        check_node(node)
        self.board_id = board.system_id
        self.node = node
        self.frequency = node.processor.frequency
        uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
        uc.ctl_set_cpu_model(_CPU_MODELS[node.processor.type])
        self.uc = uc
        self.counter = InstructionCounter(uc)
        self.cycles = 0
        self.instructions = 0
        self.exceptions_taken = 0
        # Called at the entry of a fault handler (HardFault..UsageFault) with the exception number,
        # the handler's frame stacked; True halts the machine there (virsim.backends.faults).
        self.on_fault: Callable[[int], bool] | None = None
        self.on_taken: Callable[[int], None] | None = None  # every exception entry (the engine records it)
        # BKPT 0xAB with semihosting on: (r0, r1) -> the r0 to return, or None when the firmware
        # exited (SYS_EXIT): the run then stops with reason "exit".
        self.on_semihost: Callable[[int, int], int | None] | None = None
        self._fault_halt = False
        self.debugger = False  # a debugger is attached: BKPT halts for it (else a HardFault)
        self._in_emu = False
        self._stop: Stop | None = None
        self._reset_request: str | None = None
        self._image: list[tuple[int, bytes]] = []
        self._exec_ranges: list[tuple[int, int]] = []
        self._shm: list[mmap.mmap] = []

        windows = sorted((r.address, r.address + r.size) for r in shared or [])
        mirrored = {r.mirror_of for r in node.memory if r.mirror_of}
        self._backing: dict[str, mmap.mmap] = {}  # regions with mirrors: one host buffer for all views
        for region in node.memory:
            perms = _PERMS[region.access]
            if region.type in ("ROM", "Flash"):
                perms &= ~UC_PROT_WRITE
            if region.mirror_of or region.name in mirrored:
                if _carve(region.address, region.address + region.size, windows) != [(region.address, region.address + region.size)]:
                    raise MachineError(f"memory {region.name}: a shared-memory window cannot lie in a mirrored region",
                                       "memory")
                name = region.mirror_of or region.name
                if name not in self._backing:
                    self._backing[name] = mmap.mmap(-1, region.size)
                buf = self._backing[name]
                uc.mem_map_ptr(region.address, region.size, perms, ctypes.addressof(ctypes.c_char.from_buffer(buf)))
                continue
            for start, end in _carve(region.address, region.address + region.size, windows):
                uc.mem_map(start, end - start, perms)
        for region in shared or []:
            self._map_shared(region)

        num_irqs = int(max([p.irq for p in node.peripherals if p.irq is not None] + [31]) + 1)
        num_irqs = max(32, -(-num_irqs // 32) * 32)
        opts = next((p.options for p in node.peripherals if p.type == "armv7m-nvic"), {})
        self.nvic = armv7m.Nvic(int(opts.get("irqs", num_irqs)), int(opts.get("prio_bits", 8)))
        self.nvic.changed = self._attention
        self.exc = armv7m.ExceptionUnit(self, self.nvic)
        if node.processor.type in FPU_CPUS:
            self.exc.fpu = armv7m.Fpu(self, self.exc.regs)
        st = next((p.options for p in node.peripherals if p.type == "armv7m-systick"), {})
        self.systick = armv7m.SysTick(self, self.nvic, self.frequency, int(st.get("refclk_hz", 1_000_000)))
        self.scs = armv7m.Scs(self, self.nvic, self.exc, self.systick, node.processor.type)
        self.devices: list[Device] = [MODELS[p.type](self, p) for p in node.peripherals if p.type in MODELS]
        # Those that keep time (timers, UART receivers): the others have nothing to do per slice.
        self._timed = [d for d in self.devices if type(d).advance is not Device.advance]
        self._map_io()
        # Accesses to the board's unmodelled ranges: the first of each address, reported by on_unmodelled.
        self.unmodelled_seen: dict[int, tuple[str, str]] = {}  # address -> (range name, "read"/"write")
        self.on_unmodelled: Callable[[int, str, str], None] | None = None
        self._map_unmodelled()
        if node.processor.bitband:
            self._map_bitband()

        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        uc.hook_add(UC_HOOK_MEM_INVALID, self._on_invalid)
        self._fault_access: tuple[int, int] | None = None
        self.breakpoints: dict[int, int] = {}
        self.watchpoints: dict[tuple[str, int, int], int] = {}
        self.probes = Probes(self)  # coverage and trace hooks, installed only while on
        self._pc_value = ctypes.c_uint32()
        self._pc_ref = ctypes.byref(self._pc_value)
        self._skip_bp: int | None = None
        # While re-executing for reverse debugging: (instructions, address) of breakpoint hits
        # (watchpoint hits with -address) are collected here instead of stopping.
        self.collect_hits: list[tuple[int, int]] | None = None
        self._mask_hook: int | None = None  # watching instruction by instruction (code outside the image)
        self._watching = False  # an exception is pending behind PRIMASK/BASEPRI/FAULTMASK
        self._unmask_hooks: list[BlockHook] = []  # _hook_unmask_points
        self._control_hooks: list[int] = []  # _hook_control_reads
        self._div_hooks: dict[int, int] = {}
        self._sleeping = False
        self._stalled = 0  # cycles the current instruction waited (Machine.stall)

    # ------------------------------------------------------------------------------- building
    def _map_shared(self, region: SharedRegion) -> None:
        path = Path(region.path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < region.offset + region.size:
                os.ftruncate(fd, region.offset + region.size)
            mem = mmap.mmap(fd, region.size, offset=region.offset)
        finally:
            os.close(fd)
        import ctypes

        ptr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
        self.uc.mem_map_ptr(region.address, region.size, UC_PROT_ALL, ptr)
        self._shm.append(mem)

    def _map_io(self) -> None:
        """Map every page holding a device register window, dispatching accesses by address."""
        windows: list[tuple[int, int, Any]] = [(self.scs.base, self.scs.size, self.scs)]
        windows += [(d.base, d.size, d) for d in self.devices]
        pages: dict[int, list[tuple[int, int, Any]]] = {}
        for base, size, dev in windows:
            for page in range(base & ~(PAGE - 1), base + size, PAGE):
                pages.setdefault(page, []).append((base, base + size, dev))
        for page, devs in sorted(pages.items()):
            self.uc.mmio_map(page, PAGE, self._io_reader(page, devs), None, self._io_writer(page, devs), None)

    def _io_reader(self, page: int, devs: list[tuple[int, int, Any]]) -> Callable[..., int]:
        if len(devs) == 1 and devs[0][0] == page:
            dev = devs[0][2]
            return lambda uc, off, size, ud: dev.read(off, size)

        def read(uc: Uc, off: int, size: int, ud: Any) -> int:
            addr = page + off
            for lo, hi, dev in devs:
                if lo <= addr < hi:
                    return int(dev.read(addr - lo, size))
            return 0

        return read

    def _io_writer(self, page: int, devs: list[tuple[int, int, Any]]) -> Callable[..., None]:
        if len(devs) == 1 and devs[0][0] == page:
            dev = devs[0][2]
            return lambda uc, off, size, value, ud: dev.write(off, size, value)

        def write(uc: Uc, off: int, size: int, value: int, ud: Any) -> None:
            addr = page + off
            for lo, hi, dev in devs:
                if lo <= addr < hi:
                    dev.write(addr - lo, size, value)
                    return

        return write

    def _mapped_pages(self) -> set[int]:
        pages = set()
        for start, end, _perms in self.uc.mem_regions():
            pages.update(range(start, end + 1, PAGE))
        return pages

    def _map_unmodelled(self) -> None:
        """The board's unmodelled ranges (Node.unmodelled), less the pages already mapped (memory and
        the modelled devices' windows): reads return zero, writes are ignored, as on QEMU."""
        if not self.node.unmodelled:
            return
        taken = self._mapped_pages()
        for rng in self.node.unmodelled:
            run: int | None = None
            for page in range(rng.address, rng.address + rng.size + PAGE, PAGE):
                free = page < rng.address + rng.size and page not in taken
                if free and run is None:
                    run = page
                elif not free and run is not None:
                    self._unmodelled_window(run, page - run, rng.name)
                    run = None

    def _unmodelled_access(self, address: int, name: str, kind: str) -> None:
        if address not in self.unmodelled_seen:
            self.unmodelled_seen[address] = (name, kind)
            if self.on_unmodelled is not None:
                self.on_unmodelled(address, name, kind)

    def _unmodelled_window(self, start: int, size: int, name: str) -> None:
        def read(uc: Uc, off: int, n: int, ud: Any) -> int:
            self._unmodelled_access(start + off, name, "read")
            return 0

        def write(uc: Uc, off: int, n: int, value: int, ud: Any) -> None:
            self._unmodelled_access(start + off, name, "write")

        self.uc.mmio_map(start, size, read, None, write, None)

    def _map_bitband(self) -> None:
        """Bit-band aliases (ARMv7-M B3.1.3): a word of the 32 MiB alias is one bit of the 1 MiB below
        it, read as 0 or 1; a write changes that bit alone (read-modify-write of its byte)."""
        for alias, base in ((0x22000000, 0x20000000), (0x42000000, 0x40000000)):
            self.uc.mmio_map(alias, 0x2000000, lambda uc, off, size, ud, b=base: self._bitband_read(b, off),
                             None, lambda uc, off, size, value, ud, b=base: self._bitband_write(b, off, value), None)

    def _bitband_read(self, base: int, off: int) -> int:
        address, bit = base + (off >> 5), (off >> 2) & 7
        return (self._byte_at(address) >> bit) & 1

    def _bitband_write(self, base: int, off: int, value: int) -> None:
        address, bit = base + (off >> 5), (off >> 2) & 7
        byte = self._byte_at(address)
        byte = (byte | (1 << bit)) if value & 1 else (byte & ~(1 << bit))
        self._byte_to(address, byte)

    def _byte_at(self, address: int) -> int:
        for dev in (self.scs, *self.devices):
            if dev.base <= address < dev.base + dev.size:
                word = int(dev.read((address - dev.base) & ~3, 4))
                return (word >> (8 * (address & 3))) & 0xFF
        try:
            return self.uc.mem_read(address, 1)[0]
        except UcError:
            self.exc.fault(armv7m.BUSFAULT, armv7m.CFSR_PRECISERR | armv7m.CFSR_BFARVALID, bfar=address,
                           what=f"bit-band access to unmapped address {address:#010x}")
            self.counter.stop_after_current()
            return 0

    def _byte_to(self, address: int, value: int) -> None:
        for dev in (self.scs, *self.devices):
            if dev.base <= address < dev.base + dev.size:
                word = int(dev.read((address - dev.base) & ~3, 4))
                shift = 8 * (address & 3)
                dev.write((address - dev.base) & ~3, 4, (word & ~(0xFF << shift)) | (value << shift))
                return
        try:
            self.uc.mem_write(address, bytes([value]))
        except UcError:
            self.exc.fault(armv7m.BUSFAULT, armv7m.CFSR_PRECISERR | armv7m.CFSR_BFARVALID, bfar=address,
                           what=f"bit-band access to unmapped address {address:#010x}")
            self.counter.stop_after_current()

    # -------------------------------------------------------------- forwarding (multi-node mmio_map)
    def forward(self, address: int, size: int, read: Callable[[int, int], int],
                write: Callable[[int, int, int], None]) -> None:
        """Map [address, +size) to callbacks (offset, size[, value]): another node's peripheral."""
        self.uc.mmio_map(address, size, lambda uc, off, n, ud: read(off, n), None,
                         lambda uc, off, n, value, ud: write(off, n, value), None)

    def stall(self, cycles: int) -> None:
        """Inside an access: the current instruction takes `cycles` more (a forwarded read waited
        for the other node); the slice ends after it."""
        self._stalled += max(0, cycles)
        self.counter.stop_after_current()

    def bus_read(self, address: int, size: int) -> int:
        """A read of this node's peripheral at `address`, from another node (mmio_map)."""
        for dev in self.devices:
            if dev.base <= address < dev.base + dev.size:
                return int(dev.read(address - dev.base, size))
        return 0

    def bus_write(self, address: int, size: int, value: int) -> None:
        for dev in self.devices:
            if dev.base <= address < dev.base + dev.size:
                dev.write(address - dev.base, size, value)
                return

    def device(self, ident: str) -> Device:
        for dev in self.devices:
            if dev.id == ident:
                return dev
        raise KeyError(ident)

    def console_uart(self) -> Uart | None:
        con = next((p.id for p in self.node.peripherals if p.console), None)
        dev = self.device(con) if con else None
        return dev if isinstance(dev, Uart) else None

    # ------------------------------------------------------------------------------- image, reset
    def program(self, image: FirmwareImage | None) -> None:
        """Load a firmware image where QEMU's loader would put it (none: memory stays empty), then
        reset into it. Its code ranges are kept for the divide-by-zero trap."""
        self._image, self._exec_ranges = load_image(image) if image is not None else ([], [])
        self.reset()
        self._hook_unmask_points()  # in the image reset() put into memory
        self._hook_control_reads()

    def reset(self) -> None:
        """A system reset: reload the image, reset peripherals and the core; virtual time goes on."""
        for addr, data in self._image:
            self.uc.mem_write(addr, data)
        self.uc.ctl_flush_tb()
        self.nvic.reset()
        self.exc.reset()
        self.systick.reset()
        for dev in self.devices:
            dev.reset()
        self._set_div_trap(False)
        self._set_mask_watch(False)
        self._sleeping = False
        uc = self.uc
        uc.reg_write(UC_ARM_REG_XPSR, 1 << 24)
        uc.reg_write(UC_ARM_REG_CONTROL, 0)
        for reg in (armv7m.UC_ARM_REG_PRIMASK, armv7m.UC_ARM_REG_BASEPRI, armv7m.UC_ARM_REG_FAULTMASK):
            uc.reg_write(reg, 0)
        try:
            sp, pc = struct.unpack("<II", uc.mem_read(0, 8))
        except UcError:
            sp, pc = 0, 0
        uc.reg_write(UC_ARM_REG_MSP, sp & ~3)
        uc.reg_write(UC_ARM_REG_PSP, 0)
        uc.reg_write(UC_ARM_REG_PC, pc | 1)
        self.exc.invstate = not pc & 1  # a reset vector without the Thumb bit faults at once
        self.reschedule()

    def request_reset(self, why: str) -> None:
        self._reset_request = why
        self._attention()

    # ------------------------------------------------------------------------------- time
    def now(self) -> int:
        """Current virtual time in cycles, exact also inside an MMIO access mid-slice."""
        if self._in_emu:
            return self.cycles + self.counter.in_hook() + self._stalled
        return self.cycles

    def current_instructions(self) -> int:
        """Instructions executed so far, exact also inside an MMIO access mid-slice."""
        if self._in_emu:
            return self.instructions + self.counter.in_hook()
        return self.instructions

    def time_ns(self) -> int:
        return self.cycles * 1_000_000_000 // self.frequency

    def reschedule(self) -> None:
        """A device's next event may have moved: end the slice after this instruction to re-plan."""
        self._attention()

    def _attention(self) -> None:
        if self._in_emu:
            self.counter.stop_after_current()

    attention = _attention  # the exception unit's way to end the slice after the current instruction

    def next_event(self) -> int | None:
        best = self.systick.next_event()
        for dev in self._timed:
            e = dev.next_event()
            if e is not None and (best is None or e < best):
                best = e
        return best

    def _advance(self) -> None:
        now = self.cycles
        self.systick.advance(now)
        for dev in self._timed:
            dev.advance(now)

    def set_irq(self, line: int, level: bool) -> None:
        self.nvic.set_level(line, level)

    # ------------------------------------------------------------------------------- hooks
    def _on_intr(self, uc: Uc, intno: int, ud: Any) -> None:
        try:
            if intno == EXCP_EXCEPTION_EXIT:
                self.exc.exception_return(self._read_pc() | 1)
                if True not in self.nvic.pending:
                    return  # nothing waits that the lower priority now lets in: the slice goes on
            elif intno == EXCP_SWI:
                self.nvic.pending[armv7m.SVCALL] = True
                if self.exc.preempting() != armv7m.SVCALL:
                    # An SVC that cannot be taken now (masked or too low priority) escalates.
                    self.nvic.pending[armv7m.SVCALL] = False
                    self.exc.faults.hfsr |= armv7m.HFSR_FORCED
                    self.exc.fault(armv7m.HARDFAULT, what="SVC executed at a priority that blocks SVCall")
                self.exc.take(self.exc.preempting() or armv7m.HARDFAULT)
            elif intno == EXCP_BKPT:
                pc = uc.reg_read(UC_ARM_REG_PC)
                if self.on_semihost is not None and uc.mem_read(pc, 2) == b"\xab\xbe":  # BKPT 0xAB
                    if self._stop is not None:  # re-raised until emu_stop takes effect: served once
                        uc.emu_stop()
                        return
                    result = self.on_semihost(uc.reg_read(UC_ARM_REG_R0), uc.reg_read(UC_ARM_REG_R0 + 1))
                    if result is not None:
                        uc.reg_write(UC_ARM_REG_R0, result & 0xFFFFFFFF)
                        uc.reg_write(UC_ARM_REG_PC, (pc + 2) | 1)  # on past the BKPT, as a debugger would
                        return
                    self._stop = Stop("exit", pc)
                    self.counter.stop_before = True
                    uc.emu_stop()
                    return
                if not self.debugger:
                    # Halting debug is off with no debugger attached: the debug event goes to the
                    # DebugMonitor if DEMCR.MON_EN lets it preempt, else it escalates to HardFault
                    # (HFSR.DEBUGEVT); DFSR.BKPT records it (ARMv7-M C1.6). QEMU 7.2 makes it a
                    # forced HardFault (tests/test_conformance.py). It used to halt the engine silently.
                    exc = self.exc
                    exc.faults.dfsr |= armv7m.DFSR_BKPT
                    uc.reg_write(UC_ARM_REG_PC, pc | 1)  # the handler returns to the BKPT itself
                    monitor = armv7m.DEBUGMON
                    if exc.demcr & (1 << 16) and \
                            self.nvic.group(self.nvic.priority[monitor]) < exc.execution_priority():
                        self.nvic.pending[monitor] = True
                        exc.take(monitor)
                    else:
                        exc.faults.hfsr |= armv7m.HFSR_DEBUGEVT
                        exc.fault(armv7m.HARDFAULT, what=f"BKPT #{uc.mem_read(pc, 1)[0]} with no debugger attached")
                        exc.take(exc.preempting() or armv7m.HARDFAULT)
                    self.counter.stop_after_current()
                    return
                self._stop = Stop("bkpt", pc)
                self.counter.stop_before = True
                uc.emu_stop()
                return
            elif intno in (EXCP_UDEF, EXCP_NOCP, EXCP_INVSTATE):
                bits = {EXCP_UDEF: armv7m.CFSR_UNDEFINSTR, EXCP_NOCP: armv7m.CFSR_NOCP,
                        EXCP_INVSTATE: armv7m.CFSR_INVSTATE}[intno]
                what = {EXCP_UDEF: "undefined instruction", EXCP_NOCP: "coprocessor (FPU) instruction, no FPU",
                        EXCP_INVSTATE: "invalid state (branch to an ARM-state address)"}[intno]
                self.exc.fault(armv7m.USAGEFAULT, bits, what=what)
                self.exc.take(self.exc.preempting() or armv7m.HARDFAULT)
            elif intno == EXCP_PREFETCH_ABORT:  # a fetch the CPU refuses (e.g. a branch into 0xFFFFFFxx in thread mode)
                self._fetch_fault(self._read_pc())
                self.exc.take(self.exc.preempting() or armv7m.HARDFAULT)
            else:
                self._stop = Stop("lockup", uc.reg_read(UC_ARM_REG_PC), {"message": f"unexpected CPU exception {intno}"})
                uc.emu_stop()
                return
        except armv7m.Lockup as err:
            self._stop = Stop("lockup", uc.reg_read(UC_ARM_REG_PC), {"message": str(err)})
            uc.emu_stop()
            return
        self.counter.stop_after_current()  # re-plan: the handler may have changed timers or masks

    def _on_invalid(self, uc: Uc, access: int, address: int, size: int, value: int, ud: Any) -> bool:
        self._fault_access = (access, address)
        self.counter.stop_before = True
        return False

    def _on_breakpoint(self, uc: Uc, address: int, size: int, ud: Any) -> None:
        if self.collect_hits is not None:
            self.collect_hits.append((self.instructions + self.counter.in_hook(), address))
            return
        if self._skip_bp == address:
            self._skip_bp = None
            return
        self._stop = Stop("breakpoint", address)
        self.counter.stop_before = True
        uc.emu_stop()

    def _on_watch(self, uc: Uc, access: int, address: int, size: int, value: int, ud: Any) -> None:
        kind = "watch" if access == UC_MEM_WRITE else "rwatch"
        if self.collect_hits is not None:
            self.collect_hits.append((self.instructions + self.counter.in_hook() + 1, -address))
            return
        if self._stop is None:
            self._stop = Stop("watchpoint", uc.reg_read(UC_ARM_REG_PC), {"kind": kind, "address": address})
        self.counter.stop_after_current()

    def _on_mask_watch(self, uc: Uc, address: int, size: int, ud: Any) -> None:
        if self.exc.preempting() is not None:
            self.counter.stop_before = True
            uc.emu_stop()

    def _on_unmask_point(self, address: int, size: int) -> None:
        # An exception waits behind the masks and that instruction let it through: stop before the
        # block's first instruction (in a block hook the limit falls there), where it is taken.
        if self._watching and self.exc.preempting() is not None:
            self.counter.stop_after_current()

    def _on_divide(self, uc: Uc, address: int, size: int, ud: Any) -> None:
        hw2 = struct.unpack("<H", uc.mem_read(address + 2, 2))[0]
        rm = hw2 & 0xF
        if rm <= 12 and uc.reg_read(armv7m.UC_ARM_REG_R0 + rm) == 0:  # R0..R12 ids are consecutive
            self.counter.stop_before = True
            self._div_fault = True
            uc.emu_stop()

    # ------------------------------------------------------------------------------- hook management
    def _hook_unmask_points(self) -> None:
        """A block hook after every instruction of the image that can unmask a pending exception
        (_UNMASK): MSR to a mask and CPSIE end their translated block, so the instruction after one
        starts a block, and the hook there sees each such instruction done. While an exception waits
        behind the masks it ends the slice before that instruction, so the exception is taken right
        after the unmasking, as on hardware; otherwise it returns at once. Block hooks cost nothing
        where they are not (a code hook anywhere slows all code by about a third), so they stay on."""
        for h in self._unmask_hooks:
            h.remove()
        self._unmask_hooks = []
        for lo, hi in self._exec_ranges:
            for m in _UNMASK.finditer(bytes(self.uc.mem_read(lo, hi - lo))):
                if m.start() % 2 == 0:
                    after = lo + m.end()
                    self._unmask_hooks.append(BlockHook(self.uc, self._on_unmask_point, after, after))
        self.uc.ctl_flush_tb()

    def _hook_control_reads(self) -> None:
        """With the FPU: around every MRS of CONTROL in the image, hide the v8-M SFPA bit Unicorn
        keeps beside FPCA (armv7m.CONTROL_SFPA): cleared just before the MRS, set again (with
        FPCA) before the next instruction. A code hook on those two addresses only: MRS CONTROL
        is rare (context switches, CMSIS __get_CONTROL); nothing else pays."""
        for h in self._control_hooks:
            self.uc.hook_del(h)
        self._control_hooks = []
        if self.exc.fpu is None:
            return
        for lo, hi in self._exec_ranges:
            for m in _MRS_CONTROL.finditer(bytes(self.uc.mem_read(lo, hi - lo))):
                if m.start() % 2 == 0:
                    at = lo + m.start()
                    self._control_hooks.append(self.uc.hook_add(UC_HOOK_CODE, self._before_mrs_control, begin=at,
                                                                end=at))
                    self._control_hooks.append(self.uc.hook_add(UC_HOOK_CODE, self._after_mrs_control,
                                                                begin=at + 4, end=at + 4))
        self.uc.ctl_flush_tb()

    def _before_mrs_control(self, uc: Uc, address: int, size: int, ud: Any) -> None:
        regs = self.exc.regs
        control = regs.read(UC_ARM_REG_CONTROL)
        if control & armv7m.CONTROL_SFPA:
            regs.write(UC_ARM_REG_CONTROL, control & ~armv7m.CONTROL_SFPA)

    def _after_mrs_control(self, uc: Uc, address: int, size: int, ud: Any) -> None:
        # Unicorn starts a new FP context (FPSCR from FPDSCR) at an FP instruction while SFPA is
        # clear and FPCA set: the two go together again.
        regs = self.exc.regs
        control = regs.read(UC_ARM_REG_CONTROL)
        if control & armv7m.CONTROL_FPCA and not control & armv7m.CONTROL_SFPA:
            regs.write(UC_ARM_REG_CONTROL, control | armv7m.CONTROL_SFPA)

    def _set_mask_watch(self, on: bool) -> None:
        """Watch for the masks to drop while an exception is pending behind them: the unmask-point
        hooks do, for code of the image; code anywhere else (copied to RAM, say) is watched
        instruction by instruction, as the hooks cannot know it."""
        self._watching = on
        outside = on and not any(lo <= self.pc() < hi for lo, hi in self._exec_ranges)
        if outside and self._mask_hook is None:
            self._mask_hook = self.uc.hook_add(UC_HOOK_CODE, self._on_mask_watch, begin=1, end=0)
            self.uc.ctl_flush_tb()
        elif not outside and self._mask_hook is not None:
            self.uc.hook_del(self._mask_hook)
            self._mask_hook = None
            self.uc.ctl_flush_tb()

    def ccr_changed(self) -> None:
        self._set_div_trap(bool(self.exc.ccr & 0x10))

    def _set_div_trap(self, on: bool) -> None:
        # Unicorn ignores CCR.DIV_0_TRP (it lives in CPU state the API cannot reach), so while the
        # firmware asks for the trap, every SDIV/UDIV in its executable image gets a hook that
        # raises the UsageFault itself when the divisor is zero.
        if on and not self._div_hooks:
            for lo, hi in self._exec_ranges:
                data = self.uc.mem_read(lo, hi - lo)
                for m in _DIV.finditer(bytes(data)):
                    if m.start() % 2 == 0:
                        addr = lo + m.start()
                        self._div_hooks[addr] = self.uc.hook_add(UC_HOOK_CODE, self._on_divide, begin=addr, end=addr)
            self.uc.ctl_flush_tb()
        elif not on and self._div_hooks:
            for h in self._div_hooks.values():
                self.uc.hook_del(h)
            self._div_hooks.clear()
            self.uc.ctl_flush_tb()

    def add_breakpoint(self, addr: int) -> None:
        addr &= ~1
        if addr not in self.breakpoints:
            self.breakpoints[addr] = self.uc.hook_add(UC_HOOK_CODE, self._on_breakpoint, begin=addr, end=addr)
            self.uc.ctl_remove_cache(addr, addr + 4)

    def remove_breakpoint(self, addr: int) -> bool:
        h = self.breakpoints.pop(addr & ~1, None)
        if h is None:
            return False
        self.uc.hook_del(h)
        self.uc.ctl_remove_cache(addr & ~1, (addr & ~1) + 4)
        return True

    def add_watchpoint(self, kind: str, addr: int, length: int) -> None:
        key = (kind, addr, length)
        if key in self.watchpoints:
            return
        types = {"watch": UC_HOOK_MEM_WRITE, "rwatch": UC_HOOK_MEM_READ,
                 "awatch": UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE}[kind]
        self.watchpoints[key] = self.uc.hook_add(types, self._on_watch, begin=addr, end=addr + max(length, 1) - 1)
        self.uc.ctl_flush_tb()

    def remove_watchpoint(self, kind: str, addr: int, length: int) -> bool:
        h = self.watchpoints.pop((kind, addr, length), None)
        if h is None:
            return False
        self.uc.hook_del(h)
        self.uc.ctl_flush_tb()
        return True

    # ------------------------------------------------------------------------------- execution
    def _service(self) -> None:
        """At an instruction boundary: reset if asked, take what should preempt, plan mask watching."""
        if self._reset_request:
            self._reset_request = None
            self.reset()
        if self.exc.fpu is not None and self.exc.fpu.sync_due():
            self.exc.fpu.sync()  # an FPCCR or FPDSCR write, for the instructions after it
        watch = False
        for _ in range(8):  # each Thumb-less vector takes another INVSTATE fault; a HardFault one is a lockup
            if self.exc.invstate:
                # Unicorn runs Thumb regardless; the architecture says EPSR.T=0 makes the next
                # instruction an INVSTATE UsageFault, taken before it (the stacked xPSR keeps T=0).
                self.exc.fault(armv7m.USAGEFAULT, armv7m.CFSR_INVSTATE, what="EPSR.T=0 (a vector or return "
                               "address without the Thumb bit)")
            if not any(self.nvic.pending):
                break
            exc = self.exc.preempting()
            if exc is None:
                watch = self.exc.pending_unmasked()
                break
            self.exc.take(exc)  # its vector decides EPSR.T for the handler
            self._sleeping = False
            if not self.exc.invstate:
                watch = self.exc.pending_unmasked() and self.exc.preempting() is None
                break
        self.exc.invstate = False
        if watch != self._watching or self._mask_hook is not None:
            self._set_mask_watch(watch)

    def on_exception(self, exc: int, entering: bool) -> None:
        if entering:
            self.exceptions_taken += 1
            if self.on_taken is not None:
                self.on_taken(exc)
            if exc in armv7m.FAULT_HANDLERS and self.on_fault is not None and self.on_fault(exc):
                # Halt in the handler, before its first instruction (the debugger's fault stop).
                self._fault_halt = True
                if self._in_emu:
                    self.counter.stop_before = True
                    self.uc.emu_stop()

    @property
    def sleeping(self) -> bool:
        return self._sleeping

    def pc(self) -> int:
        return self._read_pc() & ~1

    def _read_pc(self) -> int:
        # Unicorn's Python reg_read picks a register class per call (~1.5 us); the C call is ~0.5 us,
        # and run() reads the PC two or three times: at 1k-instruction lockstep quanta that matters.
        if _uc_reg_read is None:
            return int(self.uc.reg_read(UC_ARM_REG_PC))
        _uc_reg_read(self.uc._uch, UC_ARM_REG_PC, self._pc_ref)
        return self._pc_value.value

    def run(self, budget: int, idle_to_end: bool = False) -> Stop:
        """Run up to `budget` cycles. Returns early at a breakpoint/watchpoint/BKPT, a lockup, or
        (unless idle_to_end) when the CPU sleeps with nothing scheduled to wake it ("idle")."""
        end = self.cycles + budget
        if self._skip_bp is None and self.collect_hits is None and self.breakpoints and self.pc() in self.breakpoints:
            self._skip_bp = self.pc()  # resuming from this breakpoint: do not report it again at once
        try:
            while self.cycles < end:
                self._service()
                if self._fault_halt:
                    self._fault_halt = False
                    return Stop("fault", self.pc())
                nxt = self.next_event()
                if self._sleeping:
                    if self.exc.pending_unmasked():
                        self._sleeping = False
                        continue
                    if nxt is None or nxt > end:
                        if nxt is None and not idle_to_end:
                            return Stop("idle", self.pc())
                        self.cycles = end
                        self._advance()
                        break
                    self.cycles = nxt
                    self._advance()
                    continue
                limit = end if nxt is None else max(min(end, nxt), self.cycles)
                if limit == self.cycles:
                    self._advance()
                    if self.next_event() == nxt and nxt == self.cycles:
                        raise RuntimeError(f"device event at {nxt} did not advance")  # would spin
                    continue
                stop = self._slice(limit - self.cycles)
                if stop is not None:
                    return stop
        except armv7m.Lockup as err:
            return Stop("lockup", self.pc(), {"message": str(err)})
        finally:
            self._skip_bp = None
        return Stop("budget", self.pc())

    def _slice(self, n: int) -> Stop | None:
        uc = self.uc
        self._stop = None
        self._fault_access = None
        self._div_fault = False
        self.counter.begin()
        error: UcError | None = None
        self._in_emu = True
        try:
            uc.emu_start(self._read_pc() | 1, 0xFFFFFFFF, count=n)
        except UcError as err:
            error = err
        finally:
            self._in_emu = False
        executed = self.counter.executed()
        self.cycles += executed + self._stalled
        self._stalled = 0
        self.instructions += executed
        if executed and self._skip_bp is not None:
            self._skip_bp = None
        self._advance()
        stop = self._stop
        if error is not None:
            self._fault_from(error)
        elif self._div_fault:
            self.exc.fault(armv7m.USAGEFAULT, armv7m.CFSR_DIVBYZERO, what="integer divide by zero")
        elif stop is None and executed < n and self._fault_access is None and not self.counter.stop_before \
                and not self.counter.overshot():
            self._sleeping = not self.exc.pending_unmasked()  # WFI/WFE
        if stop is not None and stop.reason in ("breakpoint", "watchpoint", "bkpt", "lockup", "exit"):
            stop.pc = self.pc() if stop.reason != "breakpoint" else stop.pc
            return stop
        if self._fault_halt:
            self._fault_halt = False
            return Stop("fault", self.pc())
        return None

    def _fault_from(self, error: UcError) -> None:
        access, address = self._fault_access or (None, None)
        if access in (UC_MEM_FETCH_UNMAPPED, UC_MEM_FETCH_PROT):
            self._fetch_fault(address)
        elif access is not None:
            verb = "write to" if access in (UC_MEM_WRITE_UNMAPPED, UC_MEM_WRITE_PROT) else "read from"
            kind = "read-only" if access in (UC_MEM_WRITE_PROT,) else "unmapped"
            self.exc.fault(armv7m.BUSFAULT, armv7m.CFSR_PRECISERR | armv7m.CFSR_BFARVALID, bfar=address,
                           what=f"{verb} {kind} address {address:#010x}")
        elif self._after_wfe():
            pass  # Unicorn stops after a WFE; the architecture lets it wake at once (a NOP), as QEMU runs it
        else:
            self.exc.fault(armv7m.USAGEFAULT, armv7m.CFSR_UNDEFINSTR, what=f"CPU error: {error}")

    def _after_wfe(self) -> bool:
        """The instruction before the PC is a WFE (or WFE.W): Unicorn ended the slice there."""
        pc = self._read_pc()
        try:
            return bytes(self.uc.mem_read(pc - 2, 2)) == b"\x20\xbf" or bytes(self.uc.mem_read(pc - 4, 4)) == \
                b"\xaf\xf3\x02\x80"
        except UcError:
            return False

    def _fetch_fault(self, address: int) -> None:
        """An instruction fetch that fails: from an execute-never region of the default memory map
        (peripherals 0x40000000-0x5FFFFFFF, devices 0xA0000000-0xDFFFFFFF, the system region from
        0xE0000000) a MemManage IACCVIOL, as QEMU raises it; from unmapped memory a BusFault IBUSERR."""
        xn = 0x40000000 <= address < 0x60000000 or address >= 0xA0000000
        if xn:
            self.exc.fault(armv7m.MEMMANAGE, armv7m.CFSR_IACCVIOL, what=f"instruction fetch from {address:#010x} "
                           "(execute-never)")
        else:
            self.exc.fault(armv7m.BUSFAULT, armv7m.CFSR_IBUSERR, what=f"instruction fetch from {address:#010x}")

    # ------------------------------------------------------------------------------- snapshots
    def _memory(self) -> list[MemoryRegion]:
        """The node's memory once (a mirror is the memory of the region it mirrors)."""
        return [r for r in self.node.memory if not r.mirror_of]

    def save_state(self) -> tuple[dict[str, Any], bytes]:
        """Everything that determines what runs next: CPU registers, every memory region, NVIC/SCB/
        SysTick, each device's `save()`, and the clocks. Returns (JSON-able state, memory image)."""
        uc = self.uc
        regs = {name: uc.reg_read(reg) for name, reg in REGISTERS}
        memory = b"".join(bytes(uc.mem_read(r.address, r.size)) for r in self._memory())
        nvic = self.nvic
        f = self.exc.faults
        st = self.systick
        state = {
            "regs": regs, "cycles": self.cycles, "instructions": self.instructions,
            "exceptions_taken": self.exceptions_taken, "sleeping": self._sleeping,
            "nvic": {"enabled": nvic.enabled, "pending": nvic.pending, "active": nvic.active,
                     "priority": nvic.priority, "level": nvic.level, "prigroup": nvic.prigroup, "shcsr": nvic.shcsr},
            "scb": {"vtor": self.exc.vtor, "ccr": self.exc.ccr, "cfsr": f.cfsr, "hfsr": f.hfsr, "bfar": f.bfar,
                    "dfsr": f.dfsr, "demcr": self.exc.demcr,
                    "mmfar": f.mmfar, "invstate": self.exc.invstate, "scr": self.scs.scr},
            "systick": {"csr": st.csr, "rvr": st.rvr, "value": st.value, "next_zero": st.next_zero, "top": st.top},
            "devices": {d.id: d.save() for d in self.devices},
            "memory": [[r.address, r.size] for r in self._memory()],
        }
        if self.exc.fpu is not None:
            state["fpu"] = self.exc.fpu.state()
        return state, memory

    def load_state(self, state: dict[str, Any], memory: bytes) -> None:
        """Restore what save_state() returned (same board: the memory layout must match)."""
        layout = [[r.address, r.size] for r in self._memory()]
        if state["memory"] != layout or len(memory) != sum(r.size for r in self._memory()):
            raise ValueError(f"the snapshot's memory layout {state['memory']} is not this board's {layout}")
        uc = self.uc
        offset = 0
        for r in self._memory():
            uc.mem_write(r.address, memory[offset:offset + r.size])
            offset += r.size
        uc.ctl_flush_tb()
        regs = state["regs"]
        # Mode first (IPSR, then CONTROL.SPSEL), then the banked stack pointers, then the rest.
        for name in ("xpsr", "control", "msp", "psp"):
            uc.reg_write(dict(REGISTERS)[name], regs[name])
        for name, reg in REGISTERS:
            if name not in ("xpsr", "control", "msp", "psp", "sp"):
                uc.reg_write(reg, regs[name] | (1 if name == "pc" else 0))
        self.cycles, self.instructions = state["cycles"], state["instructions"]
        self.exceptions_taken, self._sleeping = state["exceptions_taken"], state["sleeping"]
        nvic = self.nvic
        for key in ("enabled", "pending", "active", "priority", "level", "prigroup", "shcsr"):
            setattr(nvic, key, state["nvic"][key])
        scb = state["scb"]
        self.exc.vtor, self.exc.ccr, self.exc.invstate, self.scs.scr = scb["vtor"], scb["ccr"], scb["invstate"], scb["scr"]
        f = self.exc.faults
        f.cfsr, f.hfsr, f.bfar, f.mmfar = scb["cfsr"], scb["hfsr"], scb["bfar"], scb["mmfar"]
        f.dfsr, self.exc.demcr = scb.get("dfsr", 0), scb.get("demcr", 0)
        st = self.systick
        st.csr, st.rvr, st.value, st.next_zero = (state["systick"][k] for k in ("csr", "rvr", "value", "next_zero"))
        st.top = state["systick"].get("top", st.rvr)
        for dev in self.devices:
            dev.load(state["devices"][dev.id])
        if self.exc.fpu is not None and "fpu" in state:
            self.exc.fpu.load(state["fpu"])
        self._set_div_trap(False)
        self.ccr_changed()
        self._set_mask_watch(False)
        self._reset_request = None

    # ------------------------------------------------------------------------------- state
    def stats(self) -> dict[str, Any]:
        return {"cycles": self.cycles, "instructions": self.instructions, "time_ns": self.time_ns(),
                "exceptions_taken": self.exceptions_taken, "sleeping": self._sleeping,
                "pending": self.nvic.pending_ids(),
                "faults": list(self.exc.faults.log[-10:]),
                "devices": {d.id: d.state() for d in self.devices},
                "unmodelled": [{"address": a, "range": n, "access": k}
                               for a, (n, k) in list(self.unmodelled_seen.items())[:MAX_UNMODELLED_REPORTED]]}
