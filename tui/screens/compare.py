"""Compare screen: two servers, two configs (trials of a study, each launched for the run) or two
saved result dirs; the same workload against each, one after the other; the summaries side by
side with B - A (absolute and %)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, Select
from textual.worker import Worker, WorkerState

from tui.bench_form import int_field, labelled
from tui.bench_runner import BenchPlan, PlanError
from tui.bench_summary import KEY_METRICS, fmt
from tui.compare_sources import Source, Stops, run_side, saved_sources
from tui.compare_table import CompareRow, compare, signed

# Latencies: lower is better; everything else in KEY_METRICS: higher is better (but "failed").
LOWER_IS_BETTER = {k for k, _, _ in KEY_METRICS if k.endswith("_ms")} | {"failed"}


class CompareScreen(Screen):
    CSS_PATH = "compare.tcss"
    BINDINGS = [Binding("ctrl+r", "run", "Compare"), Binding("ctrl+f", "refresh_sources", "Refresh lists")]

    def __init__(self) -> None:
        super().__init__()
        self.sources: dict[str, Source] = {}
        self.stops = Stops()
        self.rows: list[CompareRow] = []

    def compose(self) -> ComposeResult:
        with Horizontal(classes="form"):
            yield labelled("A", Select([], prompt="server or result dir", id="side-a"), "side")
            yield labelled("B", Select([], prompt="server or result dir", id="side-b"), "side")
        with Horizontal(classes="form"):
            yield labelled("input len", Input("128", id="input-len"))
            yield labelled("output len", Input("32", id="output-len"))
            yield labelled("prompts", Input("50", id="num-prompts"))
            yield labelled("concurrency", Input("4", id="concurrency"))
            yield Button("Compare", id="run", variant="success")
        yield Label("pick two servers (the same workload runs against each, one after the other) "
                    "or two saved result dirs", id="compare-status")
        yield DataTable(id="compare-table", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for title in ("metric", "A", "B", "B - A", "B vs A %"):
            table.add_column(title, key=title)
        self.action_refresh_sources()

    def on_screen_resume(self) -> None:
        self.action_refresh_sources()

    def on_unmount(self) -> None:
        self.stops.stop()  # threads: the app's exit would wait for them

    def palette_commands(self):
        yield SystemCommand("Compare: run", "the same workload against A then B", self.action_run)
        yield SystemCommand("Compare: refresh lists", "servers and saved result dirs", self.action_refresh_sources)

    def action_refresh_sources(self) -> None:
        """Servers now; saved result dirs are read off the UI thread, then both are listed."""
        session = self.app.session
        servers = {f"server:{s.id}": Source(s.name, s.base_url, s.api_key) for s in session.servers}
        states = {f"server:{s.id}": f" ({s.state})" for s in session.servers}
        root = session.results_dir

        def scan() -> None:
            self.app.call_from_thread(self.set_sources, servers | saved_sources(root), states)

        self.run_worker(scan, thread=True, group="compare-scan", exclusive=True, exit_on_error=False)

    def set_sources(self, sources: dict[str, Source], notes: dict[str, str] | None = None) -> None:
        self.sources = sources
        options = [(s.label + (notes or {}).get(key, ""), key) for key, s in sources.items()]
        for select_id in ("#side-a", "#side-b"):
            select = self.query_one(select_id, Select)
            keep = select.value
            select.set_options(options)
            if keep in sources:
                select.value = keep

    def chosen(self) -> tuple[Source, Source]:
        a, b = (self.query_one(i, Select).value for i in ("#side-a", "#side-b"))
        if a not in self.sources or b not in self.sources:
            raise PlanError("pick both A and B")
        return self.sources[a], self.sources[b]

    def plan(self) -> BenchPlan:
        return BenchPlan("", input_len=int_field(self.query_one("#input-len", Input).value, "input length"),
                         output_len=int_field(self.query_one("#output-len", Input).value, "output length"),
                         num_prompts=int_field(self.query_one("#num-prompts", Input).value, "prompts"),
                         values=(int_field(self.query_one("#concurrency", Input).value, "concurrency"),))

    @on(Button.Pressed, "#run")
    def action_run(self) -> None:
        try:
            a, b = self.chosen()
            plan = self.plan() if a.needs_workload or b.needs_workload else None
        except (PlanError, ValueError) as e:
            self.notify(str(e), severity="error")
            return
        self.run_compare(a, b, plan)

    def run_compare(self, a: Source, b: Source, plan: BenchPlan | None) -> None:
        results_dir = self.app.session.results_dir
        status = self.query_one("#compare-status", Label)

        def work() -> list[CompareRow]:
            self.app.call_from_thread(status.update, f"A: {a.label} ...")
            summary_a = run_side(a, plan, results_dir, "A", self.stops)
            self.app.call_from_thread(status.update, f"B: {b.label} ...")
            summary_b = run_side(b, plan, results_dir, "B", self.stops)
            return compare(summary_a, summary_b)

        self.query_one("#run", Button).disabled = True
        self.labels = (a.label, b.label)
        self.run_worker(work, thread=True, group="compare", exclusive=True, exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "compare" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        self.query_one("#run", Button).disabled = False
        self.stops.runners.clear()
        status = self.query_one("#compare-status", Label)
        if event.state == WorkerState.ERROR:
            text = f"compare failed: {event.worker.error}".splitlines()[0]
            status.update(text)
            self.notify(text, severity="error")
            return
        self.show(event.worker.result)
        status.update(f"A = {self.labels[0]}   B = {self.labels[1]}")
        self.app.session.events.add("bench", f"compared {self.labels[0]} with {self.labels[1]}")
        self.action_refresh_sources()

    def show(self, rows: list[CompareRow]) -> None:
        self.rows = rows
        table = self.query_one(DataTable)
        table.clear()
        patterns = {k: p for k, _, p in KEY_METRICS}
        for r in rows:
            better = r.diff is not None and r.diff != 0 and ((r.diff < 0) == (r.key in LOWER_IS_BETTER))
            colour = "green" if better else ("red" if r.diff else "")
            diff = signed(r.diff, "{:+" + patterns[r.key][2:])
            pct = signed(r.pct, "{:+.1f}%")
            table.add_row(r.name, fmt(r.a, patterns[r.key]), fmt(r.b, patterns[r.key]),
                          f"[{colour}]{diff}[/]" if colour else diff, f"[{colour}]{pct}[/]" if colour else pct,
                          key=r.key)
