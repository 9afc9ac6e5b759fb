"""Firmware images: detect the format (ELF, Intel hex, raw binary) and check one fits a board node.

The check happens before any emulator starts, so a wrong image is a clear FIRMWARE_INVALID error
naming the file and what is wrong (architecture, a segment outside the board's memory, a missing
load address) instead of an emulator that silently runs nothing.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from virsim import limits
from virsim.errors import FirmwareError

if TYPE_CHECKING:
    from virsim.board import MemoryRegion, Node

# ELF e_machine names as pyelftools reports them -> virsim's names (board.PROCESSORS).
_ELF_MACHINES = {"EM_ARM": "ARM", "EM_AARCH64": "AArch64", "EM_RISCV": "RISC-V", "EM_X86_64": "x86-64",
                 "EM_386": "x86", "EM_XTENSA": "Xtensa", "EM_MIPS": "MIPS", "EM_AVR": "AVR"}


@dataclass(frozen=True)
class FirmwareImage:
    path: Path
    format: str  # elf | hex | bin
    size: int
    sha256: str
    entry: int | None
    load_address: int | None
    machine: str | None
    segments: tuple[tuple[int, int], ...]  # (address, size) of memory the image loads into or runs in
    first_word: int | None = None  # initial SP if the image starts with a Cortex-M vector table
    profile: str | None = None  # ARM architecture profile the ELF was built for: m, a or r


def detect_format(data: bytes) -> str:
    if data[:4] == b"\x7fELF":
        return "elf"
    head = data[:64].lstrip()
    if head[:1] == b":" and all(c in b"0123456789abcdefABCDEF:\r\n" for c in data[:4096]):
        return "hex"
    return "bin"


def _read_elf(path: Path) -> tuple[str, int, tuple[tuple[int, int], ...], int | None, str | None]:
    """(machine, entry, memory it occupies, first word of the lowest loaded segment, ARM profile) of an ELF.

    The memory is both where segments load (physical address, file size) and where they run
    (virtual address, memory size: .data and .bss in RAM). The first word is the initial stack
    pointer when the image starts with a Cortex-M vector table.
    """
    try:
        with path.open("rb") as fh:
            elf = ELFFile(fh)
            raw = elf["e_machine"]
            loads = [seg for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD" and seg["p_memsz"] > 0]
            spans = {(int(seg["p_paddr"]), int(seg["p_filesz"])) for seg in loads if seg["p_filesz"] > 0}
            spans |= {(int(seg["p_vaddr"]), int(seg["p_memsz"])) for seg in loads}
            first = min((seg for seg in loads if seg["p_filesz"] >= 4), key=lambda seg: seg["p_paddr"], default=None)
            word0 = int.from_bytes(first.data()[:4], "little") if first is not None else None
            entry = int(elf["e_entry"])
            profile = _arm_profile(elf)
    except ELFError as err:
        raise FirmwareError(f"{path}: not a valid ELF file: {err}", file=str(path)) from err
    return _ELF_MACHINES.get(raw, str(raw).removeprefix("EM_")), entry, tuple(sorted(spans)), word0, profile


def _arm_profile(elf: ELFFile) -> str | None:
    """'m', 'a' or 'r' from the ARM build attributes (Tag_CPU_arch_profile), if the ELF records it."""
    section = elf.get_section_by_name(".ARM.attributes")
    if section is None or not hasattr(section, "iter_subsections"):
        return None
    for sub in section.iter_subsections():
        for subsub in sub.iter_subsubsections():
            for attr in subsub.iter_attributes():
                if attr.tag == "TAG_CPU_ARCH_PROFILE" and attr.value in (0x41, 0x52, 0x4D):
                    return chr(attr.value).lower()
    return None


def _read_hex(path: Path, data: bytes) -> tuple[tuple[int, int], ...]:
    """Intel hex -> contiguous (address, size) runs, with checksums verified."""
    return tuple((a, len(b)) for a, b in _hex_runs(path, data))


def _hex_runs(path: Path, data: bytes) -> list[tuple[int, bytearray]]:
    upper = 0
    runs: list[tuple[int, bytearray]] = []
    for lineno, raw in enumerate(data.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        try:
            rec = bytes.fromhex(line[1:].decode())
        except ValueError as err:
            raise FirmwareError(f"{path}:{lineno}: not an Intel hex record", file=str(path), line=lineno) from err
        if line[:1] != b":" or len(rec) < 5 or len(rec) != rec[0] + 5 or sum(rec) & 0xFF:
            raise FirmwareError(f"{path}:{lineno}: bad Intel hex record (length or checksum)",
                                file=str(path), line=lineno)
        count, offset, kind = rec[0], int.from_bytes(rec[1:3], "big"), rec[3]
        if kind == 0:
            addr = upper + offset
            if runs and runs[-1][0] + len(runs[-1][1]) == addr:
                runs[-1][1].extend(rec[4:4 + count])
            else:
                runs.append((addr, bytearray(rec[4:4 + count])))
        elif kind == 2:
            upper = int.from_bytes(rec[4:6], "big") << 4
        elif kind == 4:
            upper = int.from_bytes(rec[4:6], "big") << 16
        elif kind == 1:
            break
    return runs


def load_image(image: FirmwareImage) -> tuple[list[tuple[int, bytes]], list[tuple[int, int]]]:
    """What a loader writes into memory: (address, bytes) chunks — the file bytes of ELF segments
    at their load (physical) address, as QEMU's -kernel does — and the (start, end) ranges
    that hold code (ELF executable segments; all of a hex or bin image)."""
    data = image.path.read_bytes()
    if image.format == "bin":
        assert image.load_address is not None
        return [(image.load_address, data)], [(image.load_address, image.load_address + len(data))]
    if image.format == "hex":
        runs = [(a, bytes(b)) for a, b in _hex_runs(image.path, data)]
        return runs, [(a, a + len(b)) for a, b in runs]
    chunks: list[tuple[int, bytes]] = []
    code: list[tuple[int, int]] = []
    with image.path.open("rb") as f:
        for seg in ELFFile(f).iter_segments():
            if seg["p_type"] != "PT_LOAD" or seg["p_filesz"] == 0:
                continue
            chunks.append((seg["p_paddr"], seg.data()))
            if seg["p_flags"] & 1:  # PF_X
                code.append((seg["p_paddr"], seg["p_paddr"] + seg["p_filesz"]))
    return chunks, code


def vector_table(image: FirmwareImage, base: int = 0, count: int = 16, partial: bool = False) -> list[int] | None:
    """The first `count` words of the Cortex-M vector table the image loads at `base` (VTOR's reset
    value), or None if it loads nothing there (`partial`: as many of them as it loads)."""
    chunks, _ = load_image(image)
    for address, data in chunks:
        if address <= base and base + 4 * (count if not partial else 1) <= address + len(data):
            n = min(count, (address + len(data) - base) // 4)
            return list(struct.unpack_from(f"<{n}I", data, base - address))
    return None


def inspect(path: Path, fmt: str = "auto", load_address: int | None = None) -> FirmwareImage:
    """Read an image and describe it; raise FirmwareError for unreadable or malformed files."""
    data = limits.read_file(path, "firmware file", error=FirmwareError)
    if not data:
        raise FirmwareError(f"firmware file {path} is empty", file=str(path))
    kind = detect_format(data) if fmt == "auto" else fmt
    digest = hashlib.sha256(data).hexdigest()
    if kind == "elf":
        if data[:4] != b"\x7fELF":
            raise FirmwareError(f"{path}: --format elf given but the file is not an ELF", file=str(path))
        machine, entry, segments, word0, profile = _read_elf(path)
        return FirmwareImage(path, "elf", len(data), digest, entry, None, machine, segments, word0, profile)
    if kind == "hex":
        segments = _read_hex(path, data)
        return FirmwareImage(path, "hex", len(data), digest, None, None, None, segments)
    if load_address is None:
        raise FirmwareError(f"{path} is a raw binary: give its load address (--load-address 0x…)",
                            file=str(path), format="bin")
    return FirmwareImage(path, "bin", len(data), digest, None, load_address, None, ((load_address, len(data)),))


def _region_for(regions: list[MemoryRegion], address: int, size: int) -> MemoryRegion | None:
    return next((r for r in regions if r.contains(address, size)), None)


def check_fits(image: FirmwareImage, node: Node) -> None:
    """Refuse an image built for another architecture or for addresses the node has no memory at."""
    if not image.segments:
        raise FirmwareError(f"{image.path} contains no bytes to load (an ELF without PT_LOAD segments, or a "
                            "hex file without data records)", file=str(image.path))
    want = node.processor.elf_machine
    if image.machine is not None and image.machine != want:
        raise FirmwareError(
            f"{image.path} is a {image.machine} ELF but board node {node.id!r} has a {node.processor.type} "
            f"({want}): rebuild it for {node.processor.type}",
            file=str(image.path), elf_machine=image.machine, expected=want, processor=node.processor.type)
    want_profile = node.processor.profile
    if image.profile is not None and want_profile in ("m", "a") and image.profile != want_profile:
        raise FirmwareError(
            f"{image.path} was built for an ARM {image.profile.upper()}-profile CPU but node {node.id!r} has a "
            f"{node.processor.type} ({want_profile.upper()}-profile): rebuild it for {node.processor.type}",
            file=str(image.path), elf_profile=image.profile, expected=want_profile, processor=node.processor.type)
    for address, size in image.segments:
        if _region_for(node.memory, address, size) is None:
            regions = ", ".join(f"{r.name or r.type} {r.address:#x}..{r.end:#x}" for r in node.memory)
            raise FirmwareError(
                f"{image.path}: {size} bytes at {address:#010x} lie outside the memory of node {node.id!r} "
                f"({regions}): was it linked for another board?",
                file=str(image.path), address=address, size=size)
    sp = image.first_word
    if node.processor.profile == "m" and sp is not None:
        # The vector table's first word is the initial SP: it must point into (or just past) RAM.
        if not any(r.type == "RAM" and r.address < sp <= r.end for r in node.memory):
            raise FirmwareError(
                f"{image.path}: initial stack pointer {sp:#010x} (vector table word 0) is not in the RAM of "
                f"node {node.id!r}: was it linked for another board?", file=str(image.path), initial_sp=sp)
