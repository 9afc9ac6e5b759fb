"""The snapshot file (`.vsnap`): one self-checking container for any backend's saved state.

    VSNAP1\\n
    {"format": 1, "backend": ..., "board": ..., "sections": [{"name", "size", "sha256"}], ...}\\n
    <section bytes, in order>

The header is one line of JSON: what the snapshot belongs to (backend, board system id, node,
program sha256, virtual time, instructions) and a sha256 per section, so a truncated or corrupted
file is detected before anything is restored. Sections are backend-defined blobs (the built-in
engine: `state` JSON and zlib-compressed `memory`; exports add the `program` image so a session
can be created from the file alone).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from virsim import limits
from virsim.atomic import atomic_file
from virsim.errors import SnapshotInvalid

MAGIC = b"VSNAP1\n"
FORMAT = 1


def write(path: Path, meta: dict[str, Any], sections: dict[str, bytes], durable: bool = True) -> int:
    """Write atomically (temp file + rename); return the file size. `durable`: fsync before the
    rename (off where the state itself lives elsewhere, e.g. in QEMU's qcow2, which QEMU flushes)."""
    header = dict(meta, format=FORMAT, sections=[
        {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in sections.items()])
    with atomic_file(path, "wb", durable) as fh:
        fh.write(MAGIC)
        fh.write(json.dumps(header, sort_keys=True).encode() + b"\n")
        for data in sections.values():
            fh.write(data)
    return path.stat().st_size


def read_meta(path: Path) -> dict[str, Any]:
    """The header only (cheap), after checking the magic; raises SnapshotInvalid."""
    limits.open_checked(path, "snapshot file", error=SnapshotInvalid)
    try:
        with path.open("rb") as fh:
            magic = fh.read(len(MAGIC))
            line = fh.readline(1 << 20)
    except OSError as err:
        raise SnapshotInvalid(f"{path}: cannot read snapshot: {err.strerror}", file=str(path)) from err
    if magic != MAGIC:
        raise SnapshotInvalid(f"{path}: not a virsim snapshot (no VSNAP1 header)", file=str(path))
    try:
        meta = json.loads(line)
    except ValueError as err:
        raise SnapshotInvalid(f"{path}: snapshot header is corrupted", file=str(path)) from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("sections"), list):
        raise SnapshotInvalid(f"{path}: unsupported snapshot format {meta.get('format')!r}", file=str(path))
    meta["_offset"] = len(MAGIC) + len(line)
    return meta


def read(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Header and every section, each checked against its size and sha256."""
    meta = read_meta(path)
    sections: dict[str, bytes] = {}
    with path.open("rb") as fh:
        fh.seek(meta["_offset"])
        for sec in meta["sections"]:
            data = fh.read(sec["size"])
            if len(data) != sec["size"]:
                raise SnapshotInvalid(f"{path}: snapshot is truncated (section {sec['name']!r} has {len(data)} of "
                                      f"{sec['size']} bytes)", file=str(path), section=sec["name"])
            if hashlib.sha256(data).hexdigest() != sec["sha256"]:
                raise SnapshotInvalid(f"{path}: snapshot is corrupted (checksum of section {sec['name']!r} differs)",
                                      file=str(path), section=sec["name"])
            sections[sec["name"]] = data
        if fh.read(1):
            raise SnapshotInvalid(f"{path}: unexpected bytes after the last section", file=str(path))
    return meta, sections
