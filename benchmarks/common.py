"""Helpers shared by the benchmark scripts (run them as scripts: this directory is on sys.path)."""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def virsim_script() -> str:
    """The installed `virsim` console script of this interpreter (not a pyenv/asdf shim)."""
    candidate = Path(sysconfig.get_path("scripts")) / "virsim"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("virsim")
    if found is None:
        sys.exit("bench: the virsim script is not installed (pip install -e .)")
    return found


def qemu_binary() -> str:
    found = shutil.which("qemu-system-arm")
    if found is None:
        sys.exit("bench: qemu-system-arm is not installed (scripts/setup.sh installs it)")
    return found


def side_by_side(runs: int, ours: Callable[[], float], theirs: Callable[[], float]) -> tuple[float, float]:
    """Alternate the two measurements `runs` times (after one warm-up each); return the medians."""
    ours()
    theirs()
    a, b = [], []
    for _ in range(runs):
        a.append(ours())
        b.append(theirs())
    return statistics.median(a), statistics.median(b)


@contextmanager
def private_daemon() -> Iterator[Any]:
    """A connected Client of a daemon in a fresh VIRSIM_HOME under /tmp; afterwards the daemon is
    stopped (its emulators with it) and the folder removed, however the benchmark ended."""
    home = Path(tempfile.mkdtemp(prefix="vsb-", dir="/tmp"))
    os.environ["VIRSIM_HOME"] = str(home)
    os.environ.pop("XDG_RUNTIME_DIR", None)
    from virsim.client import Client

    client = Client().connect()
    try:
        yield client
    finally:
        try:
            client.stop_daemon()
        finally:
            client.close()
            shutil.rmtree(home, ignore_errors=True)
