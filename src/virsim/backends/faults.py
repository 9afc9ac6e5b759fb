"""The fault table: where an emulator records the Cortex-M faults its firmware takes.

Both backends write the same file, so the daemon has one reader: the built-in engine from Python
(at its exception entry), QEMU from its vprobe plugin (at the first instruction of a fault
handler). The file lives in the session's runtime dir and is created by the instance before the
emulator starts:

    header (64 bytes): magic "VFAULT01", count uint64 (records ever written), halt uint32 (stop the
                       CPU at the next fault: virsim's debugger is attached), capacity uint32,
                       taken uint64 (exception entries ever written), taken_capacity uint32, 28 reserved
    records (80 bytes each, a ring of `capacity`): exception, flags (1 frame read, 2 frame on the
                       process stack, 4 status registers read), virtual_ns uint64, instructions uint64,
                       handler, sp, lr (EXC_RETURN), xpsr, cfsr, hfsr, mmfar, bfar, stacked pc, lr,
                       xpsr, r0 (uint32 each), 8 reserved
    entries (40 bytes each, a ring of `taken_capacity` after the records): every exception the CPU
                       took, faults or not: exception, flags (1 frame read, 8 clock not exact),
                       virtual_ns uint64,
                       instructions uint64, handler, sp, lr (EXC_RETURN), stacked pc (where it returns)

A writer fills the record at `count % capacity` (an entry at `taken % taken_capacity`), then
publishes it by incrementing the count. A table whose taken_capacity is 0 (an older writer) has no
entries.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"VFAULT01"
HEADER = struct.Struct("<8sQIIQI28x")
RECORD = struct.Struct("<IIQQ12I8x")
ENTRY = struct.Struct("<IIQQ4I")
_COUNT = struct.Struct("<Q")
CAPACITY = 64
TAKEN_CAPACITY = 256  # the last exceptions taken, whatever they were (`session exceptions`)
FLAG_FRAME, FLAG_PSP, FLAG_STATUS, FLAG_CLOCK_EARLY = 1, 2, 4, 8
FAULT_EXCEPTIONS = {3: "HardFault", 4: "MemManage", 5: "BusFault", 6: "UsageFault"}


@dataclass(frozen=True)
class FaultRecord:
    exception: int
    flags: int
    virtual_ns: int
    instructions: int
    handler: int
    sp: int
    lr: int
    xpsr: int
    cfsr: int
    hfsr: int
    mmfar: int
    bfar: int
    stacked_pc: int
    stacked_lr: int
    stacked_xpsr: int
    stacked_r0: int

    @property
    def name(self) -> str:
        return FAULT_EXCEPTIONS.get(self.exception, f"exception {self.exception}")

    @property
    def frame_read(self) -> bool:
        return bool(self.flags & FLAG_FRAME)

    @property
    def on_process_stack(self) -> bool:
        return bool(self.flags & FLAG_PSP)


@dataclass(frozen=True)
class ExceptionEntry:
    """One exception the CPU took (an entry of the table's second ring)."""
    exception: int
    flags: int
    virtual_ns: int
    instructions: int
    handler: int
    sp: int
    lr: int
    return_pc: int  # the stacked pc: where the interrupted code goes on (0 unless frame_read)

    @property
    def frame_read(self) -> bool:
        return bool(self.flags & FLAG_FRAME)

    @property
    def clock_early(self) -> bool:
        """The clock fields are not exact (QEMU's count at the start of the vCPU's icount budget)."""
        return bool(self.flags & FLAG_CLOCK_EARLY)


class FaultTable:
    """One session's table, mapped (the daemon reads it, the built-in engine writes it)."""

    def __init__(self, path: Path, m: mmap.mmap) -> None:
        self.path = path
        self.map = m
        self._ring: tuple[int, int, int] | None = None  # record_taken's (offset, capacity, count)

    @classmethod
    def create(cls, path: Path, capacity: int = CAPACITY, taken_capacity: int = TAKEN_CAPACITY) -> FaultTable:
        """A fresh, empty table at `path` (replacing any older one), mapped."""
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            f.write(HEADER.pack(MAGIC, 0, 0, capacity, 0, taken_capacity))
            f.truncate(HEADER.size + capacity * RECORD.size + taken_capacity * ENTRY.size)
        os.replace(tmp, path)
        return cls.open(path)

    @classmethod
    def open(cls, path: Path) -> FaultTable:
        with path.open("r+b") as f:
            m = mmap.mmap(f.fileno(), 0)
        if m[:8] != MAGIC:
            m.close()
            raise ValueError(f"{path} is not a fault table")
        return cls(path, m)

    def close(self) -> None:
        self.map.close()

    @property
    def count(self) -> int:
        return int(HEADER.unpack_from(self.map, 0)[1])

    @property
    def capacity(self) -> int:
        return int(HEADER.unpack_from(self.map, 0)[3])

    def set_halt(self, on: bool) -> None:
        struct.pack_into("<I", self.map, 16, 1 if on else 0)

    @property
    def halt(self) -> bool:
        return bool(struct.unpack_from("<I", self.map, 16)[0])

    def since(self, seen: int) -> tuple[list[FaultRecord], int]:
        """The records written after the first `seen` (at most the ring's worth), and the new count."""
        total, cap = self.count, self.capacity
        first = max(seen, total - cap)
        out = [FaultRecord(*RECORD.unpack_from(self.map, HEADER.size + (i % cap) * RECORD.size))
               for i in range(first, total)]
        return out, total

    def append(self, record: FaultRecord) -> None:
        """Write a record (the built-in engine's side; QEMU's plugin does the same in C)."""
        total, cap = self.count, self.capacity
        RECORD.pack_into(self.map, HEADER.size + (total % cap) * RECORD.size, *(
            getattr(record, f) for f in FaultRecord.__dataclass_fields__))
        struct.pack_into("<Q", self.map, 8, total + 1)

    # ------------------------------------------------------------------ every exception taken
    @property
    def taken(self) -> int:
        return int(HEADER.unpack_from(self.map, 0)[4])

    def _entries_at(self) -> tuple[int, int]:
        """(offset of the entries ring, its capacity); capacity 0 if the table has none."""
        cap = int(HEADER.unpack_from(self.map, 0)[5])
        at = HEADER.size + self.capacity * RECORD.size
        return at, cap if len(self.map) >= at + cap * ENTRY.size else 0

    def last_taken(self, n: int) -> list[ExceptionEntry]:
        """The last `n` exceptions taken (at most the ring's worth), oldest first."""
        at, cap = self._entries_at()
        total = self.taken
        if cap == 0:
            return []
        first = max(0, total - min(n, cap))
        return [ExceptionEntry(*ENTRY.unpack_from(self.map, at + (i % cap) * ENTRY.size)) for i in range(first, total)]

    def append_taken(self, entry: ExceptionEntry) -> None:
        """Write an entry (the built-in engine's side; QEMU's plugin does the same in C)."""
        self.record_taken(entry.exception, entry.flags, entry.virtual_ns, entry.instructions, entry.handler, entry.sp,
                          entry.lr, entry.return_pc)

    def record_taken(self, *fields: int) -> None:
        """append_taken's fields without the entry object: the engine calls it at every exception
        entry, so the ring's place and the count are kept here (the engine is the only writer)."""
        if self._ring is None:
            at, cap = self._entries_at()
            self._ring = (at, cap, self.taken)
        at, cap, total = self._ring
        if cap == 0:
            return
        ENTRY.pack_into(self.map, at + (total % cap) * ENTRY.size, *fields)
        _COUNT.pack_into(self.map, 24, total + 1)
        self._ring = (at, cap, total + 1)
