"""The help screen (keys and screens) and the `?` explanation popup."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Header, Static

from tui.help import KEYS


def keys_table() -> Table:
    table = Table(title="dyno tui — keys", expand=False, show_edge=False)
    table.add_column("key", style="bold cyan", no_wrap=True)
    table.add_column("does")
    for key, what in KEYS:
        table.add_row(key, what)
    return table


class HelpScreen(Screen):
    BINDINGS = [Binding("escape", "app.back", "Back")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(keys_table(), id="help-keys")
        yield Static("SLOs: dyno tui --slo ttft_p99=500ms --slo itl_p99=50ms  ·  recording: "
                     "every session is written to RESULTS_DIR/tui-sessions/*.jsonl; "
                     "dyno tui --replay FILE plays one back.  See docs/tui.md.", id="help-more")
        yield Footer()


class ExplainScreen(ModalScreen[None]):
    """What a number is; any key closes it."""

    BINDINGS = [Binding("escape", "dismiss", "Close"), Binding("question_mark", "dismiss", "Close")]
    DEFAULT_CSS = """
    ExplainScreen { align: center middle; }
    #explain { width: 80; height: auto; border: thick $accent; background: $surface; padding: 1 2; }
    """

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="explain"):
            yield Static(self.text, id="explain-text", markup=False)
            yield Static("esc to close", classes="dim")
