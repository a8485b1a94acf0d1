"""Servers: launch (the flag form), attach to a URL, the list with state/uptime/model/port,
the selected server's log tail, stop and restart. With no server yet, the usual local ports
are searched (loadgen.discovery) and what answers is offered for attaching."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, Log

from loadgen.discovery import LOCAL_PORTS, ServerError, check_server
from tui.screens.launch_form import LaunchForm
from tui.session import ServerHandle
from tui.widgets.event_log import EventLogView
from tui.widgets.verdict import Verdict

REFRESH_S = 1.0
COLUMNS = ("id", "name", "state", "uptime", "model", "port", "kind")
STATE_STYLES = {"ready": "green", "starting": "yellow", "failed": "bold red", "stopped": "dim",
                "unreachable": "magenta"}


def uptime(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


class ServersScreen(Screen):
    CSS_PATH = "servers.tcss"
    BINDINGS = [
        Binding("n", "launch", "Launch"),
        Binding("a", "attach", "Attach"),
        Binding("x", "stop", "Stop"),
        Binding("r", "restart", "Restart"),
        Binding("d", "discover", "Discover"),
        Binding("m", "monitor", "Monitor", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Verdict(id="srv-verdict")
        with Horizontal(id="srv-main"):
            with Vertical(id="srv-left"):
                yield DataTable(id="srv-table", cursor_type="row", zebra_stripes=True)
                yield Label("", id="srv-found")
                yield Input(placeholder="attach: http://host:port (enter)", id="attach-url")
            yield Log(id="srv-log", max_lines=500)
        yield EventLogView(id="srv-events")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for col in COLUMNS:
            table.add_column(col, key=col)
        self.query_one("#srv-log", Log).border_title = "log"
        self.shown_log: tuple[str | None, int] = (None, 0)
        self.set_interval(REFRESH_S, self.refresh_view)
        session = self.app.session
        if not session.servers and not session.is_replay:
            self.action_discover()
        self.refresh_view()

    def on_screen_resume(self) -> None:
        self.refresh_view()

    # -- drawing ---------------------------------------------------------------------------

    def refresh_view(self) -> None:
        if not self.is_current:
            return
        session = self.app.session
        now = self.app.now()
        sel = session.selected
        self.query_one(Verdict).show(session.slos, sel.id if sel else None, now)
        self._table(session.servers, now)
        self._log(sel)
        self.query_one(EventLogView).sync(session.events.all(),
                                          {s.id: s.name for s in session.servers})

    def _table(self, servers: list[ServerHandle], now: float) -> None:
        """Cells are updated in place while the set of servers stays the same (no flicker,
        the cursor stays put); a new or removed server rebuilds the rows."""
        table = self.query_one(DataTable)
        rows = {s.id: self._row(s, now) for s in servers}
        if [k.value for k in table.rows] == list(rows):
            for sid, cells in rows.items():
                for col, value in zip(COLUMNS, cells):
                    table.update_cell(sid, col, value)
            return
        table.clear()
        for sid, cells in rows.items():
            table.add_row(*cells, key=sid)
        sel = self.app.session.selected
        if sel is not None and sel in servers:
            table.move_cursor(row=servers.index(sel), animate=False)

    @staticmethod
    def _row(s: ServerHandle, now: float) -> tuple:
        return (s.id, s.name, Text(s.state, style=STATE_STYLES.get(s.state, "")),
                uptime(s.uptime_s(now)) if s.state in ("starting", "ready") else "—",
                s.model or "?", str(s.port or "—"), "launched" if s.launched else "attached")

    def _log(self, server: ServerHandle | None) -> None:
        log = self.query_one("#srv-log", Log)
        lines = list(server.log) if server else []
        shown_id, shown_n = self.shown_log
        if server is None or shown_id != server.id or len(lines) < shown_n:
            log.clear()
            shown_n = 0
        if server is not None:
            log.border_title = f"log: {server.name} ({server.state})"
        log.write_lines(lines[shown_n:])
        self.shown_log = (server.id if server else None, len(lines))

    # -- selection -------------------------------------------------------------------------

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.app.session.select(event.row_key.value)
            self._log(self.app.session.selected)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.session.select(event.row_key.value)
        self.app.switch_to("monitor")

    def action_monitor(self) -> None:
        self.app.switch_to("monitor")

    # -- actions ---------------------------------------------------------------------------

    def _live_only(self) -> bool:
        if self.app.session.is_replay:
            self.notify("this is a replay: nothing can be launched or stopped", severity="warning")
            return False
        return True

    def action_launch(self) -> None:
        if self._live_only():
            self.app.push_screen(LaunchForm(), self._launch_answer)

    def _launch_answer(self, flags: dict | None) -> None:
        if flags is None:
            return
        handle = self.app.session.launch(flags)
        self.app.session.select(handle.id)
        self.notify(f"launching {handle.name}")
        self.refresh_view()

    def action_attach(self) -> None:
        if self._live_only():
            self.query_one("#attach-url", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "attach-url":
            return
        url = event.value.strip()
        if not url:
            self.notify("type a URL like http://127.0.0.1:8000", severity="error")
            return
        handle = self.app.session.attach(url)
        self.app.session.select(handle.id)
        event.input.value = ""
        self.query_one(DataTable).focus()
        self.refresh_view()

    def _selected(self) -> ServerHandle | None:
        sel = self.app.session.selected
        if sel is None:
            self.notify("no server selected", severity="warning")
        return sel

    def action_stop(self) -> None:
        sel = self._selected()
        if sel is not None and self._live_only():
            self.app.session.stop(sel.id)
            self.refresh_view()

    def action_restart(self) -> None:
        sel = self._selected()
        if sel is not None and self._live_only():
            self.app.session.restart(sel.id)
            self.refresh_view()

    def action_discover(self) -> None:
        self.query_one("#srv-found", Label).update("looking for servers on local ports "
                                                   + ", ".join(map(str, LOCAL_PORTS)) + " …")
        self._discover()

    @work(thread=True, exclusive=True, group="discover", exit_on_error=False)
    def _discover(self) -> None:
        found = []
        for port in LOCAL_PORTS:
            url = f"http://127.0.0.1:{port}"
            if any(s.base_url == url for s in self.app.session.servers):
                continue
            try:
                info = check_server(url, timeout_s=1.0)
            except ServerError:
                continue
            found.append((url, info.models[0] if info.models else "?"))
        self.app.call_from_thread(self._offer, found)

    def _offer(self, found: list[tuple[str, str]]) -> None:
        label = self.query_one("#srv-found", Label)
        if not found:
            label.update("no local server found: n to launch one, a to attach to a URL")
            return
        label.update("found: " + ", ".join(f"{u} ({m})" for u, m in found)
                     + " — enter in the attach box to attach")
        self.query_one("#attach-url", Input).value = found[0][0]

    def palette_commands(self):
        for name, title, help_ in (("launch", "Launch a server", "the flag form (n)"),
                                   ("attach", "Attach to a URL", "any OpenAI-compatible server (a)"),
                                   ("stop", "Stop the selected server", "(x)"),
                                   ("restart", "Restart the selected server", "(r)"),
                                   ("discover", "Find local servers", "ports " +
                                    ", ".join(map(str, LOCAL_PORTS)) + " (d)"),
                                   ("monitor", "Monitor the selected server", "(enter / m)")):
            yield SystemCommand(title, help_, getattr(self, f"action_{name}"))
