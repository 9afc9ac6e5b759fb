"""Emulator backends behind one interface (base.py), registered in one place: `REGISTRY`.

Adding a backend = a package here implementing BackendAdapter, one line in REGISTRY, and its
capabilities declared honestly. The daemon looks backends up here and asks their capabilities.
Entries name the class by import path so that importing this package (the CLI does, for
process helpers) does not import every emulator's dependencies.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from virsim.errors import NotSupported

if TYPE_CHECKING:
    from virsim.backends.base import BackendAdapter

REGISTRY: dict[str, str] = {
    "qemu": "virsim.backends.qemu:QemuBackend",
    "builtin": "virsim.backends.builtin.adapter:BuiltinBackend",
    "renode": "virsim.backends.renode.adapter:RenodeBackend",
    # Boards with several nodes: one session, one process per node, in lockstep (virsim.sync).
    "system": "virsim.sync.instance:SystemBackend",
}

# Backends the BoardConfig schema names that virsim cannot drive yet, with the reason.
PLANNED = {
    "skyeye": "SkyEye has no maintained release and no adapter",
}

_instances: dict[str, BackendAdapter] = {}


def get_backend(name: str) -> BackendAdapter:
    if name not in REGISTRY:
        why = PLANNED.get(name, f"unknown backend; known: {', '.join(REGISTRY)}")
        raise NotSupported(f"backend {name!r} is not available: {why}", backend=name, available=list(REGISTRY))
    if name not in _instances:
        module, _, cls = REGISTRY[name].partition(":")
        _instances[name] = getattr(import_module(module), cls)()
    return _instances[name]


def all_backends() -> list[BackendAdapter]:
    return [get_backend(name) for name in REGISTRY]
