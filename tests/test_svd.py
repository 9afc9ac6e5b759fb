"""CMSIS-SVD files (virsim/svd.py): what a board node's `svd:` gives the peripheral view."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT
from virsim import svd
from virsim.board import load_board_file
from virsim.errors import InvalidInput

SVD = ROOT / "tests" / "data" / "mps2-uarts.svd"


def test_peripherals_registers_and_fields_in_every_spelling() -> None:
    uart0, uart1 = svd.parse(SVD)
    assert (uart0["name"], uart0["address"]) == ("UART0", 0x40004000)
    regs = {r["name"]: r for r in uart0["registers"]}
    assert list(regs) == ["RXTXDATA", "STATUS", "CONTROL", "BAUD_DIVIDER"]  # dim arrays are left out
    assert regs["RXTXDATA"]["read"] is False  # readAction: reading it changes the device
    assert regs["STATUS"]["fields"] == [{"name": "TX_BUF_FULL", "lsb": 0, "width": 1},
                                        {"name": "RX_BUF_FULL", "lsb": 1, "width": 1}]  # bitOffset, lsb/msb
    assert regs["BAUD_DIVIDER"]["fields"] == [{"name": "DIV", "lsb": 0, "width": 20}]  # bitRange
    assert (uart1["address"], uart1["registers"]) == (0x40005000, uart0["registers"])  # derivedFrom


def test_bad_svd_files_are_refused_naming_file_and_element(tmp_path: Path) -> None:
    broken = tmp_path / "broken.svd"
    broken.write_text("<device><peripherals><peripheral><name>X</name></peripheral>")
    with pytest.raises(InvalidInput, match="broken.svd: not an SVD file"):
        svd.parse(broken)
    broken.write_text("<device><peripherals><peripheral><name>X</name></peripheral></peripherals></device>")
    with pytest.raises(InvalidInput, match=r"broken.svd: X.baseAddress: missing"):
        svd.parse(broken)
    broken.write_text("<device><peripherals><peripheral derivedFrom='Y'><name>X</name><baseAddress>4</baseAddress>"
                      "</peripheral></peripherals></device>")
    with pytest.raises(InvalidInput, match="derived from 'Y'"):
        svd.parse(broken)


def test_a_board_names_its_svd_relative_to_the_board_file(tmp_path: Path) -> None:
    text = (ROOT / "boards" / "mps2-an385.yaml").read_text()
    assert "\n    peripherals:" in text
    (tmp_path / "uarts.svd").write_bytes(SVD.read_bytes())
    board = tmp_path / "board.yaml"
    board.write_text(text.replace("\n    peripherals:", "\n    svd: uarts.svd\n    peripherals:", 1))
    assert load_board_file(board).nodes[0].svd == str(tmp_path / "uarts.svd")
