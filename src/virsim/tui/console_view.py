"""ConsoleView: a bounded scrollback of console lines that costs the UI thread almost nothing per
line. Textual's Log measures and refreshes every line it is given (30 ms for 400 short lines on
this machine); ConsoleView only appends to a deque and draws the lines on screen, so a console
streaming faster than anyone reads never makes keystrokes wait."""

from __future__ import annotations

from collections import deque

from rich.segment import Segment
from textual.binding import Binding
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip


class ConsoleView(ScrollView, can_focus=True):
    BINDINGS = [Binding("end", "follow", "Follow output", show=False)]

    def __init__(self, max_lines: int, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.lines: deque[str] = deque(maxlen=max_lines)
        self.partial = ""  # the last line, until its newline arrives
        self.follow = True  # keep the end in view (off while the user looks back)
        self._width = 0

    @property
    def line_count(self) -> int:
        return len(self.lines) + (1 if self.partial else 0)

    def all_lines(self) -> list[str]:
        return [*self.lines, *([self.partial] if self.partial else [])]

    def write(self, text: str) -> None:
        parts = (self.partial + text).split("\n")
        self.partial = parts.pop()
        evicted = max(0, len(self.lines) + len(parts) - (self.lines.maxlen or 0))
        self.lines.extend(parts)
        self._width = max(self._width, len(self.partial), *(len(p) for p in parts[-200:])) if parts else \
            max(self._width, len(self.partial))
        self.virtual_size = Size(self._width, len(self.lines) + 1)
        if self.follow:
            self.scroll_to(y=max(0, self.virtual_size.height - self.size.height), animate=False, immediate=True)
        elif evicted:  # keep the lines the user is reading where they are
            self.scroll_to(y=max(0, self.scroll_offset.y - evicted), animate=False, immediate=True)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        count = len(self.lines)
        text = self.lines[index] if index < count else (self.partial if index == count else "")
        width = self.size.width
        return Strip([Segment(text[scroll_x:scroll_x + width].ljust(width), self.rich_style)], width)

    def show_line(self, index: int) -> None:
        """Scroll so that line `index` is at the top, and stop following the output."""
        self.follow = False
        self.scroll_to(y=index, animate=False)

    def action_follow(self) -> None:
        self.follow = True
        self.scroll_end(animate=False)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        # scrolled up by the user: stop following; back at the end: follow again
        self.follow = new >= self.max_scroll_y
