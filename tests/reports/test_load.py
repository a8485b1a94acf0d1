"""reports.load: exact tables from result files and a study with known numbers."""

from __future__ import annotations

import math

import pytest
from pytest import approx

from reports import load_runs, load_study
from reports.load import parse_slos
from tests.reports.conftest import create_study, write_run


def test_requests_table(run_a):
    runs = load_runs([run_a])
    assert runs.problems == []
    req = runs.requests.set_index("request_id")
    assert list(req.index) == ["w", "r0", "r1", "r2"]
    assert list(req["ok"]) == [True, True, True, False]
    assert req.loc["r0", "ttft_ms"] == approx(100.0)
    assert req.loc["r1", "ttft_ms"] == approx(200.0)
    assert req.loc["r0", "tpot_ms"] == approx(100.0)
    assert req.loc["r1", "tpot_ms"] == approx(200.0)
    assert req.loc["r1", "e2el_ms"] == approx(600.0)
    assert req.loc["r1", "send_s"] == approx(1.0)
    assert req.loc["r2", "error_kind"] == "http"
    assert math.isnan(req.loc["r2", "ttft_ms"])


def test_latencies_long_form_skip_warmup_and_failures(run_a):
    lat = load_runs([run_a]).latencies
    by = {m: sorted(g["ms"]) for m, g in lat.groupby("metric")}
    assert by["ttft"] == approx([100.0, 200.0])
    assert by["e2el"] == approx([300.0, 600.0])
    assert by["tpot"] == approx([100.0, 200.0])
    # r0: two gaps of 100 ms; r1: one 400 ms gap carrying 2 tokens = two ITLs of 200 ms
    assert by["itl"] == approx([100.0, 100.0, 200.0, 200.0])


def test_points_server_and_timeline(run_a, run_b):
    runs = load_runs([run_a, run_b])
    pts = runs.points
    assert list(pts["run"]) == ["a"] * 3 + ["b"] * 3
    assert list(pts["x"]) == [1, 2, 4, 1, 2, 4]
    assert pts["x_label"].iloc[0] == "concurrency (requests in flight)"
    assert list(pts["output_throughput"]) == [10.0, 19.0, 19.5, 20.0, 40.0, 41.0]
    assert pts["slos"].iloc[0] == "ttft<=500ms"
    srv = runs.server[runs.server.run == "a"]
    run = srv[srv.metric == "running"]
    assert list(run["t_s"]) == approx([0.0, 1.0, 2.0]) and list(run["value"]) == [1, 2, 0]
    rate = srv[srv.metric == "generation_tokens_per_s"]
    assert list(rate["value"]) == approx([10.0, 20.0])
    tl = runs.timeline[runs.timeline.run == "a"]
    assert list(tl["t_s"]) == approx([0.0, 1.0, 2.0])
    # at t=0: warm-up (0..0.06) and r0 (0..0.35); at 1: r1; at 2: r2
    assert list(tl["in_flight"]) == [2, 1, 1]
    # tokens by second: warm-up 1 + r0 3; r1 1+2
    assert list(tl["output_tokens_per_s"]) == approx([4.0, 3.0, 0.0])


def test_duplicate_run_names_are_told_apart(tmp_path):
    a1 = write_run(tmp_path / "x", "a")
    a2 = write_run(tmp_path / "y", "a")
    assert list(dict.fromkeys(load_runs([a1, a2]).points["run"])) == ["a", "a#2"]


def test_parse_slos():
    assert parse_slos("ttft<=500ms;tpot<=50ms") == {"ttft": 500.0, "tpot": 50.0}
    assert parse_slos("") == {}


def test_bad_runs_give_one_line_each_and_keep_the_rest(tmp_path, run_a):
    empty = write_run(tmp_path, "empty", records=False, server=False)
    (empty / "requests.jsonl").write_text("")
    no_summary = write_run(tmp_path, "nosum", summary=False)
    runs = load_runs([tmp_path / "missing", empty, no_summary, run_a])
    assert len(runs.problems) == 3
    assert "no such result directory" in runs.problems[0]
    assert "empty run" in runs.problems[1]
    assert "missing summary.json" in runs.problems[2]
    assert set(runs.points["run"]) == {"empty", "a"}
    assert set(runs.requests["run"]) == {"nosum", "a"}


def test_load_study(study_url):
    trials = load_study(study_url, "dyno")
    assert list(trials["number"]) == [0, 1, 2, 3, 4, 5]
    assert list(trials["state"]) == ["COMPLETE"] * 3 + ["FAIL"] + ["COMPLETE"] * 2
    assert trials.attrs["metrics"] == ["output_throughput", "p99_ttft_ms"]
    assert trials.attrs["directions"] == ["maximize", "minimize"]
    assert list(trials[trials.pareto]["number"]) == [0, 1, 4, 5]
    assert list(trials[trials.chosen]["number"]) == [4]
    assert trials.loc[3, "failure_reason"] == "out of memory"
    assert trials.loc[0, "baseline"] and not trials.loc[1, "baseline"]
    assert trials.loc[1, "param_max-num-seqs"] == 16
    assert trials.loc[4, "value_0"] == 200.0 and trials.loc[4, "value_1"] == 200.0
    imp = trials.attrs["importances"]
    assert set(imp["values"]) == {"max-num-seqs", "kv-cache-dtype"} and imp["note"] == ""
    assert sum(imp["values"].values()) == approx(1.0)


def test_study_with_only_failed_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    create_study(url, failed_only=True)
    trials = load_study(url, "dyno")
    assert list(trials["state"]) == ["FAIL", "FAIL"]
    assert not trials["chosen"].any()
    assert any("no complete trial" in p for p in trials.attrs["problems"])
    assert "at least 4 complete trials" in trials.attrs["importances"]["note"]


def test_missing_study(study_url):
    with pytest.raises(ValueError, match="no study 'nope'"):
        load_study(study_url, "nope")
