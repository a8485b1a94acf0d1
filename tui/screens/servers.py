"""servers screen (work in progress)."""

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class ServersScreen(Screen):
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("servers")
        yield Footer()
