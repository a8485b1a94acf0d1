"""Each plot's axis data (lines' xdata/ydata, bar heights) from known inputs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from pytest import approx  # noqa: E402

from reports import load_runs, load_study  # noqa: E402
from reports import plots  # noqa: E402


def axis():
    return Figure().subplots()


def lines(ax) -> dict:
    return {str(l.get_label()): (list(l.get_xdata()), list(l.get_ydata())) for l in ax.get_lines()}


@pytest.fixture
def runs(run_a, run_b):
    return load_runs([run_a, run_b])


def test_latency_cdf_one_line_per_run(runs):
    ax = axis()
    plots.plot_latency_cdf(ax, runs.latencies, "itl")
    got = lines(ax)
    assert set(got) == {"a", "b"}
    assert got["a"][0] == approx([100.0, 100.0, 200.0, 200.0])
    assert got["a"][1] == approx([0.25, 0.5, 0.75, 1.0])
    assert ax.get_xlabel() == "ITL (ms)" and ax.get_title() == "ITL distribution"


def test_throughput_curve_marks_saturation(runs):
    ax = axis()
    plots.plot_throughput(ax, runs.points)
    got = lines(ax)
    assert got["a"] == ([1, 2, 4], [10.0, 19.0, 19.5])
    # 95% of the peak 19.5 is 18.5: concurrency 2 is the first point reaching it
    assert got["saturation (a)"] == ([2], [19.0])
    assert got["saturation (b)"] == ([2], [40.0])
    assert ax.get_xlabel() == "concurrency (requests in flight)"
    assert ax.get_ylabel() == "output throughput (tokens/s)"


def test_latency_curve_p50_p99_and_slo(runs):
    ax = axis()
    plots.plot_load_latency(ax, runs.points, "ttft")
    got = lines(ax)
    assert got["a p50"][1] == [100.0, 200.0, 400.0]
    assert got["a p99"][1] == [200.0, 400.0, 800.0]
    assert got["SLO TTFT ≤ 500 ms"][1] == [500.0, 500.0]
    assert ax.get_legend() is not None


def test_time_series(runs):
    ax = axis()
    plots.plot_in_flight(ax, runs.timeline)
    assert lines(ax)["a"] == ([0.0, 1.0, 2.0], [2, 1, 1])
    ax = axis()
    plots.plot_server_queue(ax, runs.server[runs.server.run == "a"])
    got = lines(ax)
    assert got["a running"][1] == [1, 2, 0] and got["a waiting"][1] == [0, 1, 0]
    ax = axis()
    plots.plot_kv_usage(ax, runs.server[runs.server.run == "a"])
    assert lines(ax)["a"][1] == approx([10.0, 50.0, 20.0])
    assert ax.get_ylabel() == "KV cache used (%)"


def test_comparison_ratios(runs):
    table = plots.comparison_table(runs.points)
    row = table[(table.point == "concurrency=4") & (table.metric == "output_throughput") & (table.run == "b")]
    assert float(row["ratio"].iloc[0]) == approx(41.0 / 19.5)
    row = table[(table.point == "concurrency=1") & (table.metric == "median_ttft_ms") & (table.run == "b")]
    assert float(row["ratio"].iloc[0]) == approx(0.5)
    ax = axis()
    plots.plot_comparison(ax, table)
    bars = {c.get_label(): list(c.datavalues) for c in ax.containers}
    assert bars["a"] == approx([1.0] * len(plots.COMPARE_METRICS))
    assert bars["b"][0] == approx(41.0 / 19.5)
    assert ax.get_xlabel() == "metric at concurrency=4"


def test_study_plots(study_url):
    trials = load_study(study_url, "dyno")
    ax = axis()
    plots.plot_history(ax, trials)
    got = lines(ax)
    assert got["complete trial"] == ([0, 1, 2, 4, 5], [100.0, 150.0, 140.0, 200.0, 90.0])
    assert got["best so far"][1] == [100.0, 150.0, 150.0, 200.0, 200.0]
    assert got["failed trial"][0] == [3]
    assert ax.get_ylabel() == "output_throughput (tokens/s) (maximize)"
    ax = axis()
    plots.plot_pareto(ax, trials)
    got = lines(ax)
    assert got["Pareto front"] == ([90.0, 100.0, 150.0, 200.0], [40.0, 50.0, 80.0, 200.0])
    assert got["chosen (trial 4)"] == ([200.0], [200.0])
    assert ax.get_ylabel() == "p99_ttft_ms (ms) (minimize)"
    ax = axis()
    plots.plot_importances(ax, trials)
    heights = list(ax.containers[0].datavalues)
    assert sum(heights) == approx(1.0) and len(heights) == 2
    ax = axis()
    plots.plot_param(ax, trials, "max-num-seqs")
    got = lines(ax)
    assert got["trial"][0] == [8, 16, 32, 64, 4] and got["chosen"] == ([64], [200.0])
    ax = axis()
    plots.plot_param(ax, trials, "kv-cache-dtype")
    assert lines(ax)["trial"][0] == [0, 0, 1, 1, 0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["auto", "fp8"]


def test_empty_inputs_draw_a_note():
    import pandas as pd
    ax = axis()
    plots.plot_latency_cdf(ax, pd.DataFrame(columns=["run", "point", "metric", "ms"]), "ttft")
    assert ax.get_lines() == [] and "no TTFT samples" in ax.texts[0].get_text()
    ax = axis()
    plots.plot_comparison(ax, plots.comparison_table(pd.DataFrame(columns=["run", "point"])))
    assert "two or more runs" in ax.texts[0].get_text()
    assert np.isnan(np.nan)
