"""CMSIS-SVD device descriptions: the peripherals, registers and bit fields a vendor's SVD file
names, as plain dicts (what `session show` sends for a board node that names an SVD file, and the
TUI's peripheral view decodes registers with).

Read: `peripheral` (name, baseAddress, derivedFrom: the registers of another peripheral),
`register` (name, addressOffset, access, readAction: a read that changes the device), `field`
(name and bitOffset/bitWidth, lsb/msb or bitRange "[msb:lsb]"). Register clusters and arrays
(`dim`) are not expanded: their registers are left out."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from virsim import limits
from virsim.errors import InvalidInput


def _int(text: str | None, where: str) -> int:
    if text is None:
        raise InvalidInput(f"{where}: missing", field=where)
    value = text.strip().lower()
    try:
        return int(value[1:], 2) if value.startswith("#") else int(value, 0)
    except ValueError:
        raise InvalidInput(f"{where}: {text!r} is not a number", field=where, value=text) from None


def _field(el: ElementTree.Element, where: str) -> dict[str, Any]:
    name = (el.findtext("name") or "?").strip()
    if el.find("bitOffset") is not None:
        lsb, width = _int(el.findtext("bitOffset"), where), _int(el.findtext("bitWidth") or "1", where)
    elif el.find("lsb") is not None:
        lsb = _int(el.findtext("lsb"), where)
        width = _int(el.findtext("msb"), where) - lsb + 1
    else:
        msb_lsb = (el.findtext("bitRange") or "").strip("[] \n").split(":")
        if len(msb_lsb) != 2:
            raise InvalidInput(f"{where}: field {name} has no bitOffset, lsb/msb or bitRange", field=where)
        lsb = _int(msb_lsb[1], where)
        width = _int(msb_lsb[0], where) - lsb + 1
    return {"name": name, "lsb": lsb, "width": width}


def _registers(el: ElementTree.Element, where: str) -> list[dict[str, Any]]:
    out = []
    for reg in el.findall("registers/register"):
        if reg.find("dim") is not None:
            continue
        name = (reg.findtext("name") or "?").strip()
        here = f"{where}.{name}"
        access = (reg.findtext("access") or "").strip()
        out.append({"name": name, "offset": _int(reg.findtext("addressOffset"), here),
                    "read": access != "write-only" and reg.find("readAction") is None,
                    "fields": [_field(f, here) for f in reg.findall("fields/field")]})
    return sorted(out, key=lambda r: r["offset"])


def parse(path: str | Path) -> list[dict[str, Any]]:
    """Every peripheral of the SVD file: {name, address, registers: [{name, offset, read, fields:
    [{name, lsb, width}]}]}. InvalidInput names the file and the element when it cannot be read."""
    data = limits.read_file(path, "SVD file")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as err:
        raise InvalidInput(f"{path}: not an SVD file ({err})", file=str(path)) from None
    found: dict[str, dict[str, Any]] = {}
    derived: list[tuple[dict[str, Any], str]] = []
    for el in root.findall("peripherals/peripheral"):
        name = (el.findtext("name") or "?").strip()
        entry = {"name": name, "address": _int(el.findtext("baseAddress"), f"{path}: {name}.baseAddress"),
                 "registers": _registers(el, f"{path}: {name}")}
        found[name] = entry
        if el.get("derivedFrom") and not entry["registers"]:
            derived.append((entry, el.get("derivedFrom") or ""))
    for entry, base in derived:
        if base not in found:
            raise InvalidInput(f"{path}: {entry['name']} is derived from {base!r}, which the file does not have",
                               file=str(path), field=entry["name"])
        entry["registers"] = found[base]["registers"]
    return list(found.values())
