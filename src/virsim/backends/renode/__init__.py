"""The Renode backend's parts that need no Renode binary: the platform description generated from
a BoardConfig (platform.py), the monitor protocol (monitor.py) and finding the binary
(`find_renode`). The adapter that drives a Renode process with them is not registered yet
(backends.PLANNED says why): it is built and tested against a real Renode build (issue 16).
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
