"""`--executor ray`: a local Ray instance runs two trials of one study at once."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from tuner.cli import tune_main

pytest.importorskip("ray", reason="Ray is not installed (pip install ray)")


@pytest.mark.slow
def test_ray_runs_two_trials_at_once(tmp_path, capsys):
    import ray

    (tmp_path / "space.yaml").write_text("max-num-seqs: {int: [2, 8]}\n")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # the local instance
    try:
        code = tune_main(["--study-name", "ray", "--storage", storage, "--n-trials", "2", "--executor", "ray",
                          "--ray-cpus-per-trial", "1", "--space", str(tmp_path / "space.yaml"),
                          "--result-dir", str(tmp_path / "runs"), "--random-input-len", "16",
                          "--random-output-len", "8", "--ignore-eos", "--num-prompts", "4", "--warmup", "1",
                          "--max-concurrency", "2", "--", "--max-model-len", "512",
                          "--gpu-memory-utilization", "0.1"])
    finally:
        ray.shutdown()
    assert code == 0, capsys.readouterr().out
    trials = optuna.load_study(study_name="ray", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[0].user_attrs["baseline"] and "max_num_seqs" in trials[1].params
    (a0, a1), (b0, b1) = (t.user_attrs["ran"] for t in trials)
    assert a0 < b1 and b0 < a1  # the two servers were up at the same time
