"""monitor screen (work in progress)."""

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class MonitorScreen(Screen):
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("monitor")
        yield Footer()
