"""A stock Renode platform (`renode.platform` of a board node), read as far as virsim needs it.

Stock platforms are .repl files that pull in others (`using "./x.repl"`, relative to the file, or
`using "platforms/cpus/y.repl"`, relative to Renode's folder). virsim reads that chain for two
things:

- what Renode will run for the node (`board show`): each peripheral on the system bus, its model
  and address, so a board's peripheral can be matched to the model at its address;
- the system bus's `init` section as Renode merges it (a later `init:` replaces, `init add:`
  appends): stock platforms apply SVD register descriptions downloaded at load time
  (`ApplySVD @https://…`), which cannot work offline — and never does in Renode's jail, which has
  no network. `derived()` is the platform virsim loads instead: the stock one, its init without
  the downloads, and a local SVD file the board names (`renode.svd`) applied instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from virsim import limits

_USING = re.compile(r'^using\s+"([^"]+)"')
_ENTRY = re.compile(r"^([A-Za-z_][\w]*)\s*:\s*([A-Za-z_][\w.]*)?\s*(?:@\s*(\w+)\s*<?\s*(0x[0-9A-Fa-f]+|\d+))?")
_INIT = re.compile(r"^(\s+)init(\s+add)?\s*:\s*$")
_REMOTE_SVD = re.compile(r"^\s*ApplySVD\s+@(https?|ftp)://", re.I)


@dataclass
class StockPlatform:
    path: Path
    files: list[Path] = field(default_factory=list)  # the chain, in the order Renode reads it
    models: dict[str, tuple[str, int | None]] = field(default_factory=dict)  # name -> (model, sysbus address)
    sysbus_init: list[str] = field(default_factory=list)  # as merged
    downloads: list[str] = field(default_factory=list)  # the init lines that download an SVD

    def model_at(self, address: int) -> str | None:
        """`name (Model)` of the peripheral registered on the system bus at `address`."""
        for name, (model, at) in self.models.items():
            if at == address:
                return f"{name} ({model})"
        return None


def read(path: Path, root: Path) -> StockPlatform:
    """The platform at `path` with every file it uses (Renode's folder `root` resolves the others)."""
    out = StockPlatform(path)
    _read(path, root, out, depth=0)
    out.downloads = [line.strip() for line in out.sysbus_init if _REMOTE_SVD.match(line)]
    return out


def _read(path: Path, root: Path, out: StockPlatform, depth: int) -> None:
    if depth > 16 or path in out.files:
        return
    out.files.append(path)
    lines = limits.read_text(path, "Renode platform").splitlines()
    for line in lines:
        m = _USING.match(line)
        if m:
            name = m.group(1)
            _read((path.parent / name) if name.startswith(".") else (root / name), root, out, depth + 1)
    entry = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line and not line[0].isspace() and not line.startswith(("//", "using")):
            m = _ENTRY.match(line)
            entry = m.group(1) if m else None
            if m and m.group(2) and m.group(3) == "sysbus":
                out.models[entry] = (m.group(2), int(m.group(4), 0) if m.group(4) else None)
        init = _INIT.match(line)
        if init and entry == "sysbus":
            indent = len(init.group(1))
            body = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                if lines[i].strip():
                    body.append(lines[i].strip())
                i += 1
            out.sysbus_init = out.sysbus_init + body if init.group(2) else body
            continue
        i += 1


def derived(stock: StockPlatform, svd: Path | None) -> str:
    """The platform virsim loads for a stock one: the stock platform by its absolute path, and its
    system bus's init again (which replaces the stock one) without the SVD downloads, with `svd`
    applied instead when the board names one."""
    init = [line for line in stock.sysbus_init if not _REMOTE_SVD.match(line)]
    if svd is not None:
        init.insert(0, f"ApplySVD @{svd}")
    text = [f'// virsim: {stock.path} without the SVD downloads of its init (Renode runs offline)',
            f'using "{stock.path}"', ""]
    if init and init != stock.sysbus_init:  # (an init left empty keeps the stock one: downloads fail at once offline)
        text += ["sysbus:", "    init:"] + [f"        {line}" for line in init]
    return "\n".join(text) + "\n"
