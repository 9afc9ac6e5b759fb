"""virsim: run and debug firmware on virtual hardware (CLI + per-user daemon over real emulators)."""

__version__ = "0.1.0"
