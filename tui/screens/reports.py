"""Placeholder until the reports screen lands (owned by the other helper)."""

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class ReportsScreen(Screen):
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("reports: coming")
        yield Footer()
