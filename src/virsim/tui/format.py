"""Short human forms of durations, virtual time, speeds and hex dumps, as the panes print them."""

from __future__ import annotations


def duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def vtime(ns: int | None) -> str:
    if ns is None:
        return ""
    return f"{ns / 1e9:.6f} s"


def rate(per_s: float | None) -> str:
    if per_s is None:
        return ""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if per_s >= scale:
            return f"{per_s / scale:.1f} {unit}"
    return f"{per_s:.0f}"
