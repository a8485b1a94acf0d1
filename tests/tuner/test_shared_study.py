"""Scale-out: two worker processes run one study on a real PostgreSQL server."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from tuner.cli import study_config, tune_parser
from tuner.study import open_study

SPACE = "max-num-seqs: {int: [2, 8]}\n"
SERVER = ["--max-model-len", "512", "--gpu-memory-utilization", "0.1"]


@pytest.mark.slow
def test_two_workers_share_one_study_on_postgresql(postgres_url, tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    argv = ["--study-name", "shared", "--storage", postgres_url, "--n-trials", "4", "--space",
            str(tmp_path / "space.yaml"), "--result-dir", str(tmp_path / "runs"), "--random-input-len", "16",
            "--random-output-len", "8", "--ignore-eos", "--num-prompts", "4", "--warmup", "1",
            "--max-concurrency", "2", "--no-prune"]
    open_study(study_config(tune_parser().parse_args(argv), SERVER))  # created once, baseline enqueued
    workers = [subprocess.Popen([sys.executable, "-m", "dyno", "tune", *argv, "--seed", str(i), "--", *SERVER],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = optuna.load_study(study_name="shared", storage=postgres_url).trials
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    # MaxTrialsCallback stops both at 4 finished; a trial each may have started just before.
    assert 4 <= len(done) <= 5 and len(trials) == len(done)
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both workers ran trials
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1
