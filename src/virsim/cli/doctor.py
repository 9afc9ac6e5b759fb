"""`virsim doctor`: what is installed and healthy, and the exact command that installs what is missing."""

from __future__ import annotations

import os
import platform
import re
import shutil
import sqlite3
import stat
import subprocess
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

import typer

from virsim import __version__
from virsim.cli.common import JsonOpt
from virsim.cli.render import emit, out, table
from virsim.client import Client, daemon_pid
from virsim.errors import VirsimError
from virsim.paths import get_paths

if TYPE_CHECKING:
    from virsim.backends.base import ToolCheck


def _tool(name: str, install: str, note: str) -> ToolCheck:
    from virsim.backends.base import ToolCheck

    path = shutil.which(name)
    version = None
    if path:
        first = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout.splitlines()
        m = re.search(r"(\d+\.\d+(?:\.\d+)?)", first[0] if first else "")
        version = m.group(1) if m else None
    return ToolCheck(name, path is not None, version, path, None if path else install, note)


def checks() -> tuple[list[ToolCheck], bool]:
    """All checks, and whether everything required (the default backend) is there."""
    from virsim.backends import all_backends
    from virsim.backends.base import ToolCheck
    results = [ToolCheck("python", True, platform.python_version(), note=f"virsim {__version__}")]
    for backend in all_backends():
        results += backend.doctor()
    results.append(_tool("gdb-multiarch", "sudo apt-get install -y gdb-multiarch", "debugging, external gdb"))
    results.append(_tool("arm-none-eabi-gcc", "sudo apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi",
                         "only to rebuild the examples"))
    paths = get_paths()
    if paths.runtime.exists():
        mode = stat.S_IMODE(paths.runtime.stat().st_mode)
        results.append(ToolCheck("runtime dir", mode == 0o700, oct(mode), str(paths.runtime),
                                 None if mode == 0o700 else f"chmod 700 {paths.runtime}", "must be private (0700)"))
    else:
        results.append(ToolCheck("runtime dir", True, None, str(paths.runtime), note="created on first use"))
    if paths.database.exists():
        try:
            db = sqlite3.connect(f"file:{paths.database}?mode=ro", uri=True)
            migrations = [r[0] for r in db.execute("select name from migrations order by name")]
            ok = db.execute("pragma quick_check").fetchone()[0] == "ok"
            db.close()
            results.append(ToolCheck("store", ok, migrations[-1] if migrations else None, str(paths.database),
                                     note="integrity ok" if ok else "integrity check FAILED"))
        except sqlite3.Error as err:
            results.append(ToolCheck("store", False, None, str(paths.database), note=f"unreadable: {err}"))
    else:
        results.append(ToolCheck("store", True, None, str(paths.database), note="created on first use"))
    if daemon_pid(paths) is None:
        results.append(ToolCheck("daemon", True, None, str(paths.control_socket),
                                 note="not running (starts on first use)"))
    else:
        try:
            c = Client(autostart=False, timeout=5, check_install=False).connect()
            t0 = time.perf_counter()
            c.status()
            rtt = (time.perf_counter() - t0) * 1000
            if c.mismatch:
                results.append(ToolCheck("daemon", False, c.daemon.daemon_version if c.daemon else None,
                                         str(paths.control_socket), install="virsim daemon stop",
                                         note=f"{c.mismatch} (the next command restarts it if it has no live "
                                              "session)"))
            else:
                results.append(ToolCheck("daemon", True, c.daemon.daemon_version if c.daemon else None,
                                         str(paths.control_socket), note=f"pid {c.daemon.pid if c.daemon else '?'}, "
                                         f"round trip {rtt:.2f} ms, from {c.daemon.install if c.daemon else '?'}"))
            c.close()
        except VirsimError as err:
            results.append(ToolCheck("daemon", False, None, str(paths.control_socket),
                                     install="virsim daemon stop; virsim daemon start", note=str(err)))
    required = {"qemu-system-arm", "runtime dir", "store", "daemon"}
    return results, all(c.ok for c in results if c.name in required)


def doctor(as_json: JsonOpt = False) -> None:
    """Check emulators, debugger, toolchain, store and daemon.

    Says how to install what is missing.

    Exits 6 when something the default backend needs is missing.

    Example: virsim doctor
    """
    results, ok = checks()

    def human() -> None:
        t = table("", "CHECK", "VERSION", "WHERE / NOTE")
        for c in results:
            mark = "[green]ok[/]" if c.ok else "[red]missing[/]"
            where = c.note or ""
            if c.path:
                where = f"{c.path}  {where}".strip()
            t.add_row(mark, c.name, c.version or "", where)
        out.print(t)
        for c in results:
            if not c.ok and c.install:
                out.print(f"[yellow]to fix {c.name}:[/] {c.install}")
        out.print(f"user {os.getuid()}, VIRSIM_HOME={os.environ.get('VIRSIM_HOME', '(unset)')}")

    emit({"ok": ok, "checks": [asdict(c) for c in results]}, as_json, human)
    if not ok:
        raise typer.Exit(6)
