"""A small time chart drawn with block characters: the last minutes of one series, one
column per time slot, with event marks (breaches, restarts) on a row underneath. Plain Rich
text, so it is cheap to redraw once a second and renders the same in a snapshot."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

BLOCKS = " ▁▂▃▄▅▆▇█"
MARK_STYLES = {"breach": "bold red", "recovered": "green", "restart": "yellow",
               "failed": "bold red", "scrape_failed": "magenta", "unreachable": "magenta"}


def bucket(points: list[tuple[float, float]], t0: float, t1: float,
           width: int) -> list[float | None]:
    """The last value in each of `width` equal time slots of [t0, t1)."""
    cols: list[float | None] = [None] * width
    span = (t1 - t0) / width
    for t, v in points:
        if t0 <= t < t1:
            cols[min(int((t - t0) / span), width - 1)] = v
    return cols


def draw(cols: list[float | None], height: int, top: float, style: str) -> list[Text]:
    """Rows, top first, of bars scaled so that `top` fills the height."""
    rows = [Text() for _ in range(height)]
    for v in cols:
        eighths = 0 if v is None or top <= 0 else round(max(v, 0.0) / top * height * 8)
        for r in range(height):
            level = min(max(eighths - (height - 1 - r) * 8, 0), 8)
            rows[r].append(BLOCKS[level], style=style if v is not None else "")
    return rows


def marks(events: list[tuple[float, str]], t0: float, t1: float, width: int) -> Text:
    row = [(" ", "")] * width
    span = (t1 - t0) / width
    for t, kind in events:
        if t0 <= t < t1:
            row[min(int((t - t0) / span), width - 1)] = ("▲", MARK_STYLES.get(kind, "cyan"))
    text = Text()
    for ch, style in row:
        text.append(ch, style=style)
    return text


class Chart(Widget):
    """Set `data` = (points, events, t0, t1); the chart scales to the largest value shown."""

    DEFAULT_CSS = """
    Chart { height: 4; width: 1fr; }
    """
    data: reactive[tuple] = reactive((), layout=False)

    def __init__(self, style: str = "cyan", **kwargs) -> None:
        super().__init__(**kwargs)
        self.style_name = style

    def render(self) -> Text:
        width = max(self.size.width, 1)
        height = max(self.size.height - 1, 1)
        if not self.data:
            return Text("\n" * height)
        points, events, t0, t1 = self.data
        cols = bucket(points, t0, t1, width)
        top = max((v for v in cols if v is not None), default=0.0)
        rows = draw(cols, height, top * 1.05 if top > 0 else 1.0, self.style_name)
        rows.append(marks(events, t0, t1, width))
        return Text("\n").join(rows)
