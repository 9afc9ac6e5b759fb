"""The Renode backend (docs/backends.md): `adapter.py` runs a board node in a headless Renode
driven through its monitor (`monitor.py`), on a platform generated from the BoardConfig
(`platform.py`), jailed off the network (`jail.py`); `emulation.py` runs the Renode nodes of a
multi-node board in one emulation; `VirsimRenode.cs` is virsim's own C# extension that Renode
compiles (probes, shared memory, the lockstep participant). Here: finding the binary.
"""

from __future__ import annotations

import os
import re
import shutil
from functools import lru_cache
from pathlib import Path

from virsim.errors import EmulatorMissing, InvalidInput, NotSupported

INSTALL_HINT = ("install it from the Renode project's release packages (renode.io; no apt or pip package), then "
                "put `renode` on PATH or set VIRSIM_RENODE=/path/to/renode")


def find_renode() -> str | None:
    """The Renode launcher virsim would run: $VIRSIM_RENODE if set (and executable), else `renode`
    on PATH; None when there is none."""
    explicit = os.environ.get("VIRSIM_RENODE")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("renode")


@lru_cache(maxsize=4)
def renode_root(launcher: str) -> Path:
    """Renode's folder (where platforms/ is) for a launcher: the wrapper script names Renode.exe."""
    path = Path(launcher).resolve()
    for candidate in [path.parent, path.parent.parent]:
        if (candidate / "platforms").is_dir():
            return candidate
    try:
        text = path.read_text(errors="replace")[:4000]
    except OSError:
        text = ""
    m = re.search(r"(/\S+)/bin/Renode\.exe", text) or re.search(r"(/\S+)/Renode\.exe", text)
    if m:
        return Path(m.group(1))
    return path.parent


def stock_root() -> Path:
    """Renode's folder, where stock platforms are; EmulatorMissing when Renode is not installed."""
    renode = find_renode()
    if renode is None:
        raise EmulatorMissing(f"Renode not found: {INSTALL_HINT}", binary="renode", install=INSTALL_HINT)
    return renode_root(renode)


def stock_path(name: str) -> Path:
    """The file of a stock platform a board names (renode.platform), relative to Renode's folder or
    absolute; NotSupported naming the field when this Renode has no such file."""
    path = Path(name)
    if not path.is_absolute():
        path = stock_root() / path
    if not path.is_file():
        raise NotSupported(f"renode.platform: {path} is not a file of this Renode install", field="renode.platform",
                           value=name)
    return path


def svd_path(name: str | None) -> Path | None:
    """The local SVD file a board applies instead of its stock platform's downloads (renode.svd)."""
    if name is None:
        return None
    from virsim.backends.renode.platform import monitor_path

    path = Path(name)
    if not path.is_absolute() or not path.is_file():
        raise InvalidInput(f"renode.svd: {name} is not an absolute path of a file", field="renode.svd", value=name)
    monitor_path(path, "renode.svd")  # it goes into the platform Renode loads: plain characters only
    return path
