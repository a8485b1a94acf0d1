"""Trials on throughput vs TTFT p99 (textual-plotext), the Pareto front drawn apart, and a cursor
on one trial: left/right step along the plotted trials, and the chosen one is posted so the
trials table follows (the table's cursor moves this one too)."""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual_plotext import PlotextPlot

from tui.tune_runner import TrialRow, pareto_front


class ParetoChart(PlotextPlot, can_focus=True):
    BINDINGS = [Binding("left", "step(-1)", "Prev trial", show=False),
                Binding("right", "step(1)", "Next trial", show=False)]

    class CursorMoved(Message):
        def __init__(self, row: TrialRow) -> None:
            super().__init__()
            self.row = row

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.points: list[TrialRow] = []  # plotted trials, by TTFT p99
        self.front: list[TrialRow] = []
        self.cursor: int | None = None  # trial number under the cursor

    def set_rows(self, rows: list[TrialRow]) -> None:
        self.points = sorted((r for r in rows if r.state == "COMPLETE" and r.throughput is not None
                              and r.latency_ms is not None), key=lambda r: (r.latency_ms, r.number))
        self.front = pareto_front(rows)
        self.redraw()

    def set_cursor(self, number: int | None) -> None:
        if number != self.cursor:
            self.cursor = number
            self.redraw()

    @property
    def current(self) -> TrialRow | None:
        return next((r for r in self.points if r.number == self.cursor), None)

    def action_step(self, delta: int) -> None:
        if not self.points:
            return
        numbers = [r.number for r in self.points]
        i = numbers.index(self.cursor) + delta if self.cursor in numbers else 0
        self.set_cursor(numbers[max(0, min(len(numbers) - 1, i))])
        if self.current is not None:
            self.post_message(self.CursorMoved(self.current))

    def redraw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.xlabel("TTFT p99 ms")
        plt.ylabel("out tok/s")
        others = [r for r in self.points if r not in self.front]
        if others:
            plt.scatter([r.latency_ms for r in others], [r.throughput for r in others], marker="•", color="blue")
        if self.front:
            plt.scatter([r.latency_ms for r in self.front], [r.throughput for r in self.front], marker="●",
                        color="green")
        cur = self.current
        if cur is not None:
            plt.scatter([cur.latency_ms], [cur.throughput], marker="◆", color="red")
        # The title names the cursor's trial: a text label on the plot would hide its neighbours.
        where = (f"cursor ◆ #{cur.number}: {cur.throughput:.1f} tok/s at {cur.latency_ms:.1f} ms"
                 if cur is not None else "cursor: none")
        plt.title(f"Pareto front ● · {where}")
        self.refresh()
