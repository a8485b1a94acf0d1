"""Form fields with their name above them, for the Bench, Compare and Tune screens (a field's
placeholder disappears once it holds a value, so it cannot be the only name it has)."""

from __future__ import annotations

from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Label


def labelled(label: str, widget: Widget, classes: str = "") -> Vertical:
    return Vertical(Label(label, classes="field-label"), widget, classes=f"field {classes}".strip())
