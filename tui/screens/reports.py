"""Reports screen: result dirs and studies found under the results dir (or a folder or file you
type); Enter builds a report of the chosen one with the reports package, as `dyno report` does,
and shows where it went with its key numbers; `o` opens it in the system viewer."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Input, Static
from textual.worker import Worker, WorkerState

from tui.reports_build import BuiltReport, ReportTarget, build, open_in_viewer
from tui.reports_scan import find_result_dirs, find_storages


def scan(root: Path) -> list[ReportTarget]:
    """Everything reportable under root: result dirs first, then each study of each storage."""
    targets = []
    for found in find_result_dirs(root):
        name = str(found.path.relative_to(root)) if found.path.is_relative_to(root) and found.path != root \
            else found.path.name
        targets.append(ReportTarget("run", name, path=found.path, details=found.describe()))
    for storage in find_storages(root):
        if storage.problem:
            targets.append(ReportTarget("storage", storage.path.name, details=f"unreadable: {storage.problem}"))
        for study in storage.studies:
            targets.append(ReportTarget("study", study, storage=storage.url, details=storage.url))
    return targets


class ReportsScreen(Screen):
    CSS_PATH = "reports.tcss"
    BINDINGS = [Binding("ctrl+f", "scan", "Rescan"), Binding("ctrl+b", "build", "Build report"),
                Binding("o", "open_report", "Open in viewer")]

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[ReportTarget] = []
        self.built: BuiltReport | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="form"):
            yield Input(placeholder="folder or file to scan (default: the results dir)", id="scan-path")
            yield Button("Scan", id="scan")
            yield Button("Build report", id="build", variant="success")
            yield Button("Open", id="open")
        yield DataTable(id="found", cursor_type="row", zebra_stripes=True)
        yield Static("Enter (or Build report) builds the highlighted entry's report.", id="report-info")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for title in ("kind", "name", "details"):
            table.add_column(title, key=title)
        self.action_scan()

    def on_screen_resume(self) -> None:
        self.action_scan()

    def palette_commands(self):
        yield SystemCommand("Reports: rescan", "look for result dirs and studies again", self.action_scan)
        yield SystemCommand("Reports: build report", "of the highlighted run or study", self.action_build)
        yield SystemCommand("Reports: open report", "in the system viewer", self.action_open_report)

    @on(Button.Pressed, "#scan")
    @on(Input.Submitted, "#scan-path")
    def action_scan(self) -> None:
        typed = self.query_one("#scan-path", Input).value.strip()
        root = Path(typed).expanduser() if typed else self.app.session.results_dir
        if typed and not root.exists():
            self.notify(f"{root}: no such file or folder", severity="error")
            return
        self.run_worker(lambda: scan(root), thread=True, group="reports-scan", exclusive=True,
                        exit_on_error=False)

    def show_targets(self, targets: list[ReportTarget]) -> None:
        self.targets = targets
        table = self.query_one(DataTable)
        table.clear()
        for i, t in enumerate(targets):
            table.add_row(t.kind, t.name, t.details, key=str(i))
        if not targets:
            self.query_one("#report-info", Static).update("no result dirs or studies found here")

    @on(DataTable.RowSelected)
    @on(Button.Pressed, "#build")
    def action_build(self) -> None:
        table = self.query_one(DataTable)
        if not self.targets or not 0 <= table.cursor_row < len(self.targets):
            self.notify("nothing to build: pick a result dir or a study", severity="error")
            return
        target = self.targets[table.cursor_row]
        if target.kind == "storage":
            self.notify(f"{target.name}: {target.details}", severity="error")
            return
        reports_dir = self.app.session.results_dir / "reports"
        self.query_one("#report-info", Static).update(f"building the report of {target.kind} {target.name} ...")
        self.run_worker(lambda: build(target, reports_dir), thread=True, group="reports-build",
                        exclusive=True, exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        group = event.worker.group
        if group not in ("reports-scan", "reports-build") or event.state not in (WorkerState.SUCCESS,
                                                                                  WorkerState.ERROR):
            return
        if event.state == WorkerState.ERROR:
            text = f"{group.removeprefix('reports-')} failed: {event.worker.error}".splitlines()[0]
            self.query_one("#report-info", Static).update(text)
            self.notify(text, severity="error")
        elif group == "reports-scan":
            self.show_targets(event.worker.result)
        else:
            self.show_built(event.worker.result)

    def show_built(self, built: BuiltReport) -> None:
        self.built = built
        lines = [f"report of {built.target.kind} {built.target.name}: {built.num_figures} figures",
                 f"written to {built.html}", *built.numbers]
        lines += [f"problem: {p}" for p in built.problems[:5]]
        if not built.num_figures:
            lines.append("nothing could be drawn from it")
        self.query_one("#report-info", Static).update("\n".join(lines))
        self.app.session.events.add("info", f"report built: {built.html}")

    @on(Button.Pressed, "#open")
    def action_open_report(self) -> None:
        if self.built is None or not self.built.html.exists():
            self.notify("build a report first", severity="error")
            return
        try:
            open_in_viewer(self.built.html)
        except OSError as e:
            self.notify(f"cannot open a viewer: {e}; the report is {self.built.html}", severity="error")
