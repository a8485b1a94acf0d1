"""Quitting with servers this dashboard launched: stop them, leave them running, or cancel."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label


class QuitConfirm(ModalScreen[str]):
    """Dismisses with "stop", "leave" or "cancel"."""

    BINDINGS = [Binding("escape", "dismiss('cancel')", "Cancel"),
                Binding("y", "dismiss('stop')", "Stop and quit"),
                Binding("l", "dismiss('leave')", "Leave running")]

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = names

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-dialog"):
            yield Label(f"Quit: stop the {len(self.names)} server(s) this dashboard launched?")
            yield Label(", ".join(self.names), id="quit-names")
            with Horizontal(id="quit-buttons"):
                yield Button("Stop and quit (y)", id="stop", variant="error")
                yield Button("Leave running (l)", id="leave")
                yield Button("Cancel (esc)", id="cancel", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)
