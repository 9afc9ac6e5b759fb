"""What virsim takes in from outside is bounded before it is used: the one input-limits layer.

- Files a user names (boards, scenarios, firmware, program images, snapshots, recordings) are read
  with `read_file`: regular files only (a FIFO would block the daemon, a device never ends), at most
  the cap of their kind, and never read past it. Text files are UTF-8 (`decode_text` names the line
  of a bad byte).
- Strings that become paths hold no NUL and name something the file system can encode
  (`check_path`, used by the protocol's `PathStr` and by the CLI).
- Wire payloads are walked once when decoded (`check_payload`): nesting depth, lone surrogates,
  integers SQLite can store, finite numbers, so a malformed frame is an INVALID_INPUT naming its
  field, never an INTERNAL from deep inside a handler.
- YAML documents are composed, then their size with aliases expanded is counted before anything
  is built from them (`yaml_node`): an alias bomb is refused in microseconds.

Error details carry bounded values (errors.clip), never the unbounded input.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from virsim.errors import InvalidInput, clip

KiB, MiB, GiB = 1024, 1024 * 1024, 1024 * 1024 * 1024

# The most virsim reads of each kind of file. A hand-written board or scenario is a few KiB; an ELF
# with full debug info for a large Cortex-M image is tens of MiB; an exported snapshot carries a
# QEMU disk image with the VM state.
FILE_LIMITS: dict[str, int] = {
    "board file": 1 * MiB,
    "scenario file": 1 * MiB,
    "firmware file": 256 * MiB,
    "snapshot file": 4 * GiB,
    "recording": 4 * GiB,
    "Renode platform": 1 * MiB,  # a stock .repl a board names, and each file it uses
    "SVD file": 64 * MiB,  # renode.svd
    "source file": 512 * KiB,  # program.source sends it whole, in a reply under the 1 MiB frame
}
MAX_DEPTH = 32  # nesting of a wire payload (the deepest request is 4 levels)
MAX_PATH = 4096  # PATH_MAX
MAX_YAML_NODES = 100_000  # a board with 64 nodes and every option set is under 5,000
INT64 = 2**63


def path_problem(value: str) -> str | None:
    """What makes `value` no path at all (a NUL, a name the file system cannot encode, longer
    than PATH_MAX), or None."""
    if "\x00" in value:
        return "a path cannot contain a NUL byte"
    try:
        encoded = os.fsencode(value)
    except UnicodeEncodeError as err:
        return f"{clip(value)!r} is not a file name this system can encode ({err.reason} at character {err.start})"
    if len(encoded) > MAX_PATH:
        return f"a path of {len(encoded)} bytes is longer than the {MAX_PATH}-byte limit"
    return None


def check_path(value: str, field: str) -> str:
    """`value` as a path named by `field`; InvalidInput naming the field when it is none."""
    problem = path_problem(value)
    if problem:
        raise InvalidInput(f"{field}: {problem}", field=field, value=clip(value))
    return value


def read_file(path: str | Path, kind: str, *, error: type[InvalidInput] = InvalidInput,
              field: str | None = None, limit: int | None = None) -> bytes:
    """The bytes of the regular file `path`, a `kind` (a FILE_LIMITS key) the user named; `error`
    (naming the file, and `field` when given) when it is missing, not a regular file or too big."""
    cap = FILE_LIMITS[kind] if limit is None else limit
    where = f"{field}: " if field else ""
    check_path(str(path), field or kind)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOCTTY: a tty stays not ours.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(f"{where}{kind} {path} does not exist", file=str(path), field=field) from None
    except IsADirectoryError:
        raise error(f"{where}{kind} {path} is a directory, not a file", file=str(path), field=field) from None
    except OSError as err:
        raise error(f"{where}cannot read {kind} {path}: {err.strerror}", file=str(path), field=field) from None
    try:
        _check_stat(os.fstat(fd), path, kind, cap, error, field)
        os.set_blocking(fd, True)
        chunks, total = [], 0
        while total <= cap:  # a file that grows while read still stops at the cap
            chunk = os.read(fd, min(1 * MiB, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > cap:
            raise error(f"{where}{kind} {path} is more than the {_size(cap)} limit for a {kind}", file=str(path),
                        field=field, limit=cap)
        return b"".join(chunks)
    except OSError as err:
        raise error(f"{where}cannot read {kind} {path}: {err.strerror}", file=str(path), field=field) from None
    finally:
        os.close(fd)


def open_checked(path: str | Path, kind: str, *, error: type[InvalidInput] = InvalidInput,
                 field: str | None = None) -> None:
    """Refuse `path` as `read_file` would, without reading it: for a file a reader opens itself
    (an ELF parsed in place, a snapshot streamed section by section)."""
    cap = FILE_LIMITS[kind]
    check_path(str(path), field or kind)
    where = f"{field}: " if field else ""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{where}{kind} {path} does not exist", file=str(path), field=field) from None
    except OSError as err:
        raise error(f"{where}cannot read {kind} {path}: {err.strerror}", file=str(path), field=field) from None
    _check_stat(st, path, kind, cap, error, field)


def _check_stat(st: os.stat_result, path: str | Path, kind: str, cap: int, error: type[InvalidInput],
                field: str | None) -> None:
    where = f"{field}: " if field else ""
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{where}{kind} {path} is {_file_type(st.st_mode)}, not a regular file", file=str(path),
                    field=field)
    if st.st_size > cap:
        raise error(f"{where}{kind} {path} is {st.st_size} bytes, more than the {_size(cap)} limit for a {kind}",
                    file=str(path), field=field, size=st.st_size, limit=cap)


def decode_text(data: bytes, source: str, *, error: type[InvalidInput] = InvalidInput) -> str:
    """`data` as UTF-8 text; `error` naming the line and byte of the first invalid sequence."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise error(f"{source}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})",
                    file=source, line=line, offset=err.start) from None


def read_text(path: str | Path, kind: str, *, error: type[InvalidInput] = InvalidInput) -> str:
    return decode_text(read_file(path, kind, error=error), str(path), error=error)


def check_payload(value: Any, where: str = "payload", depth: int = 0) -> None:
    """Refuse what no request field can hold and what would fail deep inside a handler: nesting
    past MAX_DEPTH, lone surrogates (not text), integers outside SQLite's 64 bits, NaN/infinity."""
    if depth > MAX_DEPTH:
        raise InvalidInput(f"{where}: nested more than {MAX_DEPTH} levels deep", field=where)
    if isinstance(value, str):
        _check_text(value, where)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not -INT64 <= value < INT64:
            raise InvalidInput(f"{where}: {clip(value)} is out of range (a 64-bit signed integer)", field=where)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{where}: {value} is not a finite number", field=where)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, f"{where} (a key)")
            check_payload(item, f"{where}.{clip(key, 40)}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_payload(item, f"{where}[{i}]", depth + 1)


def _check_text(value: str, where: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        code = ord(value[err.start])
        what = (f"byte 0x{code - 0xDC00:02X} is not UTF-8 (a file name in another encoding?)"
                if 0xDC80 <= code <= 0xDCFF else f"a lone surrogate U+{code:04X}")
        raise InvalidInput(f"{where}: not text: {what}, at character {err.start}", field=where) from None


def yaml_node(text: str, source: str, *, error: type[InvalidInput] = InvalidInput) -> yaml.Node | None:
    """The composed YAML document of `text`, refused when aliases would expand it past
    MAX_YAML_NODES nodes, when an alias refers to itself, or when it nests too deeply to compose."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise error(f"{source}: nested too deeply to be a board or scenario", file=source) from None
    if root is None:
        return None
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise error(f"{source}:{node.start_mark.line + 1}: an alias refers to the node that contains it",
                        file=source, line=node.start_mark.line + 1)
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
                if total > MAX_YAML_NODES:
                    break
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += size(item)
                if total > MAX_YAML_NODES:
                    break
        open_nodes.discard(key)
        sizes[key] = total
        if total > MAX_YAML_NODES:
            raise error(f"{source}: with its aliases expanded the document has more than {MAX_YAML_NODES} values "
                        "(an alias bomb?)", file=source, limit=MAX_YAML_NODES)
        return total

    try:
        size(root)
    except RecursionError:
        raise error(f"{source}: nested too deeply to be a board or scenario", file=source) from None
    return root


def _size(n: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


def _file_type(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"
