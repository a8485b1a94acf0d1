"""What `dyno bench` shows: a rich progress bar while a point runs and summary tables after."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from loadgen.events import Event, PointDone, PointStarted, RequestDone


class LiveProgress:
    """An event callback that drives one progress bar per load point."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.console = console
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                 console=console, disable=not enabled, transient=False)
        self.task = None
        self.num_failed = 0

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: Event) -> None:
        if isinstance(event, PointStarted):
            self.num_failed = 0
            self.task = self.progress.add_task(event.point.label, total=event.num_requests, status="")
        elif isinstance(event, RequestDone) and self.task is not None:
            if not event.record.ok:
                self.num_failed += 1
            if not event.record.is_warmup:
                status = f"[red]{self.num_failed} failed" if self.num_failed else ""
                self.progress.update(self.task, advance=1, status=status)
        elif isinstance(event, PointDone) and self.task is not None:
            s = event.summary
            self.progress.update(self.task, status=f"{s['request_throughput']:.2f} req/s, "
                                 f"median TTFT {s['median_ttft_ms']:.0f} ms")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return _fmt(value)


def point_table(summary: dict[str, Any]) -> Table:
    """One point, laid out as vLLM's 'Serving Benchmark Result' block."""
    table = Table(title=f"Serving benchmark result: {summary['point']}", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [("Successful requests", "completed"), ("Failed requests", "failed"),
            ("Benchmark duration (s)", "duration"), ("Total input tokens", "total_input_tokens"),
            ("Total generated tokens", "total_output_tokens"), ("Request throughput (req/s)", "request_throughput"),
            ("Request goodput (req/s)", "request_goodput"), ("Output token throughput (tok/s)", "output_throughput"),
            ("Total token throughput (tok/s)", "total_token_throughput")]
    for label, key in rows:
        table.add_row(label, _fmt(summary.get(key)))
    for metric, title in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2E latency"),
                          ("ttft_intended", "TTFT from intended send"), ("sched_lag", "Scheduling lag")):
        table.add_section()
        for stat in ("mean", "median", "p99"):
            key = f"{stat}_{metric}_ms"
            if key in summary:
                table.add_row(f"{stat.capitalize()} {title} (ms)", _fmt(summary[key]))
    return table


def points_table(summaries: list[dict[str, Any]]) -> Table:
    """Several points side by side, one row each."""
    table = Table(title="Load points")
    cols = [("point", "point"), ("ok", "completed"), ("fail", "failed"), ("req/s", "request_throughput"),
            ("out tok/s", "output_throughput"), ("good req/s", "request_goodput"),
            ("TTFT p50 ms", "median_ttft_ms"), ("TTFT p99", "p99_ttft_ms"), ("TPOT p50", "median_tpot_ms"),
            ("ITL p50", "median_itl_ms"), ("lag p50", "median_sched_lag_ms")]
    for title, _ in cols:
        table.add_column(title, justify="left" if title == "point" else "right", no_wrap=title == "point")
    for s in summaries:
        cells = [_short(s.get(key)) for _, key in cols]
        if s.get("is_lagging"):
            cells[-1] = f"[yellow]{cells[-1]}!"
        table.add_row(*cells)
    return table


def show_summaries(console: Console, summaries: list[dict[str, Any]]) -> None:
    if len(summaries) == 1:
        console.print(point_table(summaries[0]))
    elif summaries:
        console.print(points_table(summaries))
