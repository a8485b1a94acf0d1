"""The study's trials: params, throughput, latency, state, failure reason; sortable by column
(click a header, or `s` to cycle the sort column and `S` to flip its order)."""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from tui.tune_runner import TrialRow, fmt_number

# (title, TrialRow attribute, descending first): throughput sorts best-first, latency fastest-first.
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("#", "number", False),
    ("state", "state", False),
    ("out tok/s", "throughput", True),
    ("TTFT p99 ms", "latency_ms", False),
    ("params", "params", False),
    ("reason", "reason", False),
)


def sort_rows(rows: list[TrialRow], attr: str, reverse: bool) -> list[TrialRow]:
    """Rows by one attribute; a missing value (failed trial) always goes last."""
    have = [r for r in rows if getattr(r, attr) is not None]
    missing = [r for r in rows if getattr(r, attr) is None]
    return sorted(have, key=lambda r: getattr(r, attr), reverse=reverse) + missing


class TrialsTable(DataTable):
    BINDINGS = [Binding("s", "cycle_sort", "Sort"), Binding("S", "flip_sort", "Sort order", show=False)]

    class TrialHighlighted(Message):
        def __init__(self, row: TrialRow) -> None:
            super().__init__()
            self.row = row

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.rows_shown: list[TrialRow] = []
        self.sort_attr = "number"
        self.sort_reverse = False

    def on_mount(self) -> None:
        for title, attr, _ in COLUMNS:
            self.add_column(title, key=attr)

    def set_rows(self, rows: list[TrialRow]) -> None:
        """Replace the rows, keeping the sort and the trial under the cursor."""
        current = self.current
        self.rows_shown = sort_rows(rows, self.sort_attr, self.sort_reverse)
        self.clear()
        for r in self.rows_shown:
            label = f"{r.number}{'*' if r.is_baseline else ''}"
            self.add_row(label, r.state, fmt_number(r.throughput, ".1f"), fmt_number(r.latency_ms, ".1f"),
                         r.params, r.reason[:60], key=str(r.number))
        if current is not None:
            self.select_trial(current.number)

    @property
    def current(self) -> TrialRow | None:
        if not self.rows_shown or not 0 <= self.cursor_row < len(self.rows_shown):
            return None
        return self.rows_shown[self.cursor_row]

    def select_trial(self, number: int) -> None:
        for i, r in enumerate(self.rows_shown):
            if r.number == number:
                self.move_cursor(row=i)
                return

    def sort_by(self, attr: str, reverse: bool | None = None) -> None:
        default = next(desc for _, a, desc in COLUMNS if a == attr)
        if reverse is None:  # the same column again flips the order
            reverse = (not self.sort_reverse) if attr == self.sort_attr else default
        self.sort_attr, self.sort_reverse = attr, reverse
        self.set_rows(self.rows_shown)

    def action_cycle_sort(self) -> None:
        attrs = [a for _, a, _ in COLUMNS]
        self.sort_by(attrs[(attrs.index(self.sort_attr) + 1) % len(attrs)])

    def action_flip_sort(self) -> None:
        self.sort_by(self.sort_attr, not self.sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if self.current is not None:
            self.post_message(self.TrialHighlighted(self.current))
