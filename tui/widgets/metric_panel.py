"""One number on the Monitor: title, current value, and its chart of the last minutes.
Focusable, so `?` can explain the focused one."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label

from tui.widgets.chart import Chart


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "%":
        return f"{value:.1f}%"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"
    if unit in ("", "blocks"):
        return f"{value:.0f} {unit}".strip()
    return f"{value:.1f} {unit}"


class MetricPanel(Vertical, can_focus=True):
    DEFAULT_CSS = """
    MetricPanel { height: 6; border: round $panel; padding: 0 1; }
    MetricPanel:focus { border: round $accent; }
    MetricPanel .value { text-style: bold; }
    MetricPanel Chart { height: 1fr; }
    """

    def __init__(self, key: str, title: str, unit: str, style: str = "cyan") -> None:
        super().__init__(id=f"m-{key}")
        self.key, self.unit, self.chart_style = key, unit, style
        self.border_title = title
        self.samples = 0

    def compose(self) -> ComposeResult:
        yield Label("—", classes="value")
        yield Chart(self.chart_style)

    def show(self, value: float | None, points: list, events: list, t0: float, t1: float) -> None:
        self.samples = len(points)
        self.query_one(".value", Label).update(fmt(value, self.unit))
        self.query_one(Chart).data = (points, events, t0, t1)
