"""A live histogram: horizontal bars per latency bucket (the server's Prometheus buckets
over the window, or the client's values binned on the same bounds)."""

from __future__ import annotations

import math

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget


def fmt_bound(le_s: float) -> str:
    if math.isinf(le_s):
        return "+Inf"
    ms = le_s * 1000.0
    return f"{ms:g}ms" if ms < 1000 else f"{ms / 1000:g}s"


def trim(rows: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """Drop empty buckets at both ends so the bars use the space."""
    nonzero = [i for i, (_, n) in enumerate(rows) if n]
    return rows[nonzero[0]:nonzero[-1] + 1] if nonzero else []


class Histogram(Widget):
    """Set `rows` = [(upper bound in s, count), ...]."""

    DEFAULT_CSS = """
    Histogram { height: 10; width: 1fr; }
    """
    rows: reactive[tuple] = reactive(())

    def __init__(self, title: str, style: str = "green", **kwargs) -> None:
        super().__init__(**kwargs)
        self.title, self.style_name = title, style

    def render(self) -> Text:
        text = Text(self.title + "\n", style="bold")
        rows = trim(list(self.rows))
        if not rows:
            return text + Text("no observations in the window", style="dim")
        rows = rows[-(max(self.size.height - 1, 1)):]
        peak = max(n for _, n in rows) or 1
        bar_w = max(self.size.width - 18, 1)
        lines = []
        for le, n in rows:
            bar = "█" * max(round(n / peak * bar_w), 1 if n else 0)
            line = Text(f"≤{fmt_bound(le):>7} ")
            line.append(bar, style=self.style_name)
            line.append(f" {n}")
            lines.append(line)
        return text + Text("\n").join(lines)
