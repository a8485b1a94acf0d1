"""dyno tune's command line without servers: dry run, errors before any trial, adapters, objectives."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from loadgen import SLO
from tuner.cli import tune_main
from tuner.engines import DynoEngine, LlamaCppEngine, VllmEngine
from tuner.objectives import make_objective


@pytest.fixture
def no_launch(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError(f"launched {a}")
    monkeypatch.setattr(subprocess, "Popen", refuse)


def test_dry_run_prints_commands_and_launches_nothing(tmp_path, monkeypatch, capsys, no_launch):
    monkeypatch.chdir(tmp_path)
    code = tune_main(["--dry-run", "--dry-run-trials", "2", "--num-prompts", "8", "--random-input-len", "64",
                      "--random-output-len", "16", "--slo", "ttft=500ms", "--", "--max-model-len", "512",
                      "--gpu-memory-utilization", "0.2"])
    out = capsys.readouterr().out
    assert code == 0
    servers = [shlex.split(line.split("server: ", 1)[1]) for line in out.splitlines() if "server: " in line]
    loads = [line.split("load:   ", 1)[1] for line in out.splitlines() if "load:   " in line]
    assert len(servers) == len(loads) == 2
    assert servers[0][servers[0].index("serve"):] == ["serve", "--host", "127.0.0.1", "--port", "8000",
                                                      "--max-model-len", "512", "--gpu-memory-utilization", "0.2"]
    assert "--max-num-seqs" in servers[1] or "--block-size" in servers[1] or "--max-num-batched-tokens" in servers[1]
    assert shlex.split(loads[0]) == ["dyno", "bench", "--base-url", "http://127.0.0.1:8000", "--endpoint",
                                     "/v1/completions", "--dataset-name", "random", "--input-len-dist", "fixed:64",
                                     "--output-len-dist", "fixed:16", "--warmup", "4", "--seed", "0",
                                     "--num-prompts", "8", "--max-concurrency", "16", "--slo=ttft=500ms"]
    assert "goodput" in out.splitlines()[0]
    assert list(tmp_path.iterdir()) == []  # no study file, no result dir


def test_bad_space_and_bad_server_flags_fail_before_any_trial(tmp_path, monkeypatch, capsys, no_launch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text("max-num-seqz: {int: [1, 8]}\n")
    assert tune_main(["--space", "space.yaml"]) == 2
    assert "unknown flag 'max-num-seqz'" in capsys.readouterr().err
    assert tune_main(["--", "--max-num-seqs", "0"]) == 2
    assert "--max-num-seqs must be at least 1" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "space.yaml"]


def test_engine_adapters_build_their_commands():
    flags = {"model": "m.gguf", "max_model_len": 512, "max_num_seqs": 8, "enable_prefix_caching": True,
             "seed": 0, "device": "cpu"}
    assert DynoEngine(program=["dyno"]).command(flags, "127.0.0.1", 9) == [
        "dyno", "serve", "--host", "127.0.0.1", "--port", "9", "--model", "m.gguf", "--max-model-len", "512",
        "--max-num-seqs", "8", "--enable-prefix-caching", "--device", "cpu"]
    assert VllmEngine().command(flags, "127.0.0.1", 9) == [
        "vllm", "serve", "m.gguf", "--host", "127.0.0.1", "--port", "9", "--max-model-len", "512",
        "--max-num-seqs", "8", "--enable-prefix-caching"]
    assert LlamaCppEngine().command(flags, "127.0.0.1", 9) == [
        "llama-server", "--host", "127.0.0.1", "--port", "9", "-m", "m.gguf", "--ctx-size", "512",
        "--parallel", "8", "--seed", "0"]


def test_objectives_presets_metrics_and_slo_constraints():
    assert [str(m) for m in make_objective("balanced", [], ()).metrics] == ["output_throughput:max",
                                                                           "p99_ttft_ms:min"]
    obj = make_objective("throughput", ["p90_tpot_ms", "request_goodput:max"], (SLO("ttft", 0.5), SLO("tpot", 0.05)))
    assert obj.directions == ["minimize", "maximize"] and obj.is_multi
    summary = {"p90_tpot_ms": 40.0, "request_goodput": None, "request_throughput": 3.0,
               "p99_ttft_ms": 620.0, "p99_tpot_ms": 45.0}
    assert obj.values(summary) == [40.0, 3.0]  # no SLOs at load time: goodput = throughput
    assert obj.constraints(summary) == [pytest.approx(120.0), pytest.approx(-5.0)]
    with pytest.raises(KeyError, match="not in the load summary"):
        make_objective(None, ["nope:max"], ()).values(summary)
