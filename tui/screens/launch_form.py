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


_UNSET = object()


def field_widget(flag: Flag, value: Any = _UNSET) -> Widget:
    wid = f"f-{flag.name}"
    if flag.kind is bool:
        return Switch(value=bool(flag.default if value is _UNSET else value), id=wid, tooltip=flag.help)
    if flag.choices and flag.kind is not list:
        options = [(str(c), c) for c in flag.choices]
        chosen = flag.default if value is _UNSET else value
        return Select(options, value=chosen if chosen in flag.choices else Select.NULL,
                      allow_blank=flag.default not in flag.choices, id=wid, tooltip=flag.help)
    placeholder = "free port" if flag.name == "port" else ("default model" if flag.name == "model"
                                                           else "unset")
    text = default_text(flag) if value is _UNSET else str(value)
    return Input(value=text, placeholder=placeholder, id=wid, tooltip=flag.help)


def flag_row(flag: Flag, value: Any = _UNSET) -> Horizontal:
    return Horizontal(Label(flag.option, classes="flag-name"), field_widget(flag, value),
                      classes="flag-row")


class FlagGroup(Collapsible):
    """One group of flags; a collapsed group builds its fields when first opened (the form
    opens fast, and an unopened group can only hold its defaults)."""

    def __init__(self, group: str, flags: list[Flag], collapsed: bool) -> None:
        rows = [] if collapsed else [flag_row(f) for f in flags]
        super().__init__(*rows, title=group, collapsed=collapsed)
        self.flags, self.is_filled = flags, not collapsed

    def fill(self, values: dict[str, Any] | None = None) -> None:
        if self.is_filled:
            return
        self.is_filled = True
        values = values or {}
        self.query_one(Collapsible.Contents).mount(
            *(flag_row(f, values.get(f.name, _UNSET)) for f in self.flags))

    def on_collapsible_expanded(self, event: Collapsible.Expanded) -> None:
        if event.collapsible is self:
            self.fill()


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
                    yield FlagGroup(group, flags, collapsed=group != "quick")
            yield Label("", id="launch-error")
            with Horizontal(id="launch-buttons"):
                yield Button("Launch", id="launch", variant="success")
                yield Button("Cancel", id="cancel")

    def values(self) -> dict[str, Any]:
        """The fields built so far (an unopened group holds only defaults)."""
        out: dict[str, Any] = {}
        for group in self.query(FlagGroup):
            if not group.is_filled:
                continue
            for flag in group.flags:
                w = self.query_one(f"#f-{flag.name}")
                if isinstance(w, Select):
                    out[flag.name] = None if w.value is Select.NULL else w.value
                else:
                    out[flag.name] = w.value
        return out

    def set_value(self, name: str, value: Any) -> None:
        """Fill one field (used by tests and by "launch this trial"); opens its group."""
        group = next(g for g in self.query(FlagGroup) if any(f.name == name for f in g.flags))
        if not group.is_filled:
            group.fill({name: value})
            group.collapsed = False
            return
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
