"""Placeholder until the tune screen lands (owned by the other helper)."""

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class TuneScreen(Screen):
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("tune: coming")
        yield Footer()
