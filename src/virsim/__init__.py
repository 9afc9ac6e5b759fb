"""virsim: run and debug firmware on virtual hardware (CLI + per-user daemon over real emulators)."""

from pathlib import Path

__version__ = "0.1.0"
# Where this copy of virsim is installed. A client and a daemon must come from the same install:
# a daemon keeps importing from its own for as long as it runs (see client.Client.connect).
INSTALL = str(Path(__file__).resolve().parent)
