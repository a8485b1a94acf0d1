"""Per-request timeline: one row per request on a shared time axis, from the moment it is sent.

A bar shows the request's life: queued (due -> sent, dim dots), waiting for its first token
(sent -> first token, light shade), streaming (first token -> done, full block). A request in
flight is cyan and its bar grows to now; when it ends its row turns green (ok) or red (failed);
rows still in flight when a run stops turn grey (cancelled). Line API (ScrollView): only the
visible rows are drawn, and loadgen's events arrive in batches (one refresh per batch), so a run
of thousands of requests costs the same per refresh as a run of twenty. Enter on a row posts
`RequestTimeline.Selected` with the record (the screen shows its token gaps).
"""

from __future__ import annotations

from typing import Iterable

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from loadgen import FirstToken, RequestDone, RequestRecord, RequestSent

LABEL_WIDTH = 30
OK, FAILED, LIVE, CANCELLED = "green", "red", "cyan", "grey50"


def is_live(record: RequestRecord) -> bool:
    """Sent and not ended yet (a row built from RequestSent, before its RequestDone)."""
    return record.end_time is None and record.error_kind is None


def outcome(record: RequestRecord) -> str:
    if record.ok:
        return "ok"
    if is_live(record):
        return "waiting" if record.first_token_time is None else "streaming"
    return record.error_kind or "failed"


def colour(record: RequestRecord) -> str:
    if record.ok:
        return OK
    if is_live(record):
        return LIVE
    return CANCELLED if record.error_kind == "cancelled" else FAILED


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def label(record: RequestRecord) -> str:
    text = f"#{record.index:<5}{outcome(record)[:7]:<8}{_ms(record.ttft):>6}{_ms(record.e2el):>8} "
    return text[:LABEL_WIDTH].ljust(LABEL_WIDTH)


def bar_cells(record: RequestRecord, t0: float, t1: float, width: int,
              now: float | None = None) -> list[tuple[str, str]]:
    """(char, phase) per cell; phase is '' (idle), 'queued', 'waiting' or 'streaming'. A request
    in flight is drawn up to `now`."""
    span = max(t1 - t0, 1e-9)

    def col(t: float | None) -> int | None:
        return None if t is None else min(width - 1, max(0, int((t - t0) / span * width)))

    due, sent = col(record.scheduled_time), col(record.send_time)
    first = col(record.first_token_time)
    end = col(record.end_time or record.last_token_time)
    if end is None and now is not None:  # in flight: up to now's cell, included (it is under way)
        end = min(width, col(now) + 1)
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


def sent_record(event: RequestSent) -> RequestRecord:
    """The row of a request in flight: a record holding what is known so far."""
    return RequestRecord(event.request_id, event.point, event.index, event.is_warmup,
                         scheduled_time=event.due_time, send_time=event.send_time,
                         dispatch_time=event.dispatch_time)


class RequestTimeline(ScrollView, can_focus=True):
    """Rows appear as requests are sent, in that order; the time axis spans the run so far."""

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
        self.now: float | None = None  # where bars in flight end
        self._rows: dict[str, int] = {}  # request id -> row
        self._live: set[str] = set()  # request ids sent and not done

    def clear(self) -> None:
        self.records, self.t0, self.t1, self.now = [], None, None, None
        self._rows, self._live = {}, set()
        self.cursor = 0
        self._resize()

    @property
    def num_live(self) -> int:
        return len(self._live)

    def get(self, request_id: str) -> RequestRecord | None:
        row = self._rows.get(request_id)
        return None if row is None else self.records[row]

    def apply(self, events: Iterable[object], now: float | None = None) -> set[str]:
        """Loadgen's request events in the order they came (a batch per UI refresh, not one
        message per event); returns the ids of the requests that ended in the batch."""
        ended: set[str] = set()
        for event in events:
            if isinstance(event, RequestSent):
                self._append(sent_record(event))
                self._live.add(event.request_id)
            elif isinstance(event, FirstToken):
                if (record := self.get(event.request_id)) is not None and is_live(record):
                    record.first_token_time = event.time
            elif isinstance(event, RequestDone):
                self._finish(event.record)
                ended.add(event.record.request_id)
        self.tick(now)
        return ended

    def add(self, records: list[RequestRecord]) -> None:
        """Finished requests (a row each, or the end of the row their RequestSent opened)."""
        for record in records:
            self._finish(record)
        self.tick(self.now)

    def tick(self, now: float | None) -> None:
        """Move the bars in flight up to `now` and redraw (once, whatever changed before)."""
        if now is not None:
            self.now = now
            if self._live and self.t1 is not None:
                self.t1 = max(self.t1, now)
        self._resize()

    def end_run(self, now: float) -> None:
        """A run is over: requests still in flight were cancelled and will get no RequestDone."""
        for request_id in self._live:
            record = self.records[self._rows[request_id]]
            record.error_kind, record.error, record.end_time = "cancelled", "cancelled when the run stopped", now
        self._live.clear()
        self.tick(now)

    def _append(self, record: RequestRecord) -> None:
        self._rows[record.request_id] = len(self.records)
        self.records.append(record)
        self._extend(record.scheduled_time, record.send_time or record.scheduled_time)

    def _finish(self, record: RequestRecord) -> None:
        row = self._rows.get(record.request_id)
        if row is None:
            self._append(record)
        else:
            self.records[row] = record
        self._live.discard(record.request_id)
        self._extend(record.scheduled_time, record.end_time or record.last_token_time or record.scheduled_time)

    def _extend(self, start: float, end: float) -> None:
        self.t0 = start if self.t0 is None else min(self.t0, start)
        self.t1 = end if self.t1 is None else max(self.t1, end)

    def _resize(self) -> None:
        if self.virtual_size.height != len(self.records) or self.virtual_size.width != self.size.width:
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
        hue = colour(record)
        base = Style(reverse=True) if row == self.cursor and self.has_focus else (
            Style(bold=True) if row == self.cursor else Style())
        segments = [Segment(label(record), base + Style(color=hue))]
        styles = {"queued": Style(color="grey50"), "waiting": Style(color=hue, dim=True),
                  "streaming": Style(color=hue), "": Style()}
        for char, phase in bar_cells(record, self.t0, self.t1, max(1, width - LABEL_WIDTH), self.now):
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
