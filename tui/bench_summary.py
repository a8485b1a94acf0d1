"""A finished run's summary as the dashboard shows it: the numbers people read first, per point."""

from __future__ import annotations

from typing import Any

from rich.table import Table

# (summary key, column title, format): loadgen's summary keys, as `dyno bench` prints them.
KEY_METRICS: tuple[tuple[str, str, str], ...] = (
    ("completed", "done", "{:.0f}"),
    ("failed", "failed", "{:.0f}"),
    ("request_throughput", "req/s", "{:.2f}"),
    ("output_throughput", "out tok/s", "{:.1f}"),
    ("median_ttft_ms", "TTFT p50 ms", "{:.1f}"),
    ("p99_ttft_ms", "TTFT p99 ms", "{:.1f}"),
    ("median_tpot_ms", "TPOT p50 ms", "{:.2f}"),
    ("median_itl_ms", "ITL p50 ms", "{:.2f}"),
    ("p99_itl_ms", "ITL p99 ms", "{:.2f}"),
    ("median_e2el_ms", "E2E p50 ms", "{:.1f}"),
)


def fmt(value: Any, pattern: str = "{:.4g}") -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return pattern.format(value)
    return str(value)


def summary_table(points: list[dict[str, Any]], title: str = "") -> Table:
    """One row per metric, one column per load point (fits a narrow side pane)."""
    table = Table(title=title or None, expand=False, show_edge=False, pad_edge=False)
    table.add_column("metric")
    for p in points:
        table.add_column(str(p.get("point", "")), justify="right")
    for key, name, pattern in KEY_METRICS:
        table.add_row(name, *(fmt(p.get(key), pattern) for p in points))
    return table


STAT_KEYS = {"p50": "median", "mean": "mean", "p90": "p90", "p95": "p95", "p99": "p99"}


def slo_verdicts(points: list[dict[str, Any]], slos: list) -> list[str]:
    """Each point's measured statistic against each session SLO (tui.slo.Slo: metric, stat,
    limit_ms), e.g. "concurrency=4: ttft_p99 41.2ms <= 500ms PASS"."""
    lines = []
    for p in points:
        for slo in slos:
            value = p.get(f"{STAT_KEYS.get(slo.stat, slo.stat)}_{slo.metric}_ms")
            if value is None:
                continue
            verdict = "PASS" if value <= slo.limit_ms else "FAIL"
            lines.append(f"{p.get('point')}: {slo.metric}_{slo.stat} {value:.1f}ms "
                         f"{'<=' if verdict == 'PASS' else '>'} {slo.limit_ms:g}ms {verdict}")
    return lines
