"""Declaring an SLO from inside the app: the same syntax as `dyno tui --slo`."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from tui.slo import SloError, parse


class SloForm(ModalScreen[str | None]):
    """Dismisses with a valid SLO text (e.g. "ttft_p99=500ms") or None."""

    BINDINGS = [Binding("escape", "dismiss", "Cancel")]
    DEFAULT_CSS = """
    SloForm { align: center middle; }
    #slo-dialog { width: 70; height: auto; border: thick $accent; background: $surface; padding: 1 2; }
    #slo-error { color: $error; height: 1; }
    """

    def compose(self) -> ComposeResult:
        with Vertical(id="slo-dialog"):
            yield Label("SLO as METRIC_STAT=LIMIT, e.g. ttft_p99=500ms, itl_p50=0.02s (enter)")
            yield Input(placeholder="ttft_p99=500ms", id="slo-text")
            yield Label("", id="slo-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            parse(event.value)
        except SloError as e:
            self.query_one("#slo-error", Label).update(str(e))
            return
        self.dismiss(event.value.strip())
