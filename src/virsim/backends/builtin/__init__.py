"""The built-in backend: virsim's own Cortex-M engine (Unicorn CPU + Python ARMv7-M and peripherals).

- adapter.py: the daemon's side (BuiltinBackend, BuiltinInstance), registered as `builtin`;
- engine.py: the engine process (`python -m virsim.backends.builtin`), one per node;
- machine.py, armv7m.py, peripherals.py, counter.py: the emulated node;
- gdbstub.py: the GDB remote protocol server.

This package stays empty so the engine process does not import the daemon's side (startup time).
See docs/builtin-engine.md.
"""
