"""The Renode backend (docs/backends.md): `adapter.py` runs a board node in a headless Renode
driven through its monitor (`monitor.py`), on a platform generated from the BoardConfig
(`platform.py`), jailed off the network (`jail.py`); `emulation.py` runs the Renode nodes of a
multi-node board in one emulation; `VirsimRenode.cs` is virsim's own C# extension that Renode
compiles (probes, shared memory, the lockstep participant). Here: finding the binary.
"""

from __future__ import annotations

import os
import shutil

INSTALL_HINT = ("install it from the Renode project's release packages (renode.io; no apt or pip package), then "
                "put `renode` on PATH or set VIRSIM_RENODE=/path/to/renode")


def find_renode() -> str | None:
    """The Renode launcher virsim would run: $VIRSIM_RENODE if set (and executable), else `renode`
    on PATH; None when there is none."""
    explicit = os.environ.get("VIRSIM_RENODE")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("renode")
