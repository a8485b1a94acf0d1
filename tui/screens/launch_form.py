"""The launch form: every engine flag dyno can use, grouped as `dyno serve --help` groups
them, with defaults filled in, choices as selects and booleans as switches. Launch validates
with engine.args' own rules; a bad value shows as a one-line error and nothing starts."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Collapsible, Input, Label, Select, Switch

from engine.args import ArgsError, Flag
from tui.flag_form import collect, default_text, grouped


def field_widget(flag: Flag) -> Widget:
    wid = f"f-{flag.name}"
    if flag.kind is bool:
        return Switch(value=bool(flag.default), id=wid, tooltip=flag.help)
    if flag.choices and flag.kind is not list:
        options = [(str(c), c) for c in flag.choices]
        return Select(options, value=flag.default if flag.default in flag.choices else Select.NULL,
                      allow_blank=flag.default not in flag.choices, id=wid, tooltip=flag.help)
    placeholder = "free port" if flag.name == "port" else ("default model" if flag.name == "model"
                                                           else "unset")
    return Input(value=default_text(flag), placeholder=placeholder, id=wid, tooltip=flag.help)


class LaunchForm(ModalScreen[dict | None]):
    """Dismisses with the validated launch flags, or None when cancelled."""

    CSS_PATH = "launch_form.tcss"
    BINDINGS = [Binding("escape", "dismiss", "Cancel"), Binding("ctrl+l", "launch", "Launch")]

    def compose(self) -> ComposeResult:
        with Vertical(id="launch-dialog"):
            yield Label("Launch dyno serve — defaults shown; ctrl+l or Launch to start",
                        id="launch-title")
            with VerticalScroll(id="launch-fields"):
                for group, flags in grouped():
                    with Collapsible(title=group, collapsed=group != "quick"):
                        for flag in flags:
                            with Horizontal(classes="flag-row"):
                                yield Label(flag.option, classes="flag-name")
                                yield field_widget(flag)
            yield Label("", id="launch-error")
            with Horizontal(id="launch-buttons"):
                yield Button("Launch", id="launch", variant="success")
                yield Button("Cancel", id="cancel")

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for _, flags in grouped():
            for flag in flags:
                w = self.query_one(f"#f-{flag.name}")
                if isinstance(w, Select):
                    out[flag.name] = None if w.value is Select.NULL else w.value
                else:
                    out[flag.name] = w.value
        return out

    def set_value(self, name: str, value: Any) -> None:
        """Fill one field (used by tests and by "launch this trial")."""
        w = self.query_one(f"#f-{name}")
        w.value = value if not isinstance(w, Input) else str(value)

    def action_launch(self) -> None:
        try:
            flags = collect(self.values())
        except ArgsError as e:
            self.query_one("#launch-error", Label).update(str(e))
            self.notify(str(e), severity="error")
            return
        self.dismiss(flags)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "launch":
            self.action_launch()
        else:
            self.dismiss(None)
