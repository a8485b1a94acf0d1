"""Monitor: the selected server, about once a second — throughput, queue, KV cache, latency
percentiles (each a value and a chart of the last minutes), the client's view while a bench
runs (its TTFT, the client-server gap, the generator's scheduling lag), live histograms,
SLO verdict and the event log. Reads session.telemetry; redraws only while visible."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Label

from tui import promhist
from tui.help import explain
from tui.histogram_data import client_rows
from tui.screens.help import ExplainScreen
from tui.series import HISTS, WINDOW_S
from tui.widgets.event_log import EventLogView
from tui.widgets.histogram import Histogram
from tui.widgets.metric_panel import MetricPanel
from tui.widgets.verdict import Verdict

CHART_SPAN_S = 300.0   # charts show the last 5 minutes (at least 1, less while data is young)
MIN_SPAN_S = 60.0
REFRESH_S = 1.0

# (key in the telemetry point, title, unit, chart style)
PANELS: tuple[tuple[str, str, str, str], ...] = (
    ("gen_tps", "gen tok/s", "tok/s", "cyan"),
    ("prompt_tps", "prompt tok/s", "tok/s", "cyan"),
    ("running", "running", "", "green"),
    ("waiting", "waiting", "", "yellow"),
    ("kv_usage_pct", "KV usage", "%", "magenta"),
    ("kv_used_blocks", "KV used blocks", "blocks", "magenta"),
    ("kv_free_blocks", "KV free blocks", "blocks", "magenta"),
    ("kv_cached_blocks", "KV cached (free) blocks", "blocks", "magenta"),
    ("prefix_hit_pct", "prefix hit", "%", "magenta"),
    ("ttft_p50", "TTFT p50", "ms", "blue"),
    ("ttft_p99", "TTFT p99", "ms", "blue"),
    ("itl_p50", "ITL p50", "ms", "blue"),
    ("itl_p99", "ITL p99", "ms", "blue"),
    ("client_ttft_p50", "client TTFT p50", "ms", "green"),
    ("client_ttft_p99", "client TTFT p99", "ms", "green"),
    ("ttft_gap_ms", "client−server TTFT", "ms", "yellow"),
    ("sched_lag_ms", "sched lag (gen)", "ms", "red"),
)


class MonitorScreen(Screen):
    CSS_PATH = "monitor.tcss"
    BINDINGS = [Binding("question_mark", "explain", "Explain number", key_display="?"),
                Binding("s", "app.add_slo", "SLO")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("", id="mon-head", markup=False)
        yield Verdict(id="mon-verdict")
        yield Label("", id="replay-bar")
        with VerticalScroll(id="mon-body"):
            with Grid(id="mon-panels"):
                for key, title, unit, style in PANELS:
                    yield MetricPanel(key, title, unit, style)
            with Horizontal(id="mon-hists"):
                yield Histogram("server TTFT (window)", "blue", id="hist-ttft")
                yield Histogram("server ITL (window)", "blue", id="hist-itl")
                yield Histogram("client TTFT (window)", "green", id="hist-client")
        yield EventLogView(id="mon-events")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(REFRESH_S, self.refresh_view)

    def on_screen_resume(self) -> None:
        self.refresh_view()

    def refresh_view(self) -> None:
        if not self.is_current:  # only the visible screen redraws
            return
        session, now = self.app.session, self.app.now()
        server = session.selected
        self._head(server)
        self.query_one(Verdict).show(session.slos, server.id if server else None, now)
        self._replay_bar()
        series = session.telemetry.store.get(server.id) if server else None
        point = series.latest() if series else {}
        t0 = now - self._span(series, now)
        events = [(e.time, e.kind) for e in session.events.since(t0)
                  if server is None or e.server_id in (None, server.id)]
        for panel in self.query(MetricPanel):
            points = series.series(panel.key, t0) if series else []
            panel.show(point.get(panel.key), points, events, t0, now)
        self._histograms(series, now)
        servers = {s.id: s.name for s in session.servers}
        self.query_one(EventLogView).sync(session.events.all(), servers)

    @staticmethod
    def _span(series, now: float) -> float:
        if not series or not series.points:
            return CHART_SPAN_S
        return min(max(now - series.points[0][0], MIN_SPAN_S), CHART_SPAN_S)

    def _head(self, server) -> None:
        head = self.query_one("#mon-head", Label)
        if server is None:
            head.update("no server selected: press 1 for Servers, launch or attach one")
            return
        state = server.state.upper()
        head.update(f"{server.name}  {server.base_url}  model {server.model or '?'}  [{state}]")
        head.set_classes(f"state-{server.state}")

    def _replay_bar(self) -> None:
        bar = self.query_one("#replay-bar", Label)
        rp = self.app.replayer
        bar.display = rp is not None
        if rp is not None:
            mode = "▶ playing" if rp.is_playing else "‖ paused"
            bar.update(f"REPLAY {mode}  {rp.offset_s:6.1f}s / {rp.duration_s:.1f}s  "
                       "(space play/pause · . , step · ] [ seek 10s · home end)")

    def _histograms(self, series, now: float) -> None:
        windows = series.window_hists if series else {}
        self.query_one("#hist-ttft", Histogram).rows = tuple(
            promhist.per_bucket(windows.get("ttft", [])))
        self.query_one("#hist-itl", Histogram).rows = tuple(
            promhist.per_bucket(windows.get("itl", [])))
        ttft = self.app.session.telemetry.client.ttft_values(now, WINDOW_S)
        self.query_one("#hist-client", Histogram).rows = tuple(
            client_rows(ttft, windows.get("ttft")))

    def action_explain(self) -> None:
        focused = self.focused
        if not isinstance(focused, MetricPanel):
            self.notify("focus a number first (tab), then press ?", severity="warning")
            return
        server = self.app.session.selected
        series = self.app.session.telemetry.store.get(server.id) if server else None
        point = series.latest() if series else {}
        samples = len(series.series(focused.key)) if series else 0   # values charted so far
        base = focused.key.split("_")[0]
        if f"{base}_n" in point and base in HISTS:  # percentiles: observations in the window
            samples = int(point[f"{base}_n"] or 0)
        elif focused.key.startswith("client_") and point.get("client_n") is not None:
            samples = int(point["client_n"])
        self.app.push_screen(ExplainScreen(explain(focused.key, samples)))

    def palette_commands(self):
        from textual.app import SystemCommand
        yield SystemCommand("Explain the focused number", "formula, source, window, samples (?)",
                            self.action_explain)
