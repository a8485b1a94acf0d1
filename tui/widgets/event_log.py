"""The event log: breaches, recoveries, restarts, scrape failures, newest at the bottom."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import RichLog

from tui.events import Event

STYLES = {"breach": "bold red", "failed": "bold red", "recovered": "green", "restart": "yellow",
          "scrape_failed": "magenta", "unreachable": "magenta", "bench": "cyan", "trial": "cyan"}


def event_line(event: Event, servers: dict[str, str]) -> Text:
    clock = time.strftime("%H:%M:%S", time.gmtime(event.time))
    text = Text(f"{clock} ")
    text.append(f"{event.kind:<13}", style=STYLES.get(event.kind, "bold"))
    if event.server_id:
        text.append(f" {servers.get(event.server_id, event.server_id)}", style="dim")
    text.append(f" {event.text}")
    return text


class EventLogView(RichLog):
    """`sync(events, servers)` appends what is new; a shorter list (a replay seeking back)
    redraws from scratch."""

    DEFAULT_CSS = """
    EventLogView { height: 8; border: round $panel; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(wrap=False, markup=False, auto_scroll=True, **kwargs)
        self.shown = 0
        self.border_title = "events"

    def sync(self, events: list[Event], servers: dict[str, str]) -> None:
        if len(events) < self.shown:
            self.clear()
            self.shown = 0
        for event in events[self.shown:]:
            self.write(event_line(event, servers))
        self.shown = len(events)
