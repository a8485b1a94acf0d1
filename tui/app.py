"""The dashboard app: the session, the screens by name, keys, command palette, quitting.

Screens are installed by name and switched with `app.switch_to(name)` (keys 1-6, F1/? for
help, or the command palette, ctrl+p). Installed screens live for the whole app, so a screen
keeps its state while another is shown.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Input, TextArea

from tui.screens.bench import BenchScreen
from tui.screens.compare import CompareScreen
from tui.screens.help import HelpScreen
from tui.screens.monitor import MonitorScreen
from tui.screens.quit_confirm import QuitConfirm
from tui.screens.reports import ReportsScreen
from tui.screens.servers import ServersScreen
from tui.screens.slo_form import SloForm
from tui.screens.tune import TuneScreen
from tui.scraper import scrape_forever
from tui.session import Session

REPLAY_TICK_S = 0.25

# name -> (key, function key, title): the order of the keys and of the palette. The digit
# types into a focused text field instead; the function key works everywhere.
SCREEN_KEYS: dict[str, tuple[str, str, str]] = {
    "servers": ("1", "f2", "Servers"),
    "monitor": ("2", "f3", "Monitor"),
    "bench": ("3", "f4", "Bench"),
    "compare": ("4", "f5", "Compare"),
    "tune": ("5", "f6", "Tune"),
    "reports": ("6", "f7", "Reports"),
    "help": ("f1", "f1", "Help"),
}
TEXT_FIELDS = (Input, TextArea)


class DynoApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "dyno"
    SCREENS = {"servers": ServersScreen, "monitor": MonitorScreen, "bench": BenchScreen,
               "compare": CompareScreen, "tune": TuneScreen, "reports": ReportsScreen,
               "help": HelpScreen}
    # Digits check for a focused text field (switch_to); function keys always switch (go).
    BINDINGS = [
        *(Binding(key, f"{'go' if key.startswith('f') else 'switch_to'}('{name}')", title,
                  key_display=key.upper() if key == "f1" else key, priority=True)
          for name, (key, _, title) in SCREEN_KEYS.items()),
        *(Binding(fkey, f"go('{name}')", title, show=False, priority=True)
          for name, (key, fkey, title) in SCREEN_KEYS.items() if fkey != key),
        Binding("q", "quit", "Quit"),
        # replay controls: priority over scrolling keys, and passed on in a live session
        Binding("space", "replay('toggle')", "Play/pause", show=False, priority=True),
        Binding("full_stop", "replay('step')", "Step", show=False, priority=True),
        Binding("comma", "replay('back')", "Step back", show=False, priority=True),
        Binding("right_square_bracket", "replay('fwd10')", "Seek +10s", show=False, priority=True),
        Binding("left_square_bracket", "replay('back10')", "Seek -10s", show=False, priority=True),
        Binding("home", "replay('start')", "Start", show=False, priority=True),
        Binding("end", "replay('end')", "End", show=False, priority=True),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, session: Session | None = None, first_screen: str = "servers",
                 replayer=None, clock: Callable[[], float] | None = None,
                 scrape: bool = True) -> None:
        super().__init__()
        self.scrape = scrape  # off for snapshots: no live data
        self.clock = clock or time.time
        self.session = session or Session()
        self.replayer = replayer  # tui.replay.Replayer when playing back a recording
        self.session.spawn = self._spawn
        self.first_screen = first_screen
        self.current_name = first_screen
        self.previous_name = first_screen

    def on_mount(self) -> None:
        self.push_screen(self.first_screen)
        if self.replayer is not None:
            self.set_interval(REPLAY_TICK_S, lambda: self.replayer.tick(REPLAY_TICK_S))
        elif self.scrape and not self.session.is_replay:
            self.run_worker(scrape_forever(self.session), name="scraper", group="scrape",
                            exclusive=True, exit_on_error=False)

    def on_unmount(self) -> None:
        self.session.close()

    def now(self) -> float:
        """The time the screens draw at: the replay cursor when replaying."""
        return self.replayer.position if self.replayer is not None else self.clock()

    # -- replay ----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "replay":
            return self.replayer is not None  # live: the key goes on to the focused widget
        if action == "switch_to" and isinstance(self.focused, TEXT_FIELDS):
            return False  # a digit typed into a field is a digit (function keys still switch)
        return True

    def action_replay(self, what: str) -> None:
        rp = self.replayer
        if rp is None:
            return
        moves = {"step": 1.0, "back": -1.0, "fwd10": 10.0, "back10": -10.0}
        if what == "toggle":
            rp.toggle()
        elif what in moves:
            rp.is_playing = False
            rp.seek(rp.position + moves[what])
        elif what == "start":
            rp.seek(rp.start)
        elif what == "end":
            rp.seek(rp.end)
        refresh = getattr(self.screen, "refresh_view", None)
        if callable(refresh):
            refresh()

    # -- screens ---------------------------------------------------------------------------

    def switch_to(self, name: str) -> None:
        """Show the screen installed as `name` (servers, monitor, bench, compare, tune,
        reports, help)."""
        if name not in self.SCREENS:
            self.notify(f"no screen named {name!r}", severity="error")
            return
        if name != self.current_name:
            self.previous_name, self.current_name = self.current_name, name
        self.switch_screen(name)

    def action_switch_to(self, name: str) -> None:
        self.switch_to(name)

    def action_go(self, name: str) -> None:
        self.switch_to(name)

    def action_back(self) -> None:
        self.switch_to(self.previous_name)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for name, (key, fkey, title) in SCREEN_KEYS.items():
            yield SystemCommand(f"Go to {title}", f"show the {title} screen (key {key} or {fkey})",
                                lambda name=name: self.switch_to(name))
        if self.replayer is not None:
            for what, title in (("toggle", "Replay: play / pause"), ("step", "Replay: step +1 s"),
                                ("back", "Replay: step -1 s"), ("fwd10", "Replay: seek +10 s"),
                                ("back10", "Replay: seek -10 s"), ("start", "Replay: to start"),
                                ("end", "Replay: to end")):
                yield SystemCommand(title, "move the replay cursor",
                                    lambda what=what: self.action_replay(what))
        yield SystemCommand("Declare an SLO", "e.g. ttft_p99=500ms: a live verdict on every screen",
                            self.action_add_slo)
        # Each screen adds its own actions (launch, stop, attach, ...).
        extra = getattr(screen, "palette_commands", None)
        if callable(extra):
            yield from extra()

    def action_add_slo(self) -> None:
        self.push_screen(SloForm(), self._slo_answer)

    def _slo_answer(self, text: str | None) -> None:
        if text:
            slo = self.session.slos.add(text)
            self.session.events.add("info", f"SLO declared: {slo}")
            self.notify(f"SLO {slo}")

    # -- workers ---------------------------------------------------------------------------

    def _spawn(self, fn: Callable[[], None], name: str) -> None:
        """The session's blocking work runs as a Textual thread worker."""
        if threading.get_ident() == self._thread_id:
            self.run_worker(fn, name=name, group="session", thread=True, exit_on_error=False)
        else:
            self.call_from_thread(self.run_worker, fn, name=name, group="session", thread=True,
                                  exit_on_error=False)

    # -- quitting --------------------------------------------------------------------------

    async def action_quit(self) -> None:
        running = self.session.launched_running()
        if not running:
            self._finish(stop=False)
            return
        self.push_screen(QuitConfirm([s.name for s in running]), self._quit_answer)

    def _quit_answer(self, answer: str | None) -> None:
        if answer in ("stop", "leave"):
            self._finish(stop=answer == "stop")

    def _finish(self, stop: bool) -> None:
        if stop:
            self.notify("stopping the servers this dashboard launched…")
            self.run_worker(self._stop_then_exit, thread=True, group="quit")
        else:
            self.session.close()
            self.exit()

    def _stop_then_exit(self) -> None:
        self.session.stop_all_launched()
        self.session.close()
        self.call_from_thread(self.exit)
