"""End to end on the default model: a real study of real servers under real load, one trial that
must fail, resume, and an exported `dyno serve` command that starts a server."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import optuna
from optuna.trial import TrialState

from tuner.cli import study_config, tune_main, tune_parser
from tuner.export import main as export_main
from tuner.study import open_study
from tuner.trial import TRIAL_ENV, free_port

SPACE = "max-num-seqs: {int: [2, 8]}\nnum-gpu-blocks-override: {choices: [1, 64]}\n"
SERVER = ["--", "--max-model-len", "512", "--gpu-memory-utilization", "0.2"]


def servers_of(result_dir: Path) -> list[int]:
    """Live processes started for a trial under result_dir (found by their environment tag)."""
    pids = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"{TRIAL_ENV}={result_dir}".encode() in env.read_bytes():
                pids.append(int(env.parent.name))
        except OSError:
            pass
    return pids


def test_study_end_to_end(tmp_path, capsys):
    (tmp_path / "space.yaml").write_text(SPACE)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    argv = ["--study-name", "e2e", "--storage", storage, "--n-trials", "3", "--space", str(tmp_path / "space.yaml"),
            "--result-dir", str(tmp_path / "runs"), "--random-input-len", "32", "--random-output-len", "16",
            "--ignore-eos", "--num-prompts", "8", "--warmup", "2", "--max-concurrency", "4", *SERVER]
    # Trial 0 is the baseline; trial 1 must fail (1 KV block < the 512-token context: the server
    # exits at start-up); trial 2 is a working config. The study must go on past the failure.
    study = open_study(study_config(tune_parser().parse_args(argv[:argv.index("--")]), SERVER[1:]))
    study.enqueue_trial({"max_num_seqs": 4, "num_gpu_blocks_override": 1})
    study.enqueue_trial({"max_num_seqs": 8, "num_gpu_blocks_override": 64})

    assert tune_main(argv) == 0
    out = capsys.readouterr().out
    study = optuna.load_study(study_name="e2e", storage=storage)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    base, failed, good = trials
    assert base.user_attrs["baseline"] and base.params == {}
    assert base.user_attrs["flags"] == {"max_model_len": 512, "gpu_memory_utilization": 0.2}
    assert failed.params == {"max_num_seqs": 4, "num_gpu_blocks_override": 1}
    assert "server exited with code 2 before it was ready" in failed.user_attrs["failure_reason"]
    assert "KV cache" in failed.user_attrs["log_tail"]
    for t in (base, good):
        assert t.user_attrs["summary"]["completed"] == 8 and t.values[0] > 0
        assert t.user_attrs["startup_s"] > 0 and t.user_attrs["peak_rss_mb"] > 100
        run = Path(t.user_attrs["result_dirs"][0])
        assert (run / "requests.jsonl").exists() and (run / "server_metrics.jsonl").exists()
    assert (Path(failed.user_attrs["workdir"]) / "server.log").exists()
    assert "trial 3/3" in out and "failed: server exited with code 2" in out and "x baseline" in out
    assert servers_of(tmp_path / "runs") == []  # nothing left behind

    # Resumed with the same total: the study is complete, no trial runs.
    assert tune_main(argv) == 0
    assert len(optuna.load_study(study_name="e2e", storage=storage).trials) == 3
    capsys.readouterr()

    # The exported `dyno serve` command starts a server.
    assert export_main(["--study-name", "e2e", "--storage", storage, "--format", "dyno"]) == 0
    argv = shlex.split(capsys.readouterr().out)
    assert argv[:2] == ["dyno", "serve"]
    port = free_port()
    argv[argv.index("--host") + 1], argv[argv.index("--port") + 1] = "127.0.0.1", str(port)
    proc = subprocess.Popen([sys.executable, "-m", "dyno", *argv[1:]], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, env={**os.environ})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, "exported command exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise AssertionError("exported server never became healthy")
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
