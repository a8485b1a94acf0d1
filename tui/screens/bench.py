"""Bench screen: a workload and load shape against the selected server, a live per-request
timeline, and the summary when the run ends (saved as `dyno bench --result-dir` saves it)."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

from rich.console import Group
from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, ProgressBar, Select, Static
from textual.worker import Worker, WorkerState

from loadgen import SLO, Event, FirstToken, PointDone, RequestDone, RequestSent
from loadgen.datasets import DATASETS
from tui.bench_form import int_field, labelled
from tui.bench_runner import LOAD_MODES, BenchPlan, BenchRunner, PlanError, parse_values, result_dir_for
from tui.bench_summary import slo_verdicts, summary_table
from tui.widgets.request_detail import RequestDetail
from tui.widgets.timeline import RequestTimeline, header

REFRESH_S = 0.25  # how often request events are moved from the bench thread to the widgets


class BenchScreen(Screen):
    CSS_PATH = "bench.tcss"
    BINDINGS = [Binding("ctrl+r", "start", "Start"), Binding("ctrl+x", "stop", "Stop"),
                Binding("ctrl+t", "focus_timeline", "Timeline")]

    def __init__(self) -> None:
        super().__init__()
        self.runner: BenchRunner | None = None
        self.total = 0
        self.done = 0
        self._pending: list[Event] = []  # RequestSent / FirstToken / RequestDone, in order
        self._lock = threading.Lock()
        self._timer = None
        self.server_id: str | None = None  # the server the run targets
        self.last_result = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="bench-form"):
            yield labelled("dataset", Select([(d, d) for d in DATASETS if d in ("random", "prefix")],
                                             value="random", allow_blank=False, id="dataset"), "wide")
            yield labelled("input len", Input("128", id="input-len"))
            yield labelled("output len", Input("32", id="output-len"))
            yield labelled("prompts", Input("50", id="num-prompts"))
            yield labelled("load shape", Select([(m, m) for m in LOAD_MODES], value="concurrency",
                                                allow_blank=False, id="mode"), "wide")
            yield labelled("values", Input("4", placeholder="4 16 | 2 inf", id="values"))
        with Horizontal(id="bench-actions"):
            yield Button("Start", id="start", variant="success")
            yield Button("Stop", id="stop", variant="error", disabled=True)
            yield Label("", id="target")
        yield ProgressBar(total=100, show_eta=False, id="progress")
        with Horizontal(id="bench-body"):
            with Vertical(id="timeline-pane"):
                yield Static(header(80), id="timeline-header")
                yield RequestTimeline(id="timeline")
            with Vertical(id="side-pane"):
                yield RequestDetail("Enter on a request shows its token gaps.", id="detail")
                yield Static("", id="summary")
        yield Footer()

    def on_screen_resume(self) -> None:
        self.show_target()
        if self._timer is not None and self.runner is not None:
            self._timer.resume()
            self.drain()

    def on_screen_suspend(self) -> None:
        # Only a visible screen refreshes: request events wait in _pending meanwhile.
        if self._timer is not None:
            self._timer.pause()

    def on_unmount(self) -> None:
        # The run is a thread: the app's exit would wait for it to finish on its own.
        if self.runner is not None:
            self.runner.stop("the dashboard is closing")

    def palette_commands(self):
        yield SystemCommand("Bench: start", "run the workload against the selected server", self.action_start)
        yield SystemCommand("Bench: stop", "cancel the requests in flight, keep what finished", self.action_stop)
        yield SystemCommand("Bench: timeline", "focus the per-request timeline (Enter: token gaps)",
                            self.action_focus_timeline)

    def on_mount(self) -> None:
        self.show_target()

    def show_target(self) -> None:
        server = self.app.session.selected
        text = (f"target: {server.name}  {server.base_url}  [{server.state}]" if server
                else "target: no server selected (pick one on the Servers screen)")
        self.query_one("#target", Label).update(text)

    # -- the form -> a plan ------------------------------------------------------------------

    def plan(self) -> BenchPlan:
        server = self.app.session.selected
        if server is None:
            raise PlanError("no server selected: launch or attach one on the Servers screen")
        mode = str(self.query_one("#mode", Select).value)
        num = int_field(self.query_one("#num-prompts", Input).value, "prompts per point")
        values = parse_values(self.query_one("#values", Input).value, mode)
        sweep_points = int_field(self.query_one("#values", Input).value or "4", "sweep points", 2) \
            if mode == "sweep" else 4
        return BenchPlan(server.base_url, None, server.api_key, str(self.query_one("#dataset", Select).value),
                         int_field(self.query_one("#input-len", Input).value, "input length"),
                         int_field(self.query_one("#output-len", Input).value, "output length"),
                         num, mode, values, sweep_points, slos=self.session_slos())

    def session_slos(self) -> tuple[SLO, ...]:
        """The session's SLOs as loadgen's per-request limits, so the summary has goodput."""
        return tuple(SLO(s.metric, s.limit_ms / 1000.0) for s in self.app.session.slos.slos)

    # -- running -----------------------------------------------------------------------------

    @on(Button.Pressed, "#start")
    def action_start(self) -> None:
        if self.runner is not None:
            self.notify("a benchmark is already running", severity="warning")
            return
        try:
            plan = self.plan()
        except (PlanError, ValueError) as e:
            self.notify(str(e), severity="error")
            return
        self.start(plan)

    def start(self, plan: BenchPlan, result_dir: Path | None = None) -> None:
        result_dir = result_dir or result_dir_for(self.app.session.results_dir)
        self.runner = BenchRunner(plan, result_dir, self.on_bench_event)
        self.total, self.done = plan.total_requests, 0
        self.query_one(RequestTimeline).clear()
        self.query_one("#progress", ProgressBar).update(total=self.total, progress=0)
        self.query_one("#summary", Static).update(f"running against {plan.base_url}...")
        self.set_running(True)
        selected = self.app.session.selected
        self.server_id = selected.id if selected else None
        self.app.session.events.add("bench", f"bench started: {plan.mode} {plan.values or ''} -> {result_dir}",
                                    self.server_id)
        self._timer = self.set_interval(REFRESH_S, self.drain)
        self.run_worker(self.runner.run, thread=True, group="bench", name="bench", exit_on_error=False)

    @on(Button.Pressed, "#stop")
    def action_stop(self) -> None:
        if self.runner is not None:
            self.runner.stop()
            self.notify("stopping: requests in flight are cancelled")

    def set_running(self, running: bool) -> None:
        self.query_one("#start", Button).disabled = running
        self.query_one("#stop", Button).disabled = not running

    def on_bench_event(self, event: Event) -> None:
        """Runs on the bench's own event loop thread: hand data over, never touch widgets here."""
        if isinstance(event, (RequestSent, FirstToken, RequestDone)):
            with self._lock:
                self._pending.append(event)
        if isinstance(event, RequestDone):
            payload = dataclasses.asdict(event.record)
            payload["run_id"] = self.runner.run_id if self.runner else None
            payload["server_id"] = self.server_id  # the Monitor puts it on this server's axis
            self.app.session.record("request", payload)
        elif isinstance(event, PointDone):
            # The event log is thread-safe: no hop to the UI (call_from_thread would stall this loop).
            self.app.session.events.add("bench", f"bench point {event.point.label} done: "
                                        f"{event.summary.get('completed', 0)} requests", self.server_id)

    def drain(self) -> None:
        """The events since the last drain, to the timeline in one batch (one refresh); bars of
        requests in flight move on even when nothing new came."""
        with self._lock:
            batch, self._pending = self._pending, []
        timeline = self.query_one(RequestTimeline)
        if not batch:
            if timeline.num_live:
                timeline.tick(time.time())
            return
        ended = timeline.apply(batch, time.time())
        detail = self.query_one(RequestDetail)
        if detail.record is not None and detail.record.request_id in ended:
            detail.show(timeline.get(detail.record.request_id))
        num_done = sum(isinstance(e, RequestDone) for e in batch)
        if num_done:
            self.done += num_done
            self.query_one("#progress", ProgressBar).update(progress=min(self.done, self.total))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "bench" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR,
                                                                 WorkerState.CANCELLED):
            return
        self.drain()
        self.query_one(RequestTimeline).end_run(time.time())
        if self._timer is not None:
            self._timer.stop()
        runner, self.runner = self.runner, None
        self.set_running(False)
        if event.state == WorkerState.SUCCESS:
            self.finished(event.worker.result, runner)
        else:
            error = event.worker.error
            text = f"bench failed: {error}".splitlines()[0] if error else "bench cancelled"
            self.query_one("#summary", Static).update(text)
            self.notify(text, severity="error")
            self.app.session.events.add("bench", text, self.server_id)

    def finished(self, result, runner: BenchRunner | None) -> None:
        self.last_result = result
        if not result.stopped:  # a sweep picks its own points: the bar ends full either way
            self.query_one("#progress", ProgressBar).update(total=max(self.done, 1), progress=self.done)
        points = [p.summary for p in result.points]
        where = f"saved in {result.result_dir}" if result.result_dir else "not saved"
        notes = [where, *(f"warning: {w}" for w in result.warnings)]
        if result.stopped:
            notes.insert(0, result.stopped)  # loadgen words it: "stopped early: <reason>"
        notes += slo_verdicts(points, self.app.session.slos.slos)
        self.query_one("#summary", Static).update(Group(summary_table(points, "summary"), "\n".join(notes)))
        self.app.session.events.add("bench", f"bench done: {sum(p.get('completed', 0) for p in points)} "
                                    f"requests, {where}", self.server_id)

    @on(RequestTimeline.Selected)
    def show_request(self, message: RequestTimeline.Selected) -> None:
        self.query_one(RequestDetail).show(message.record)

    def action_focus_timeline(self) -> None:
        self.query_one(RequestTimeline).focus()

