"""Pruning inside one load run: a trial reports the objective over the requests finished so far
at 25/50/75% of its load; a clearly slow one is stopped there (PRUNED, its server stopped) while
the baseline runs to the end. Stand-in servers are loadgen's mock, paced by the trial's flag."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from loadgen import BenchConfig, DatasetConfig, LoadPoint
from loadgen.mock_server import MockPacing
from tuner.engines import Engine
from tuner.objectives import make_objective
from tuner.space import Param, Space
from tuner.study import StudyConfig, open_study, run_study
from tuner.trial import TRIAL_ENV

FAST = MockPacing(ttft_ms=5, itl_ms=2)
SLOW = MockPacing(ttft_ms=300, itl_ms=100)  # ~0.6 s a request: 16 at concurrency 4 take ~2.4 s


class MockEngine(Engine):
    """loadgen's mock server; --max-num-seqs 1 stands for a flag that makes the server much slower."""

    name = "mock"

    def command(self, flags, host, port):
        pacing = SLOW if flags.get("max_num_seqs") == 1 else FAST
        entry = "import sys; from loadgen.mock_server import serve; serve(sys.argv[1:])"
        return [sys.executable, "-c", entry, "--host", host, "--port", str(port), *pacing.to_args()]


def config(tmp_path: Path, prune: bool = True) -> StudyConfig:
    bench = BenchConfig(dataset=DatasetConfig(input_len="fixed:4", output_len="fixed:4"),
                        points=(LoadPoint(concurrency=4),), num_prompts=16, scrape_interval_s=None,
                        request_timeout_s=10)
    space = Space((Param("max_num_seqs", "categorical", choices=(256, 1)),))
    return StudyConfig("prune", f"sqlite:///{tmp_path / 'study.db'}", space,
                       make_objective("throughput", [], ()), bench, tmp_path / "results", n_trials=3,
                       startup_timeout_s=30, prune=prune)


def servers_left(result_dir: Path) -> bool:
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"{TRIAL_ENV}={result_dir}".encode() in env.read_bytes():
                return True
        except OSError:
            pass
    return False


def run(cfg: StudyConfig, monkeypatch) -> optuna.Study:
    monkeypatch.setattr("tuner.study.make_engine", lambda name: MockEngine())
    study = open_study(cfg)  # the baseline (256: fast) first, then a fast trial and a slow one
    study.enqueue_trial({"max_num_seqs": 256})
    study.enqueue_trial({"max_num_seqs": 1})
    return run_study(cfg)


def test_a_slow_trial_is_pruned_during_its_load_and_the_baseline_completes(tmp_path, monkeypatch):
    cfg = config(tmp_path)
    start = time.monotonic()
    study = run(cfg, monkeypatch)
    baseline, fast, slow = study.trials
    assert baseline.user_attrs["baseline"] and baseline.state == TrialState.COMPLETE
    assert fast.state == TrialState.COMPLETE
    # Both complete trials reported at 25/50/75% of their load; the objective at the end.
    for t in (baseline, fast):
        assert sorted(t.intermediate_values) == [25, 50, 75]
        assert all(v > 0 for v in t.intermediate_values.values())
    assert slow.state == TrialState.PRUNED
    assert list(slow.intermediate_values) == [25]  # pruned at the first report
    value = slow.intermediate_values[25]
    median = sorted(t.intermediate_values[25] for t in (baseline, fast))[0]
    assert value < median / 5
    assert slow.user_attrs["pruned_at_step"] == 25
    assert slow.user_attrs["intermediate"][0][:2] == [25, value]
    assert slow.user_attrs["prune_reason"].startswith("pruned at step 25: output_throughput")
    # Its load stopped early: far fewer than 16 requests, and no server left running.
    records = (Path(slow.user_attrs["workdir"]) / "repeat-0" / "requests.jsonl").read_text().splitlines()
    assert 4 <= len(records) < 16
    assert not servers_left(cfg.result_dir)
    assert time.monotonic() - start < 30


def test_no_prune_lets_the_slow_trial_finish_and_multi_objective_reports_nothing(tmp_path, monkeypatch):
    cfg = config(tmp_path, prune=False)
    study = run(cfg, monkeypatch)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert not any(t.intermediate_values for t in study.trials)
    # Optuna prunes no multi-objective study: its trials report nothing either.
    (tmp_path / "multi").mkdir()
    multi = config(tmp_path / "multi")
    multi.objective, multi.n_trials = make_objective("balanced", [], ()), 1
    study = run_study(multi)
    assert study.trials[0].state == TrialState.COMPLETE and not study.trials[0].intermediate_values
    assert not servers_left(cfg.result_dir) and not servers_left(multi.result_dir)
