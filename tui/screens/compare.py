"""Placeholder until the compare screen lands (owned by the other helper)."""

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class CompareScreen(Screen):
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("compare: coming")
        yield Footer()
