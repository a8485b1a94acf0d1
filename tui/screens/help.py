"""help screen (work in progress)."""

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class HelpScreen(Screen):
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("help")
        yield Footer()
