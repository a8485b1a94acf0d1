"""Per-request timeline: one row per finished request on a shared time axis.

A bar shows the request's life: queued (due -> sent, dim dots), waiting for its first token
(sent -> first token, light shade), streaming (first token -> done, full block); green when it
succeeded, red when it failed. Line API (ScrollView): only the visible rows are drawn, so a run of
thousands of requests costs the same per refresh as a run of twenty. Enter on a row posts
`RequestTimeline.Selected` with the record (the screen shows its token gaps).
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from loadgen import RequestRecord

LABEL_WIDTH = 30
OK, FAILED = "green", "red"


def outcome(record: RequestRecord) -> str:
    return "ok" if record.ok else (record.error_kind or "failed")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def label(record: RequestRecord) -> str:
    text = f"#{record.index:<5}{outcome(record)[:7]:<8}{_ms(record.ttft):>6}{_ms(record.e2el):>8} "
    return text[:LABEL_WIDTH].ljust(LABEL_WIDTH)


def bar_cells(record: RequestRecord, t0: float, t1: float, width: int) -> list[tuple[str, str]]:
    """(char, phase) per cell; phase is '' (idle), 'queued', 'waiting' or 'streaming'."""
    span = max(t1 - t0, 1e-9)

    def col(t: float | None) -> int | None:
        return None if t is None else min(width - 1, max(0, int((t - t0) / span * width)))

    due, sent = col(record.scheduled_time), col(record.send_time)
    first = col(record.first_token_time)
    end = col(record.end_time or record.last_token_time)
    cells = [(" ", "")] * width
    if due is None or sent is None:
        return cells
    stop = end if end is not None else sent
    for x in range(due, max(stop, due + 1)):  # a cell is [x, x+1) of the axis; at least one drawn
        if x < sent:
            cells[x] = ("·", "queued")
        elif first is None or x < first:
            cells[x] = ("░", "waiting")
        else:
            cells[x] = ("█", "streaming")
    return cells


class RequestTimeline(ScrollView, can_focus=True):
    """Rows appear as requests finish; the time axis spans the run so far."""

    BINDINGS = [Binding("up", "cursor(-1)", "Up", show=False), Binding("down", "cursor(1)", "Down", show=False),
                Binding("pageup", "cursor(-10)", show=False), Binding("pagedown", "cursor(10)", show=False),
                Binding("enter", "select", "Token gaps")]
    cursor = reactive(0)

    class Selected(Message):
        def __init__(self, record: RequestRecord) -> None:
            super().__init__()
            self.record = record

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.records: list[RequestRecord] = []
        self.t0: float | None = None
        self.t1: float | None = None

    def clear(self) -> None:
        self.records, self.t0, self.t1 = [], None, None
        self.cursor = 0
        self._resize()

    def add(self, records: list[RequestRecord]) -> None:
        """Append finished requests (a batch per UI refresh, not one message per request)."""
        if not records:
            return
        self.records.extend(records)
        starts = [r.scheduled_time for r in records]
        ends = [r.end_time or r.last_token_time or r.scheduled_time for r in records]
        self.t0 = min(starts) if self.t0 is None else min(self.t0, *starts)
        self.t1 = max(ends) if self.t1 is None else max(self.t1, *ends)
        self._resize()

    def _resize(self) -> None:
        self.virtual_size = Size(self.size.width, len(self.records))
        self.refresh()

    @property
    def selected(self) -> RequestRecord | None:
        return self.records[self.cursor] if 0 <= self.cursor < len(self.records) else None

    def action_cursor(self, delta: int) -> None:
        if self.records:
            self.cursor = max(0, min(len(self.records) - 1, self.cursor + delta))

    def watch_cursor(self, old: int, new: int) -> None:
        if new < self.scroll_y:
            self.scroll_to(y=new, animate=False)
        elif new >= self.scroll_y + self.size.height:
            self.scroll_to(y=new - self.size.height + 1, animate=False)
        self.refresh()

    def action_select(self) -> None:
        if self.selected is not None:
            self.post_message(self.Selected(self.selected))

    def on_click(self, event) -> None:
        row = int(self.scroll_y) + event.y
        if 0 <= row < len(self.records):
            self.cursor = row
            self.action_select()

    def render_line(self, y: int) -> Strip:
        row = int(self.scroll_y) + y
        width = self.size.width
        if row >= len(self.records) or self.t0 is None or self.t1 is None:
            return Strip.blank(width)
        record = self.records[row]
        colour = OK if record.ok else FAILED
        base = Style(reverse=True) if row == self.cursor and self.has_focus else (
            Style(bold=True) if row == self.cursor else Style())
        segments = [Segment(label(record), base + Style(color=colour))]
        styles = {"queued": Style(color="grey50"), "waiting": Style(color=colour, dim=True),
                  "streaming": Style(color=colour), "": Style()}
        for char, phase in bar_cells(record, self.t0, self.t1, max(1, width - LABEL_WIDTH)):
            segments.append(Segment(char, styles[phase]))
        return Strip(segments).crop(0, width)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def on_resize(self) -> None:
        self._resize()


def header(width: int) -> str:
    return f"{'req':<6}{'outcome':<8}{'ttft':>6}{'e2e ms':>8}  queued · waiting ░ streaming █"[:width]
