"""The Renode backend's parts that need no Renode: the generated platform and the monitor protocol
(its failure paths against a scripted stream; the real monitor is the adapter's tests' business)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import HELLO

from virsim.backends.base import SharedMapping
from virsim.backends.renode.monitor import Monitor
from virsim.backends.renode.platform import monitor_name, monitor_path, platform
from virsim.board import resolve_board
from virsim.errors import EmulatorError, InvalidInput, NotSupported, Timeout

# The platform measured to run examples/hello like QEMU (shared/docs/field-notes.md, Renode section),
# grown to QEMU's whole map: mirrors registered at several addresses, the PSRAM, bit-band aliases,
# all 8 priority bits (as QEMU), the dual timer as Renode's SP804.
MPS2_AN385 = """ssram1: Memory.MappedMemory @ { sysbus 0x0; sysbus 0x400000 }
    size: 0x400000

blockram: Memory.MappedMemory @ { sysbus 0x1000000; sysbus 0x1004000; sysbus 0x1008000; sysbus 0x100c000 }
    size: 0x4000

ssram23: Memory.MappedMemory @ { sysbus 0x20000000; sysbus 0x20400000 }
    size: 0x400000

psram: Memory.MappedMemory @ sysbus 0x21000000
    size: 0x1000000

bitband_20000000: Miscellaneous.BitBanding @ sysbus <0x22000000, +0x2000000>
    peripheralBase: 0x20000000

bitband_40000000: Miscellaneous.BitBanding @ sysbus <0x42000000, +0x2000000>
    peripheralBase: 0x40000000

nvic: IRQControllers.NVIC @ sysbus 0xe000e000
    priorityMask: 0xFF
    systickFrequency: 25000000
    IRQ -> cpu@0

cpu: CPU.CortexM @ sysbus
    cpuType: "cortex-m3"
    nvic: nvic

uart0: UART.CMSDK_APB_UART @ sysbus 0x40004000
    frequency: 25000000
    RxInterrupt -> nvic@0
    TxInterrupt -> nvic@1

dualtimer: Timers.ARM_SP804_Timer @ sysbus 0x40002000
    frequency: 25000000
    -> nvic@10

gpio0: GPIOPort.ARM_AHB_GPIO @ sysbus 0x40010000
    -> nvic@6
"""


def test_mps2_an385_platform_is_the_measured_one() -> None:
    board, _ = resolve_board("mps2-an385")
    result = platform(board.nodes[0])
    assert result.repl == MPS2_AN385
    assert result.unmodelled == ["timer0", "timer1"]  # Renode has no CMSDK timer model


def test_shared_windows_are_carved_out_of_memory() -> None:
    board, _ = resolve_board("dual-core-mailbox")
    shared = [SharedMapping(path="/run/x/shm-mailbox", address=0x20300000, size=0x1000, name="mailbox")]
    repl = platform(board.nodes[0], shared).repl
    assert "data: Memory.MappedMemory @ sysbus 0x20000000\n    size: 0x300000\n" in repl
    assert "data_1: Memory.MappedMemory @ sysbus 0x20301000\n    size: 0xff000\n" in repl
    assert ('shared_mailbox: Virsim.SharedMemory @ sysbus 0x20300000\n    path: "/run/x/shm-mailbox"\n'
            "    size: 0x1000\n    offset: 0x0\n") in repl


def test_a_non_cortex_m_node_is_not_supported() -> None:
    board, _ = resolve_board("virt-a15")
    with pytest.raises(NotSupported, match="Cortex-M nodes, not cortex-a15"):
        platform(board.nodes[0])


@pytest.mark.parametrize("value", ["/tmp/a b.elf", "/tmp/a\nquit", "/tmp/$x", "/tmp/a;b", '/tmp/"q"', "/tmp/#c"])
def test_values_that_could_add_a_monitor_command_are_refused(value: str) -> None:
    with pytest.raises(InvalidInput, match="cannot go into a Renode monitor command"):
        monitor_path(value, "firmware")
    with pytest.raises(InvalidInput):
        monitor_name(value.strip("/"), "name")
    assert monitor_path("/tmp/ok-1.elf") == "@/tmp/ok-1.elf" and monitor_name("node-1") == '"node-1"'


class Script:
    """A monitor on the other end of a stream: each command written gets the next scripted reply."""

    def __init__(self, *replies: bytes | None) -> None:
        self.replies = list(replies)
        self.sent: list[bytes] = []
        self.pending: list[bytes | None] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)
        if self.replies:
            self.pending.append(self.replies.pop(0))

    def read(self, timeout: float) -> bytes | None:
        return self.pending.pop(0) if self.pending else None


def test_handshake_and_a_command_strip_negotiation_colour_and_echo() -> None:
    s = Script(b"\xff\xfb\x01\xff\xfb\x03", b"version\r\nRenode v1.15.3.1\r\n\x1b[32m(monitor) \x1b[0m",
               b'mach create "m"\r\n(m) ')
    m = Monitor(s.write, s.read, timeout=1)
    assert m.handshake(timeout=1) == "Renode v1.15.3.1"
    assert m.command('mach create "m"') == ""
    assert s.sent == [b"\n", b"version\n", b'mach create "m"\n']


def test_a_reply_counts_from_its_own_echo() -> None:
    # Renode's start-up prompt and the blank line's prompt arrive before the reply to `version`,
    # and a late line of an earlier command before the next echo: neither passes for a reply.
    s = Script(b"(monitor) \n(monitor) ", b"version\nRenode, version 1.15.3\n(monitor) ",
               b"late output\n(m) sysbus.cpu PC\n0xf1\n(m) ")
    m = Monitor(s.write, s.read, timeout=1)
    assert m.handshake(timeout=1) == "Renode, version 1.15.3"
    assert m.command("sysbus.cpu PC") == "0xf1"


def test_errors_timeouts_and_a_gone_renode_are_typed() -> None:
    s = Script(b"sysbus LoadELF @/x\r\nThere was an error executing command 'sysbus LoadELF @/x'\r\n"
               b"Could not find file\r\n(m) ")
    with pytest.raises(EmulatorError, match="Renode refused .*Could not find file"):
        Monitor(s.write, s.read, timeout=1).command("sysbus LoadELF @/x")
    with pytest.raises(Timeout, match="did not answer 'start' within 0.2s"):
        Monitor(Script().write, Script().read, timeout=0.2).command("start")
    gone = Script(b"")
    with pytest.raises(EmulatorError, match="Renode exited while running 'pause'"):
        Monitor(gone.write, gone.read, timeout=1).command("pause")
    with pytest.raises(InvalidInput, match="one line"):
        Monitor(gone.write, gone.read).command("pause\nquit")


def test_doctor_says_how_virsim_finds_renode(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from virsim.backends import get_backend
    from virsim.backends.renode import adapter

    def check():  # type: ignore[no-untyped-def]
        adapter.renode_version.cache_clear()
        (found,) = get_backend("renode").doctor()
        return found

    monkeypatch.setenv("VIRSIM_RENODE", str(tmp_path / "nowhere" / "renode"))
    missing = check()
    assert not missing.ok and "VIRSIM_RENODE" in (missing.install or "") and "release packages" in (missing.install or "")
    fake = tmp_path / "renode"
    fake.write_text("#!/bin/sh\necho 'Renode v1.15.3.9222 (03756cb5-202411271311)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("VIRSIM_RENODE", str(fake))
    found = check()
    assert found.ok and found.path == str(fake) and found.version == "1.15.3.9222"


def test_an_unmodelled_peripheral_is_refused_by_name(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    board = (Path(__file__).resolve().parents[1] / "boards" / "mps2-an385.yaml").read_text()
    board = board.replace("      absent: [timer0, timer1]\n", "      absent: [timer0]\n")
    path = tmp_path / "no-absent.yaml"
    path.write_text(board)
    err = cli.json("session", "create", "-b", str(path), "-f", str(HELLO), "--backend", "renode", check=5)
    assert "timer1" in err["error"] and "cmsdk-timer" in err["error"], json.dumps(err)
    assert err["details"]["field"] == "nodes[cpu0].peripherals[timer1]"
