"""The committed example ELFs are what their sources build, and the rebuilt ones run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, need_tool, wait_console
from virsim.client import Client

BUILDS = {  # directory -> (ELF, board, what it prints first)
    "examples/hello": [("hello.elf", "mps2-an385", b"Hello from virsim on mps2-an385\ntick 1\n"),
                       ("hello-systick.elf", "mps2-an385", b"Hello from virsim on mps2-an385 (SysTick)\ntick 1\n"),
                       ("fault.elf", "mps2-an385", b"Hello from virsim on mps2-an385 (fault)\nabout to divide by zero\n")],
    "examples/rtos": [("rtos.elf", "mps2-an385", b"rtos: start\nA: step 1/5 sum 418414548\n")],
    "examples/irqload": [("irqload.elf", "mps2-an385", b"irqload: two timers at 2 kHz, BASEPRI critical sections\n"
                                                         b"second 1: t0 2000 ")],
    # Alone on one node each prints its first line (the mailbox needs both: tests/test_sync.py).
    "examples/multinode": [("cpu0.elf", "mps2-an385", b"cpu0: start\n"), ("cpu1.elf", "mps2-an385", b"cpu1: ready\n"),
                           ("cpu2.elf", "mps2-an385", b"cpu2: ready\n"), ("remote.elf", "mps2-an385", b"cpu0: start\n"),
                           ("ping.elf", "mps2-an385", b"ping: start\n"), ("pong.elf", "mps2-an385", b"pong: ready\n")],
    "examples/lm3s811evb": [("hello.elf", "lm3s811evb", b"Hello from virsim on lm3s811evb\ntick 1\n")],
    # A Renode board (its stock platform: tests/test_renode.py); here on QEMU's netduinoplus2.
    "examples/stm32f4": [("hello.elf", "stm32f4-discovery", b"Hello from virsim on stm32f4-discovery\ntick 1\n")],
    "examples/virt-a15": [("hello.elf", "virt-a15", b"Hello from virsim on virt (Cortex-A15)\ntick 1\ntick 2\ntick 3\n"),
                          ("flood.elf", "virt-a15", b"1 the quick brown fox jumps over the lazy dog\n2 the quick")],
    "tests/firmware": [("jitter.elf", "mps2-an385", b"jitter\ntick 1 loops "), ("lockup.elf", "mps2-an385", None),
                       ("exceptions.elf", "mps2-an385", b"PASS svc\n")],
}


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the firmware sources rebuilt from clean with the cross toolchain."""
    need_tool("arm-none-eabi-gcc")
    need_tool("make")
    top = tmp_path_factory.mktemp("build")
    for folder in BUILDS:
        shutil.copytree(ROOT / folder, top / folder)
    for folder in BUILDS:
        subprocess.run(["make", "-s", "clean"], cwd=top / folder, check=True)
        subprocess.run(["make", "-s"], cwd=top / folder, check=True)
    return top


@pytest.mark.parametrize("folder,elf", [(f, e[0]) for f, es in BUILDS.items() for e in es])
def test_committed_elf_matches_its_sources(rebuilt: Path, folder: str, elf: str) -> None:
    # Same Debian toolchain as CI: the build is reproducible, so a stale committed ELF shows here.
    assert (rebuilt / folder / elf).read_bytes() == (ROOT / folder / elf).read_bytes(), \
        f"{folder}/{elf} is stale: run 'make -C {folder}' and commit the result"


@pytest.mark.parametrize("folder,elf,board,expected",
                         [(f, *e) for f, es in BUILDS.items() for e in es if e[2] is not None])
def test_rebuilt_elf_runs(rebuilt: Path, client: Client, folder: str, elf: str, board: str,
                          expected: bytes) -> None:
    need_tool("qemu-system-arm")
    info = client.session_create(board, rebuilt / folder / elf, backend="qemu")
    wait_console(client, info.id, expected)
