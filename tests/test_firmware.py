"""virsim.firmware: detect ELF / Intel hex / raw binary, describe the image, check it fits a board node."""

from __future__ import annotations

import hashlib
import struct
import subprocess
from pathlib import Path

import pytest

from virsim.board import Node, resolve_board
from virsim.errors import FirmwareError
from virsim.firmware import check_fits, detect_format, inspect

from conftest import HELLO, LM3S_HELLO, need_tool


def node(board: str) -> Node:
    return resolve_board(board)[0].nodes[0]


def objcopy(tmp_path: Path, fmt: str, name: str, *extra: str, elf: Path = HELLO) -> Path:
    need_tool("arm-none-eabi-objcopy")
    out = tmp_path / name
    subprocess.run(["arm-none-eabi-objcopy", *extra, "-O", fmt, str(elf), str(out)], check=True)
    return out


def elf_header(path: Path) -> tuple[int, int]:
    """(e_machine, e_entry) of a 32-bit little-endian ELF, read without pyelftools."""
    data = path.read_bytes()
    assert data[4] == 1 and data[5] == 1, "expected ELFCLASS32, little-endian"
    machine, _version, entry = struct.unpack_from("<HII", data, 18)
    return machine, entry


def fw_error(*args: object, **kwargs: object) -> FirmwareError:
    with pytest.raises(FirmwareError) as info:
        inspect(*args, **kwargs)  # type: ignore[arg-type]
    assert info.value.code == "FIRMWARE_INVALID" and info.value.exit_code == 2
    return info.value


# -------------------------------------------------------------------------------------------- ELF


def test_inspect_elf() -> None:
    image = inspect(HELLO)
    machine, entry = elf_header(HELLO)
    assert machine == 40  # EM_ARM
    assert image.format == "elf"
    assert image.machine == "ARM"
    assert image.entry == entry
    assert image.entry & 1, "Cortex-M entry points are Thumb addresses (odd)"
    assert image.load_address is None
    assert image.size == HELLO.stat().st_size
    assert image.sha256 == hashlib.sha256(HELLO.read_bytes()).hexdigest()
    # The code is loaded at 0 (the vector table); .bss/.data with no file bytes are not segments.
    assert image.segments and image.segments[0][0] == 0
    assert all(size > 0 for _addr, size in image.segments)
    start, size = image.segments[0]
    assert start <= entry < start + size


def test_elf_code_segment_matches_objcopy_binary(tmp_path: Path) -> None:
    # objcopy -O binary dumps the bytes loaded from address 0 (the code): the ELF's first segment.
    binary = objcopy(tmp_path, "binary", "hello.bin")
    assert inspect(HELLO).segments[0] == (0, binary.stat().st_size)


def test_elf_fits_its_board() -> None:
    check_fits(inspect(HELLO), node("mps2-an385"))  # must not raise
    check_fits(inspect(LM3S_HELLO), node("lm3s811evb"))


def test_elf_with_a_stack_outside_the_board_ram(tmp_path: Path) -> None:
    # hello.elf is linked for mps2-an385: its vector table's initial SP is the top of the 4 MiB
    # data SSRAM, far beyond the 8 KiB SRAM of the lm3s811evb.
    sp = int.from_bytes(objcopy(tmp_path, "binary", "hello.bin").read_bytes()[:4], "little")
    assert sp == 0x20400000
    with pytest.raises(FirmwareError) as info:
        check_fits(inspect(HELLO), node("lm3s811evb"))
    assert "0x20400000" in str(info.value)
    assert "stack pointer" in str(info.value)


def test_x86_elf_is_refused_for_cortex_m3() -> None:
    host = Path("/bin/true").resolve()
    head = host.read_bytes()[:20]
    if head[:4] != b"\x7fELF" or struct.unpack_from("<H", head, 18)[0] != 62:
        pytest.skip("/bin/true is not an x86-64 ELF on this host")
    image = inspect(host)
    assert image.format == "elf" and image.machine == "x86-64"
    with pytest.raises(FirmwareError) as info:
        check_fits(image, node("mps2-an385"))
    msg = str(info.value)
    assert "x86-64" in msg and "cortex-m3" in msg
    assert info.value.details["elf_machine"] == "x86-64"
    assert info.value.details["processor"] == "cortex-m3"


def test_truncated_elf(tmp_path: Path) -> None:
    path = tmp_path / "cut.elf"
    path.write_bytes(HELLO.read_bytes()[:40])
    err = fw_error(path)
    assert str(path) in str(err) and "ELF" in str(err)


def test_format_elf_forced_on_a_non_elf(tmp_path: Path) -> None:
    path = tmp_path / "data.img"
    path.write_bytes(b"\x00" * 64)
    assert "not an ELF" in str(fw_error(path, fmt="elf"))


# -------------------------------------------------------------------------------------- Intel hex


def test_inspect_hex(tmp_path: Path) -> None:
    path = objcopy(tmp_path, "ihex", "hello.hex")
    assert detect_format(path.read_bytes()) == "hex"
    image = inspect(path)
    assert image.format == "hex"
    assert image.machine is None
    size = objcopy(tmp_path, "binary", "hello.bin").stat().st_size
    assert image.segments == ((0, size),)  # one contiguous run of data records from 0
    check_fits(image, node("mps2-an385"))


def test_hex_with_extended_linear_address(tmp_path: Path) -> None:
    # Relinked at 0x08000000: the hex needs a type-04 record for the upper 16 address bits.
    path = objcopy(tmp_path, "ihex", "high.hex", "--change-addresses", "0x08000000")
    assert b":02000004" in path.read_bytes()
    image = inspect(path)
    size = objcopy(tmp_path, "binary", "hello.bin").stat().st_size
    assert image.segments == ((0x08000000, size),)
    check_fits(image, node("netduinoplus2"))  # flash at 0x08000000
    with pytest.raises(FirmwareError) as info:
        check_fits(image, node("lm3s811evb"))
    assert "0x08000000" in str(info.value)


def test_hex_bad_checksum_names_the_line(tmp_path: Path) -> None:
    path = objcopy(tmp_path, "ihex", "hello.hex")
    lines = path.read_text().splitlines()
    record = lines[4]  # line 5
    checksum = int(record[-2:], 16)
    lines[4] = record[:-2] + f"{(checksum + 1) & 0xFF:02X}"
    path.write_text("\n".join(lines) + "\n")
    err = fw_error(path)
    assert f"{path}:5:" in str(err)
    assert "checksum" in str(err)
    assert err.details["line"] == 5


def test_hex_garbage_record(tmp_path: Path) -> None:
    path = tmp_path / "bad.hex"
    path.write_text(":00000001FF\n")
    assert inspect(path).segments == ()
    path.write_text(":10000000ZZ\n")
    err = fw_error(path, fmt="hex")
    assert f"{path}:1:" in str(err)


# ------------------------------------------------------------------------------------- raw binary


def test_bin_needs_a_load_address(tmp_path: Path) -> None:
    path = objcopy(tmp_path, "binary", "hello.bin")
    assert detect_format(path.read_bytes()) == "bin"
    err = fw_error(path)
    assert "--load-address" in str(err)
    assert str(path) in str(err)


def test_bin_with_load_address(tmp_path: Path) -> None:
    path = objcopy(tmp_path, "binary", "hello.bin")
    image = inspect(path, load_address=0)
    assert image.format == "bin"
    assert image.load_address == 0
    assert image.segments == ((0, path.stat().st_size),)
    assert image.entry is None and image.machine is None
    check_fits(image, node("mps2-an385"))


def test_bin_outside_the_board_memory(tmp_path: Path) -> None:
    path = objcopy(tmp_path, "binary", "hello.bin")
    image = inspect(path, load_address=0x08000000)
    with pytest.raises(FirmwareError) as info:
        check_fits(image, node("lm3s811evb"))
    msg = str(info.value)
    assert "0x08000000" in msg
    assert "cpu0" in msg and "flash" in msg  # names the node and its regions
    assert info.value.details["address"] == 0x08000000


def test_bin_straddling_the_end_of_a_region(tmp_path: Path) -> None:
    path = tmp_path / "fill.bin"
    path.write_bytes(b"\x00" * 0x100)
    lm3s = node("lm3s811evb")  # flash 0..64K
    check_fits(inspect(path, load_address=0x10000 - 0x100), lm3s)
    with pytest.raises(FirmwareError):
        check_fits(inspect(path, load_address=0x10000 - 0x80), lm3s)


# ------------------------------------------------------------------------------------ unreadable


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.elf"
    path.write_bytes(b"")
    err = fw_error(path)
    assert "empty" in str(err) and str(path) in str(err)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nothere.elf"
    err = fw_error(path)
    assert "does not exist" in str(err)
    assert err.details["file"] == str(path)


def test_directory_is_not_firmware(tmp_path: Path) -> None:
    err = fw_error(tmp_path)
    assert str(tmp_path) in str(err)
