"""virsim's QEMU TCG plugins: built from the C sources here on first use, cached per QEMU binary.

`vprobe.c`, loaded into every single-node QEMU session, answers QMP x-virsim-clock (QEMU's virtual
clock) and records the firmware's faults in the session's fault table (virsim.backends.faults).
`vsync.c` holds a QEMU node of a multi-node board to the lockstep barrier (virsim.sync; the file
says how). `vcov.c` is coverage:

`vcov.c` counts executed blocks into a table in a file the daemon maps too (`CoverageMap`):

    header (64 bytes): magic "VCOV0001", capacity, used, overflow (uint64 each), 4 reserved
    entries (24 bytes each): vaddr uint64, size uint32, insns uint32, count uint64

Debian's QEMU 7.2 loads plugins (`-plugin`) but ships none and no `qemu-plugin.h`; vcov.c declares
the few API functions it uses itself, so a C compiler is all a build needs. The built `.so` goes
to the user cache dir, named by a hash of the source and the QEMU version, so an upgrade of either
rebuilds it. `virsim doctor` reports whether the build works.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil
import struct
import subprocess
from pathlib import Path

from platformdirs import user_cache_dir

from virsim.errors import EmulatorError, EmulatorMissing

SOURCE_DIR = Path(__file__).resolve().parent
COMPILER_HINT = "sudo apt-get install -y gcc"
HEADER = struct.Struct("<8sQQQ32x")
ENTRY = struct.Struct("<QIIQ")
MAGIC = b"VCOV0001"
DEFAULT_CAPACITY = 1 << 18  # 262,144 translated blocks (6 MiB file, sparse until used)


def compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def cache_dir() -> Path:
    return Path(os.environ.get("VIRSIM_CACHE") or user_cache_dir("virsim")) / "qemu-plugins"


def build(name: str, qemu_version: str) -> Path:
    """The path of plugin `name` built for this QEMU; compiled now if not cached."""
    source = SOURCE_DIR / f"{name}.c"
    headers = b"".join(h.read_bytes() for h in sorted(SOURCE_DIR.glob("*.h")))  # included by every plugin
    digest = hashlib.sha256(source.read_bytes() + headers + qemu_version.encode()).hexdigest()[:16]
    out = cache_dir() / f"{name}-{digest}.so"
    if out.exists():
        return out
    cc = compiler()
    if cc is None:
        raise EmulatorMissing(f"building QEMU's {name} plugin needs a C compiler: {COMPILER_HINT}",
                              binary="cc", install=COMPILER_HINT)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    result = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(tmp), str(source)],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise EmulatorError(f"building QEMU plugin {source.name} failed: {result.stderr.strip()[-800:]}",
                            command=f"{cc} -shared -fPIC {source}")
    tmp.replace(out)  # atomic: a concurrent build by another session cannot leave half a file
    return out


class CoverageMap:
    """The daemon's side of vcov's table."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def create(self, capacity: int = DEFAULT_CAPACITY) -> None:
        with self.path.open("wb") as f:
            f.write(HEADER.pack(MAGIC, capacity, 0, 0))
            f.truncate(HEADER.size + capacity * ENTRY.size)

    def _map(self, write: bool = False) -> mmap.mmap:
        with self.path.open("r+b" if write else "rb") as f:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE if write else mmap.ACCESS_READ)

    def blocks(self) -> tuple[list[tuple[int, int, int]], int]:
        """(start, size, count) of every block translated so far, and how many did not fit."""
        m = self._map()
        try:
            magic, capacity, used, overflow = HEADER.unpack_from(m, 0)
            if magic != MAGIC:
                raise EmulatorError(f"{self.path} is not a vcov table")
            out = []
            for i in range(min(used, capacity)):
                vaddr, size, _insns, count = ENTRY.unpack_from(m, HEADER.size + i * ENTRY.size)
                if size:
                    out.append((vaddr, size, count))
            return out, overflow
        finally:
            m.close()

    def reset(self) -> None:
        """Zero every count (the blocks stay: QEMU does not translate them again)."""
        m = self._map(write=True)
        try:
            _, capacity, used, _ = HEADER.unpack_from(m, 0)
            zero = bytes(8)
            for i in range(min(used, capacity)):
                at = HEADER.size + i * ENTRY.size + 16
                m[at:at + 8] = zero
        finally:
            m.close()
