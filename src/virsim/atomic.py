"""The one way virsim writes a file someone will read later: whole or not at all.

`atomic_file(path)` gives a temp file in the target's directory (`.<name>.virsim-tmp-<random>`);
on success it is flushed, fsynced, renamed over `path` and the directory fsynced, so a reader (or
a crash) sees the old file or the whole new one, never a part. On any failure the temp file is
removed. A crash (kill -9) can leave only temp files, which `remove_debris` deletes when the
daemon starts. A full disk or a write refused by the file system is a StorageError naming the
file (`storage_error`), not an INTERNAL.
"""

from __future__ import annotations

import errno
import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from virsim.errors import StorageError

TMP_MARK = ".virsim-tmp-"
NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def storage_error(err: OSError, path: Path | str, what: str = "write") -> StorageError:
    """`err` from writing `path`, as the error a user can act on."""
    reason = "the disk is full" if err.errno in (errno.ENOSPC, errno.EDQUOT) else (err.strerror or str(err))
    return StorageError(f"cannot {what} {path}: {reason}; nothing was changed", path=str(path), reason=reason)


def as_storage_error(err: BaseException) -> StorageError | None:
    """`err` as a StorageError when it says the disk is full or the store cannot be written
    (from the file system or from SQLite); None for anything else."""
    if isinstance(err, StorageError):
        return err
    if isinstance(err, OSError) and err.errno in NO_SPACE:
        return storage_error(err, err.filename or "a file")
    if isinstance(err, sqlite3.OperationalError) and any(
            text in str(err) for text in ("full", "readonly", "disk I/O error", "unable to open")):
        reason = "the disk is full" if "full" in str(err) else str(err)
        return StorageError(f"cannot write virsim's store: {reason}; nothing was changed", reason=reason)
    return None


@contextmanager
def atomic_file(path: Path | str, mode: str = "wb", durable: bool = True) -> Iterator[IO[Any]]:
    """Write `path` through the yielded file object; it appears whole when the block ends."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{secrets.token_hex(4)}")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            _fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise storage_error(err, path) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path | str, data: bytes | str, durable: bool = True) -> int:
    """Write all of `data` to `path` atomically; its size."""
    raw = data.encode() if isinstance(data, str) else data
    with atomic_file(path, "wb", durable) as f:
        f.write(raw)
    return len(raw)


def remove_debris(root: Path) -> list[Path]:
    """Delete the temp files a crash left below `root`; the paths removed."""
    removed = []
    if not root.exists():
        return removed
    for tmp in root.rglob(f"*{TMP_MARK}*"):
        try:
            if tmp.is_file():
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
