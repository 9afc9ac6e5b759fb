"""How every client shows and takes bytes: the hex + ASCII dump of memory (`virsim debug mem`, the
TUI's memory pane) and C-style escapes in text typed for a UART (`virsim console --send`, the TUI's
console input)."""

from __future__ import annotations

import codecs


def hexdump_lines(address: int, data: bytes) -> list[str]:
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{address + off:08x}  {hexes:<47}  |{text}|")
    return lines


def unescape(text: str) -> bytes:
    r"""`hi\n` -> b"hi\n" (C-style escapes as people write them in YAML and shells). `\xNN` is
    that byte; a character beyond latin-1 (`€`) is its UTF-8 encoding."""
    decoded = codecs.decode(text.encode("latin-1", "backslashreplace"), "unicode_escape")
    return b"".join(bytes([ord(ch)]) if ord(ch) < 256 else ch.encode() for ch in decoded)
