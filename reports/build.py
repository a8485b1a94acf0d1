"""One function assembles every figure from the loaded frames and hands them to the writers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from reports import plots  # noqa: E402
from reports.load import Runs, load_runs, load_study  # noqa: E402

log = logging.getLogger(__name__)


@dataclass
class ReportFigure:
    name: str  # file stem, e.g. "latency-cdf"
    title: str
    figure: Figure

    def data(self) -> pd.DataFrame:
        """Every labelled line and bar of the figure as tidy rows: axis, series, x, y."""
        rows = []
        for ax in self.figure.axes:
            title = ax.get_title()
            for line in ax.get_lines():
                label = str(line.get_label())
                if label.startswith("_"):
                    continue
                for x, y in zip(line.get_xdata(), line.get_ydata()):
                    rows.append({"axis": title, "series": label, "x": x, "y": y})
            for container in ax.containers:
                label = str(container.get_label())
                ticks = [t.get_text() for t in (ax.get_yticklabels() if ax.get_ylabel() == "parameter"
                                                  else ax.get_xticklabels())]
                for i, y in enumerate(getattr(container, "datavalues", [])):
                    rows.append({"axis": title, "series": label, "x": ticks[i] if i < len(ticks) else i,
                                 "y": y})
        return pd.DataFrame(rows, columns=["axis", "series", "x", "y"])


@dataclass
class Report:
    figures: list[ReportFigure] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    title: str = "dyno report"


def _figure(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 4.2) -> Figure:
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    fig.subplots(nrows, ncols, squeeze=False)
    return fig


def figures_for_runs(runs: Runs) -> tuple[list[ReportFigure], dict[str, pd.DataFrame]]:
    figs, tables = [], {}
    if not runs.latencies.empty:
        fig = _figure(2, 2)
        for ax, metric in zip(fig.axes, plots.LATENCY_METRICS_ORDER):
            plots.plot_latency_cdf(ax, runs.latencies, metric)
        figs.append(ReportFigure("latency-cdf", "Latency distributions (CDF)", fig))
    if not runs.points.empty:
        fig = _figure(2, 2)
        plots.plot_throughput(fig.axes[0], runs.points)
        for ax, metric in zip(fig.axes[1:], ("ttft", "tpot", "e2el")):
            plots.plot_load_latency(ax, runs.points, metric)
        figs.append(ReportFigure("load-curves", "Load curves", fig))
        keep = [c for c in ["run", "point", "x", "completed", "failed", "duration", *plots.COMPARE_METRICS,
                            "request_goodput"] if c in runs.points]
        tables["points"] = runs.points[keep]
        sat = []
        for run, g in plots._by_run(runs.points):
            i = plots.saturation_index(g)
            if i is not None:
                sat.append({"run": run, "point": g["point"].iloc[i], "x": g["x"].iloc[i],
                            "output_throughput": g["output_throughput"].iloc[i]})
        if sat:
            tables["saturation"] = pd.DataFrame(sat)
    for run in runs.names:
        tl = runs.timeline[runs.timeline.run == run] if len(runs.timeline) else runs.timeline
        sv = runs.server[runs.server.run == run] if len(runs.server) else runs.server
        if tl.empty and sv.empty:
            continue
        fig = _figure(2, 2, height=3.6)
        plots.plot_in_flight(fig.axes[0], tl)
        plots.plot_token_rate(fig.axes[1], tl)
        plots.plot_server_queue(fig.axes[2], sv)
        plots.plot_kv_usage(fig.axes[3], sv)
        fig.suptitle(f"Run {run} over time")
        figs.append(ReportFigure(f"timeseries-{_slug(run)}", f"Time series: {run}", fig))
    table = plots.comparison_table(runs.points)
    if not table.empty:
        fig = _figure(width=8)
        plots.plot_comparison(fig.axes[0], table)
        figs.append(ReportFigure("comparison", "Comparison of runs", fig))
        tables["comparison"] = table
    return figs, tables


def figures_for_study(trials: pd.DataFrame) -> tuple[list[ReportFigure], dict[str, pd.DataFrame]]:
    figs: list[ReportFigure] = []
    name = _slug(trials.attrs.get("study_name", "study"))
    fig = _figure()
    plots.plot_history(fig.axes[0], trials)
    figs.append(ReportFigure(f"study-{name}-history", "Study: objective history", fig))
    if "value_1" in trials:
        fig = _figure()
        plots.plot_pareto(fig.axes[0], trials)
        figs.append(ReportFigure(f"study-{name}-pareto", "Study: Pareto front", fig))
    fig = _figure()
    plots.plot_importances(fig.axes[0], trials)
    figs.append(ReportFigure(f"study-{name}-importances", "Study: parameter importances", fig))
    params = [c[len("param_"):] for c in trials.columns if c.startswith("param_")]
    if params and (trials.state == "COMPLETE").any():
        fig = _figure(min(len(params), 3), (len(params) + 2) // 3, width=4.5, height=3.5)
        for ax, p in zip(fig.axes, params):
            plots.plot_param(ax, trials, p)
        for ax in fig.axes[len(params):]:
            ax.set_visible(False)
        figs.append(ReportFigure(f"study-{name}-params", "Study: parameters vs objective", fig))
    keep = [c for c in trials.columns if c not in ("duration_s",)]
    return figs, {f"study-{name}-trials": trials[keep]}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in str(text))


def build_report(run_paths: list[str | Path], out: str | Path, storage: str | None = None,
                 study_name: str | None = None, formats: tuple[str, ...] = ("html", "md", "csv")) -> Report:
    """Read runs and a study, draw every figure that the inputs allow, and write the report in
    each format under `out`. Problems are collected (one line each), never raised."""
    from reports import csv as csv_out, html, markdown

    report = Report()
    if run_paths:
        runs = load_runs(run_paths)
        report.problems += runs.problems
        figs, tables = figures_for_runs(runs)
        report.figures += figs
        report.tables.update(tables)
    if study_name:
        try:
            trials = load_study(storage or "sqlite:///dyno-tune.db", study_name)
        except Exception as e:  # a bad storage URL or missing study is one line, not a traceback
            report.problems.append(f"study {study_name!r}: {e}".splitlines()[0])
        else:
            report.problems += trials.attrs.get("problems", [])
            note = (trials.attrs.get("importances") or {}).get("note")
            if note:
                report.problems.append(f"study {study_name!r}: {note}")
            figs, tables = figures_for_study(trials)
            report.figures += figs
            report.tables.update(tables)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if "html" in formats:
        html.write_html(report, out / "report.html")
    if "md" in formats:
        markdown.write_markdown(report, out)
    if "csv" in formats:
        csv_out.write_csv(report, out / "csv")
    return report
