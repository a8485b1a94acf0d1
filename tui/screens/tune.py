"""Tune screen: start a study (as `dyno tune`) or open one from its storage; the trials table
(sortable), best so far, a Pareto chart with a cursor; for the selected trial, export in any
`dyno export` format to a file, or launch it as a server and jump to its monitor."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, Select
from textual.worker import Worker, WorkerState

from optuna.study import StudyDirection

from tuner import PRESETS
from tui.bench_form import int_field, labelled
from tui.tune_runner import (FORMATS, SUFFIX, TrialRow, TunePlan, TuneRunner, export_to_file, fmt_number,
                             open_existing, study_config, trial_rows)
from tui.widgets.pareto import ParetoChart
from tui.widgets.trials_table import TrialsTable


POLL_S = 2.0  # how often a running study's trials are re-read (one SQLite read, off the UI thread)


class TuneScreen(Screen):
    CSS_PATH = "tune.tcss"
    BINDINGS = [Binding("ctrl+o", "open_study", "Open"), Binding("ctrl+r", "start_study", "Start"),
                Binding("ctrl+x", "stop_study", "Stop"), Binding("ctrl+e", "export", "Export"),
                Binding("ctrl+l", "launch", "Launch as server")]

    def __init__(self) -> None:
        super().__init__()
        self.storage: str | None = None
        self.study_name: str | None = None
        self.runner: TuneRunner | None = None
        self.rows: list[TrialRow] = []
        self.n_trials: int | None = None
        self._poll = None
        self.minimize = False  # the first objective's direction: which trial is "best so far"

    def compose(self) -> ComposeResult:
        with Horizontal(classes="form"):
            yield labelled("storage", Input(placeholder="sqlite:///f.db, *.log, postgresql://...", id="storage"),
                           "storage")
            yield labelled("study", Input("dyno", id="study-name"), "study")
            yield Button("Open", id="open")
        with Horizontal(classes="form"):
            yield labelled("trials", Input("6", id="n-trials"))
            yield labelled("objective", Select([(p, p) for p in PRESETS], value="throughput", allow_blank=False,
                                               id="objective"), "wide")
            yield labelled("prompts", Input("32", id="num-prompts"))
            yield labelled("concurrency", Input("8", id="concurrency"))
            yield labelled("fixed server flags", Input("--max-model-len 512", id="server-flags"), "flags")
            yield Button("Start", id="start", variant="success")
            yield Button("Stop", id="stop", variant="error", disabled=True)
        yield Label("no study open", id="status")
        with Horizontal(id="tune-body"):
            yield TrialsTable(id="trials")
            yield ParetoChart(id="pareto")
        with Horizontal(classes="form"):
            yield labelled("format", Select([(f, f) for f in (*FORMATS, "all")], value="dyno", allow_blank=False,
                                            id="format"), "wide")
            yield labelled("export file", Input(placeholder="default: <results>/exports/<study>-trial-N-...",
                                                id="export-path"), "path")
            yield Button("Export", id="export")
            yield Button("Launch as server", id="launch", variant="primary")
        yield Footer()

    def on_screen_suspend(self) -> None:
        if self._poll is not None:  # only a visible screen re-reads the study
            self._poll.pause()

    def on_screen_resume(self) -> None:
        if self._poll is not None and self.runner is not None:
            self._poll.resume()

    def on_unmount(self) -> None:
        if self.runner is not None:  # a thread: the app's exit would wait for the whole study
            self.runner.stop()

    def palette_commands(self):
        yield SystemCommand("Tune: open study", "load a study from the storage URL", self.action_open_study)
        yield SystemCommand("Tune: start study", "run trials as dyno tune does", self.action_start_study)
        yield SystemCommand("Tune: stop study", "stop after the trial in progress", self.action_stop_study)
        yield SystemCommand("Tune: export trial", "write the selected trial in the chosen format",
                            self.action_export)
        yield SystemCommand("Tune: launch trial as server", "start it and show its monitor", self.action_launch)

    def on_mount(self) -> None:
        default = self.app.session.results_dir / "dyno-tune.db"
        self.query_one("#storage", Input).value = f"sqlite:///{default}"

    # -- opening and starting -----------------------------------------------------------------

    def where(self) -> tuple[str, str]:
        storage = self.query_one("#storage", Input).value.strip()
        name = self.query_one("#study-name", Input).value.strip()
        if not storage or not name:
            raise ValueError("give a storage URL and a study name")
        return storage, name

    @on(Button.Pressed, "#open")
    def action_open_study(self) -> None:
        try:
            storage, name = self.where()
        except ValueError as e:
            self.notify(str(e), severity="error")
            return
        self.open_study(storage, name)

    def open_study(self, storage: str, name: str) -> None:
        def load() -> list[TrialRow]:
            study = open_existing(storage, name)
            self.minimize = study.directions[0] == StudyDirection.MINIMIZE
            return trial_rows(study)

        self.storage, self.study_name, self.n_trials = storage, name, None
        self.run_worker(load, thread=True, group="tune-open", exit_on_error=False)

    def plan(self) -> TunePlan:
        storage, name = self.where()
        if storage.startswith("sqlite:///"):  # a fresh results dir: the database's folder too
            Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return TunePlan(name, storage, self.app.session.results_dir / "tune",
                        int_field(self.query_one("#n-trials", Input).value, "trials"),
                        str(self.query_one("#objective", Select).value),
                        int_field(self.query_one("#num-prompts", Input).value, "prompts"),
                        concurrency=int_field(self.query_one("#concurrency", Input).value, "concurrency"),
                        server_flags=self.query_one("#server-flags", Input).value)

    @on(Button.Pressed, "#start")
    def action_start_study(self) -> None:
        if self.runner is not None:
            self.notify("a study is already running", severity="warning")
            return
        try:
            plan = self.plan()
            config = study_config(plan)
        except Exception as e:  # noqa: BLE001 - any bad form value is one line, not a crash
            self.notify(f"cannot start the study: {e}".splitlines()[0], severity="error")
            return
        self.start(config)

    def start(self, config) -> None:
        self.storage, self.study_name, self.n_trials = config.storage, config.study_name, config.n_trials
        self.minimize = config.objective.directions[0] == "minimize"
        self.runner = TuneRunner(config, self.on_trial)
        self.set_running(True)
        self.query_one("#status", Label).update(f"study {config.study_name!r}: starting {config.n_trials} trials")
        self.app.session.events.add("trial", f"study {config.study_name} started ({config.n_trials} trials)")
        self.run_worker(self.runner.run, thread=True, group="tune-run", exit_on_error=False)
        self._poll = self.set_interval(POLL_S, self.poll)

    def poll(self) -> None:
        """While a study runs: the trial in progress (RUNNING) shows too, read off the UI thread."""
        storage, name = self.storage, self.study_name
        self.run_worker(lambda: trial_rows(open_existing(storage, name)), thread=True, group="tune-poll",
                        exclusive=True, exit_on_error=False)

    def on_trial(self, study, trial) -> None:
        """Optuna's callback, on the study's thread: rows are read there, shown on the UI's."""
        rows = trial_rows(study)
        text = f"trial #{trial.number} {trial.state.name.lower()}"
        self.app.call_from_thread(self.show_rows, rows)
        self.app.call_from_thread(self.app.session.events.add, "trial", text)

    @on(Button.Pressed, "#stop")
    def action_stop_study(self) -> None:
        if self.runner is not None:
            self.runner.stop()
            self.notify("the study stops after the trial in progress")

    def set_running(self, running: bool) -> None:
        self.query_one("#start", Button).disabled = running
        self.query_one("#stop", Button).disabled = not running

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        group = event.worker.group
        if group not in ("tune-open", "tune-run", "tune-export", "tune-poll") or event.state not in (
                WorkerState.SUCCESS, WorkerState.ERROR):
            return
        if group == "tune-poll":  # the study may not exist yet on the first poll: not an error
            if event.state == WorkerState.SUCCESS and self.runner is not None:
                self.show_rows(event.worker.result)
            return
        if event.state == WorkerState.ERROR:
            self.notify(f"{group.removeprefix('tune-')}: {event.worker.error}".splitlines()[0], severity="error")
        elif group == "tune-open":
            self.show_rows(event.worker.result)
        elif group == "tune-run":
            self.show_rows(trial_rows(event.worker.result))
        elif group == "tune-export":
            self.notify(f"wrote {event.worker.result}")
            self.app.session.events.add("info", f"exported to {event.worker.result}")
        if group == "tune-run":
            self.runner = None
            self._poll.stop()
            self.set_running(False)

    # -- showing ------------------------------------------------------------------------------

    def show_rows(self, rows: list[TrialRow]) -> None:
        self.rows = rows
        self.query_one(TrialsTable).set_rows(rows)
        self.query_one(ParetoChart).set_rows(rows)
        self.query_one("#status", Label).update(self.status_text())
        current = self.query_one(TrialsTable).current
        self.query_one(ParetoChart).set_cursor(current.number if current else None)

    def status_text(self) -> str:
        done = [r for r in self.rows if r.state in ("COMPLETE", "FAIL", "PRUNED")]
        total = f"/{self.n_trials}" if self.n_trials else ""
        running = [r.number for r in self.rows if r.state == "RUNNING"]
        complete = [r for r in self.rows if r.state == "COMPLETE" and r.values]
        best = "no complete trial yet"
        if complete:
            pick = min if self.minimize else max
            top = pick(complete, key=lambda r: r.values[0])
            best = f"best so far: #{top.number} {fmt_number(top.values[0])}"
        now = f" · trial #{running[0]} running" if running else ""
        return f"study {self.study_name!r} in {self.storage}: {len(done)}{total} trials finished{now} · {best}"

    @on(TrialsTable.TrialHighlighted)
    def follow_table(self, message: TrialsTable.TrialHighlighted) -> None:
        self.query_one(ParetoChart).set_cursor(message.row.number)

    @on(ParetoChart.CursorMoved)
    def follow_chart(self, message: ParetoChart.CursorMoved) -> None:
        self.query_one(TrialsTable).select_trial(message.row.number)

    # -- the selected trial -------------------------------------------------------------------

    def selected(self) -> TrialRow | None:
        row = self.query_one(TrialsTable).current
        if row is None:
            self.notify("no trial selected", severity="error")
        elif not row.flags:
            self.notify(f"trial {row.number} never launched a server; pick another", severity="error")
            return None
        return row

    def export_path(self, row: TrialRow, fmt: str) -> Path:
        typed = self.query_one("#export-path", Input).value.strip()
        if typed:
            return Path(typed)
        name = f"{self.study_name}-trial-{row.number}"
        return self.app.session.results_dir / "exports" / (name if fmt == "all" else f"{name}-{SUFFIX[fmt]}")

    @on(Button.Pressed, "#export")
    def action_export(self) -> None:
        row = self.selected()
        if row is None or self.storage is None or self.study_name is None:
            return
        fmt = str(self.query_one("#format", Select).value)
        path = self.export_path(row, fmt)
        storage, name = self.storage, self.study_name
        self.run_worker(lambda: export_to_file(storage, name, row.number, fmt, path), thread=True,
                        group="tune-export", exit_on_error=False)

    @on(Button.Pressed, "#launch")
    def action_launch(self) -> None:
        row = self.selected()
        if row is None:
            return
        try:
            handle = self.app.session.launch(dict(row.flags))
        except Exception as e:  # noqa: BLE001 - e.g. a replayed session launches nothing
            self.notify(f"cannot launch: {e}".splitlines()[0], severity="error")
            return
        self.app.session.select(handle.id)
        self.app.session.events.add("trial", f"launched trial #{row.number} of {self.study_name} as {handle.name}",
                                    handle.id)
        self.app.switch_to("monitor")
