"""The console log is what the firmware wrote, byte for byte.

QEMU 7.2's chardev `logfile=` logs a buffer again whenever the socket behind it answers EAGAIN
(the UART retries the same bytes later), so a console reader that falls behind made the log
double bytes (`Fallse`, `TTrue`). tests/firmware/flood.elf prints ~536 KB of a known sequence as
fast as the UART takes it; the log must equal that sequence exactly, run after run, while the
daemon is also busy serving its follower.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, process_progress, wait_console, wait_progress
from virsim.client import Client

FLOOD = ROOT / "tests" / "firmware" / "flood.elf"
ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def expected_flood(lines: int = 8000) -> bytes:
    """What flood.c prints, computed the same way (32-bit xorshift per line)."""
    out = bytearray()
    mask = 0xFFFFFFFF
    for i in range(lines):
        x = (i * 2654435761 + 1) & mask
        out += b"%05d:" % i
        for _ in range(60):
            x ^= (x << 13) & mask
            x ^= x >> 17
            x ^= (x << 5) & mask
            out.append(ALPHABET[x % 62])
        out += b"\n"
    return bytes(out + b"DONE\n")


def first_difference(got: bytes, want: bytes) -> str:
    at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return f"first difference at byte {at}: got {got[max(0, at - 20):at + 20]!r}, want {want[max(0, at - 20):at + 20]!r}"


@pytest.mark.parametrize("run", range(10))
def test_a_console_flood_is_logged_exactly(client: Client, backend: str, run: int) -> None:
    want = expected_flood()
    info = client.session_create("mps2-an385", FLOOD, backend=backend)
    # A follower reading while the flood comes in, as `virsim console --follow` would.
    got = bytearray()
    for data in client.follow_console(info.id, poll=0.05):
        got += data
        if b"DONE\n" in got or len(got) > len(want) + 4096:
            break
    log = Path(info.console_log).read_bytes()
    assert log == want, first_difference(log, want)
    assert bytes(got) == want, first_difference(bytes(got), want)
    client.session_delete(info.id, purge=True)


def test_the_log_keeps_growing_while_the_daemon_is_down(client: Client, home: Path) -> None:
    """The console is kept by a process that survives the daemon (QEMU's console keeper), so output
    printed while no daemon runs is in the log when it comes back."""
    from conftest import HELLO, need_tool
    from virsim.client import daemon_pid

    need_tool("qemu-system-arm")
    info = client.session_create("mps2-an385", HELLO, backend="qemu")
    wait_console(client, info.id, b"tick 1")
    import os
    import signal

    pid = daemon_pid(client.paths)
    assert pid
    os.kill(pid, signal.SIGKILL)
    client.close()
    log = Path(info.console_log)
    before = len(log.read_bytes())
    assert info.pid is not None
    wait_progress(lambda: len(log.read_bytes()) > before + 20, progress=process_progress([info.pid], (log,)),
                  what="the log to grow with no daemon")  # QEMU's own effort counts: no daemon to ask
    again = Client(client.paths).connect()
    assert again.session("show", info.id).state == "running"  # re-attached to QEMU and its keeper
    wait_console(again, info.id, b"tick 2")
    again.session_delete(info.id, purge=True)
    again.close()
