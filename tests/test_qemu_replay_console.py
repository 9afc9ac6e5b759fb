"""ReplayConsole: the console log of a QEMU replay shows each byte once, however often reverse
execution makes QEMU re-print it, and says so when a re-print does not match."""

from __future__ import annotations

from pathlib import Path

from virsim.backends.qemu.replay import LOST_TRACK, ReplayConsole, prefix_suffix_overlap

STREAM = b"Hello\ntick 1\ntick 2\ntick 3\n"


def test_overlap_is_the_last_rerun() -> None:
    assert prefix_suffix_overlap(STREAM, STREAM[:13] + STREAM[:6]) == 6
    assert prefix_suffix_overlap(STREAM, STREAM[:20]) == 20
    assert prefix_suffix_overlap(STREAM, b"") == 0
    assert prefix_suffix_overlap(b"abab", b"ab" + b"aba") == 3  # a self-overlapping prefix


def emit(raw: Path, data: bytes, console: ReplayConsole) -> None:
    with raw.open("ab") as f:
        f.write(data)
    console.pump()


def test_reverse_reruns_reach_the_log_once(tmp_path: Path) -> None:
    raw, log = tmp_path / "console.raw", tmp_path / "console.log"
    console = ReplayConsole(raw, log)
    emit(raw, STREAM[:20], console)  # forward: Hello, tick 1, tick 2 + part of tick 3
    console.reverse_begin()
    emit(raw, STREAM[:19], console)  # reverse-continue: a re-run to just before the current point
    emit(raw, STREAM[:6], console)  # ... and one to the last breakpoint
    console.reverse_end()
    assert console.pos == 6 and log.read_bytes() == STREAM[:20]
    emit(raw, STREAM[6:], console)  # forward again, past the furthest point
    assert log.read_bytes() == STREAM and console.pos == len(STREAM)


def test_a_rerun_that_differs_is_reported_not_hidden(tmp_path: Path) -> None:
    raw, log = tmp_path / "console.raw", tmp_path / "console.log"
    console = ReplayConsole(raw, log)
    emit(raw, STREAM, console)
    console.reverse_begin()
    emit(raw, STREAM[:6], console)
    console.reverse_end()
    emit(raw, b"tick X\n", console)
    assert log.read_bytes() == STREAM + LOST_TRACK + b"tick X\n"
