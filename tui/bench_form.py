"""Form fields with their name above them, for the Bench, Compare and Tune screens (a field's
placeholder disappears once it holds a value, so it cannot be the only name it has)."""

from __future__ import annotations

from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Label

from tui.bench_runner import PlanError


def labelled(label: str, widget: Widget, classes: str = "") -> Vertical:
    return Vertical(Label(label, classes="field-label"), widget, classes=f"field {classes}".strip())


def int_field(value: str, name: str, lo: int = 1) -> int:
    """A whole-number field, or PlanError with the one line the form shows."""
    try:
        number = int(value)
    except ValueError:
        raise PlanError(f"{name} {value!r}: expected a whole number") from None
    if number < lo:
        raise PlanError(f"{name} {number}: must be at least {lo}")
    return number
