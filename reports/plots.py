"""Each plot is `plot_x(ax, df, ...) -> None` drawing on a given axis from one tidy frame of
reports.load (GuideLLM's layout). Lines carry labels; those starting with "_" are decorations.
The numbers a figure shows are read back from its axes for the CSV tables (reports.csv)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from reports.load import parse_slos  # noqa: E402

METRIC_NAMES = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2el": "E2E latency"}
LATENCY_METRICS_ORDER = ("ttft", "tpot", "itl", "e2el")
SATURATION_FRACTION = 0.95


def _note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _legend(ax: Axes) -> None:
    if any(not str(h.get_label()).startswith("_") for h in ax.get_legend_handles_labels()[0]):
        ax.legend(fontsize=8)


# ---- latency distributions -------------------------------------------------------------------


def plot_latency_cdf(ax: Axes, latencies: pd.DataFrame, metric: str = "ttft") -> None:
    """Empirical CDF of one latency metric, one line per run (per run and point when a run has
    several load points)."""
    name = METRIC_NAMES.get(metric, metric)
    data = latencies[latencies.metric == metric]
    ax.set_title(f"{name} distribution")
    ax.set_xlabel(f"{name} (ms)")
    ax.set_ylabel("fraction of requests ≤ x")
    if data.empty:
        _note(ax, f"no {name} samples")
        return
    for run, per_run in data.groupby("run", sort=False):
        groups = list(per_run.groupby("point", sort=False))
        for point, g in groups:
            xs = np.sort(g["ms"].to_numpy(float))
            ys = np.arange(1, len(xs) + 1) / len(xs)
            label = str(run) if len(groups) == 1 else f"{run} · {point}"
            ax.plot(xs, ys, drawstyle="steps-post", label=label)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    _legend(ax)


# ---- load curves -----------------------------------------------------------------------------


def saturation_index(points: pd.DataFrame) -> int | None:
    """The lightest load point reaching 95% of the run's peak output throughput (points
    ordered by load): past it, more load buys latency, not throughput."""
    tput = pd.to_numeric(points.get("output_throughput"), errors="coerce").to_numpy(float)
    if len(tput) < 2 or not np.isfinite(tput).any():
        return None
    peak = np.nanmax(tput)
    return int(np.argmax(tput >= SATURATION_FRACTION * peak))


def _by_run(points: pd.DataFrame):
    for run, g in points.groupby("run", sort=False):
        yield run, g.sort_values("x")


def plot_throughput(ax: Axes, points: pd.DataFrame) -> None:
    """Output tokens/s against offered load, one line per run, its saturation point marked."""
    ax.set_title("Throughput vs load")
    ax.set_ylabel("output throughput (tokens/s)")
    ax.set_xlabel(points["x_label"].iloc[0] if len(points) else "load")
    if points.empty:
        _note(ax, "no load points")
        return
    for run, g in _by_run(points):
        line, = ax.plot(g["x"], g["output_throughput"], marker="o", label=str(run))
        i = saturation_index(g)
        if i is not None:
            ax.plot([g["x"].iloc[i]], [g["output_throughput"].iloc[i]], marker="*", markersize=16,
                    linestyle="none", color=line.get_color(), label=f"saturation ({run})")
    ax.grid(alpha=0.3)
    _legend(ax)


def plot_load_latency(ax: Axes, points: pd.DataFrame, metric: str = "ttft") -> None:
    """p50 (solid) and p99 (dashed) of one latency against load, the SLO as a horizontal line."""
    name = METRIC_NAMES.get(metric, metric)
    ax.set_title(f"{name} vs load")
    ax.set_ylabel(f"{name} (ms)")
    ax.set_xlabel(points["x_label"].iloc[0] if len(points) else "load")
    if points.empty or f"median_{metric}_ms" not in points:
        _note(ax, f"no {name} statistics")
        return
    for run, g in _by_run(points):
        line, = ax.plot(g["x"], g[f"median_{metric}_ms"], marker="o", label=f"{run} p50")
        ax.plot(g["x"], g[f"p99_{metric}_ms"], marker="^", linestyle="--", color=line.get_color(),
                label=f"{run} p99")
    slos = {}
    for text in points.get("slos", []):
        slos.update(parse_slos(text))
    if metric in slos:
        ax.axhline(slos[metric], color="red", linestyle=":", label=f"SLO {name} ≤ {slos[metric]:g} ms")
    ax.grid(alpha=0.3)
    _legend(ax)


# ---- time series -----------------------------------------------------------------------------


def plot_in_flight(ax: Axes, timeline: pd.DataFrame) -> None:
    _plot_timeline(ax, timeline, "in_flight", "Requests in flight (client)", "requests")


def plot_token_rate(ax: Axes, timeline: pd.DataFrame) -> None:
    _plot_timeline(ax, timeline, "output_tokens_per_s", "Output tokens/s (client)", "tokens/s")


def _plot_timeline(ax: Axes, timeline: pd.DataFrame, column: str, title: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("time since run start (s)")
    ax.set_ylabel(ylabel)
    if timeline.empty:
        _note(ax, "no request records")
        return
    for run, g in timeline.groupby("run", sort=False):
        ax.plot(g["t_s"], g[column], drawstyle="steps-post", label=str(run))
    ax.grid(alpha=0.3)
    _legend(ax)


def plot_server_queue(ax: Axes, server: pd.DataFrame) -> None:
    """The server's running and waiting requests over time."""
    ax.set_title("Server: running / waiting requests")
    ax.set_xlabel("time since run start (s)")
    ax.set_ylabel("requests")
    data = server[server.metric.isin(["running", "waiting"])] if len(server) else server
    if data.empty:
        _note(ax, "no server metrics (server_metrics.jsonl)")
        return
    for (run, metric), g in data.groupby(["run", "metric"], sort=False):
        ax.plot(g["t_s"], g["value"], label=f"{run} {metric}", linestyle="-" if metric == "running" else "--")
    ax.grid(alpha=0.3)
    _legend(ax)


def plot_kv_usage(ax: Axes, server: pd.DataFrame) -> None:
    ax.set_title("Server: KV cache usage")
    ax.set_xlabel("time since run start (s)")
    ax.set_ylabel("KV cache used (%)")
    data = server[server.metric == "kv_cache_usage_perc"] if len(server) else server
    if data.empty:
        _note(ax, "no KV cache metric in server_metrics.jsonl")
        return
    for run, g in data.groupby("run", sort=False):
        ax.plot(g["t_s"], 100.0 * g["value"], label=str(run))
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    _legend(ax)


# ---- studies ---------------------------------------------------------------------------------


def _objective_label(trials: pd.DataFrame, i: int = 0) -> str:
    metrics = trials.attrs.get("metrics") or []
    directions = trials.attrs.get("directions") or []
    name = metrics[i] if i < len(metrics) else f"objective {i}"
    way = f" ({directions[i]})" if i < len(directions) else ""
    unit = " (ms)" if name.endswith("_ms") else " (tokens/s)" if name.endswith("throughput") else \
        " (requests/s)" if name.endswith(("goodput", "request_throughput")) else ""
    return f"{name}{unit}{way}"


def plot_history(ax: Axes, trials: pd.DataFrame) -> None:
    """Objective value of each complete trial and the best so far; failed trials marked."""
    ax.set_title(f"Study {trials.attrs.get('study_name', '')}: objective history")
    ax.set_xlabel("trial number")
    ax.set_ylabel(_objective_label(trials))
    done = trials[trials.state == "COMPLETE"].sort_values("number") if len(trials) else trials
    failed = trials[trials.state == "FAIL"] if len(trials) else trials
    if done.empty:
        _note(ax, f"no complete trials ({len(failed)} failed)")
        return
    ax.plot(done["number"], done["value_0"], marker="o", linestyle="none", label="complete trial")
    maximize = (trials.attrs.get("directions") or ["maximize"])[0] == "maximize"
    vals = done["value_0"].astype(float)
    best = vals.cummax() if maximize else vals.cummin()
    ax.plot(done["number"], best, drawstyle="steps-post", label="best so far")
    if len(failed):
        ax.plot(failed["number"], [float(vals.min())] * len(failed), marker="x", color="red",
                linestyle="none", label="failed trial")
    ax.grid(alpha=0.3)
    _legend(ax)


def plot_pareto(ax: Axes, trials: pd.DataFrame) -> None:
    """First two objectives of every complete trial, the Pareto front joined, the chosen starred."""
    ax.set_title("Pareto front")
    ax.set_xlabel(_objective_label(trials, 0))
    ax.set_ylabel(_objective_label(trials, 1))
    if "value_1" not in trials:
        _note(ax, "single-objective study: no Pareto front")
        return
    done = trials[trials.state == "COMPLETE"]
    if done.empty:
        _note(ax, "no complete trials")
        return
    ax.plot(done["value_0"], done["value_1"], marker="o", linestyle="none", color="0.6", label="trial")
    front = done[done.pareto].sort_values("value_0")
    ax.plot(front["value_0"], front["value_1"], marker="o", label="Pareto front")
    chosen = done[done.chosen]
    ax.plot(chosen["value_0"], chosen["value_1"], marker="*", markersize=18, linestyle="none",
            color="red", label=f"chosen (trial {int(chosen['number'].iloc[0])})" if len(chosen) else "chosen")
    ax.grid(alpha=0.3)
    _legend(ax)


def plot_importances(ax: Axes, trials: pd.DataFrame) -> None:
    imp = (trials.attrs.get("importances") or {})
    ax.set_title(f"Parameter importances ({imp.get('method') or 'Optuna'}, first objective)")
    values: dict[str, float] = imp.get("values") or {}
    if not values:
        _note(ax, imp.get("note") or "no importances")
        return
    names = list(values)[::-1]
    ax.barh(names, [values[n] for n in names], label="importance")
    ax.set_xlabel("importance (fraction of objective variance)")
    ax.set_ylabel("parameter")


def plot_param(ax: Axes, trials: pd.DataFrame, param: str) -> None:
    """One parameter against the first objective (complete trials)."""
    ax.set_title(f"{param} vs objective")
    ax.set_xlabel(param)
    ax.set_ylabel(_objective_label(trials))
    done = trials[(trials.state == "COMPLETE") & trials[f"param_{param}"].notna()] if len(trials) else trials
    if done.empty:
        _note(ax, "no complete trials")
        return
    xs = done[f"param_{param}"]
    if not pd.api.types.is_numeric_dtype(xs):
        cats = sorted(map(str, xs.unique()))
        ax.set_xticks(range(len(cats)), cats)
        xs = xs.astype(str).map({c: i for i, c in enumerate(cats)})
    ax.plot(xs.to_numpy(float), done["value_0"].to_numpy(float), marker="o", linestyle="none", label="trial")
    chosen = done[done.chosen]
    if len(chosen):
        ax.plot(xs[chosen.index].to_numpy(float), chosen["value_0"].to_numpy(float), marker="*",
                markersize=16, linestyle="none", color="red", label="chosen")
    ax.grid(alpha=0.3)
    _legend(ax)


# ---- comparisons -----------------------------------------------------------------------------

COMPARE_METRICS = ("output_throughput", "request_throughput", "median_ttft_ms", "p99_ttft_ms",
                   "median_tpot_ms", "p99_tpot_ms", "median_e2el_ms", "p99_e2el_ms")


def comparison_table(points: pd.DataFrame) -> pd.DataFrame:
    """Runs side by side at each load point they share (by label; by position when no label is
    shared): value per run and its ratio to the first run."""
    runs = list(dict.fromkeys(points["run"])) if len(points) else []
    if len(runs) < 2:
        return pd.DataFrame(columns=["point", "metric", "run", "value", "ratio"])
    per_run = {r: points[points.run == r].reset_index(drop=True) for r in runs}
    shared = set.intersection(*(set(f["point"]) for f in per_run.values()))
    if shared:
        keys = [p for p in per_run[runs[0]]["point"] if p in shared]
        pick = {r: {p: f[f.point == p].iloc[0] for p in keys} for r, f in per_run.items()}
    else:
        n = min(len(f) for f in per_run.values())
        keys = [f"#{i}" for i in range(n)]
        pick = {r: {f"#{i}": f.iloc[i] for i in range(n)} for r, f in per_run.items()}
    rows = []
    for key in keys:
        for metric in COMPARE_METRICS:
            base = pick[runs[0]][key].get(metric)
            for r in runs:
                value = pick[r][key].get(metric)
                ok = value is not None and base is not None and np.isfinite(value) and base not in (0, None)
                rows.append({"point": key, "metric": metric, "run": r, "value": value,
                             "ratio": float(value) / float(base) if ok else float("nan")})
    return pd.DataFrame(rows)


def plot_comparison(ax: Axes, table: pd.DataFrame, point: Any = None) -> None:
    """Ratio of each run to the first, per metric, at one shared load point (the last one)."""
    ax.set_title("Comparison (ratio to the first run)")
    ax.set_ylabel("ratio to the first run (×)")
    if table.empty:
        _note(ax, "need two or more runs to compare")
        return
    point = table["point"].iloc[-1] if point is None else point
    data = table[table.point == point]
    runs = list(dict.fromkeys(data["run"]))
    metrics = list(dict.fromkeys(data["metric"]))
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        ratios = [float(data[(data.run == run) & (data.metric == m)]["ratio"].iloc[0]) for m in metrics]
        ax.bar(np.arange(len(metrics)) + i * width, ratios, width, label=str(run))
    ax.set_xticks(np.arange(len(metrics)) + width * (len(runs) - 1) / 2, metrics, rotation=30, ha="right",
                  fontsize=8)
    ax.set_xlabel(f"metric at {point}")
    ax.axhline(1.0, color="black", linewidth=0.8, label="_base")
    _legend(ax)
