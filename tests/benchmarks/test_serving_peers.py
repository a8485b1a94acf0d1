"""benchmarks/serving_peers.py end to end on loadgen's mock server standing in for the engines:
start one at a time, bench, stop; skipped peers listed with what was looked for; JSON and table."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sp():
    spec = importlib.util.spec_from_file_location("serving_peers", ROOT / "benchmarks" / "serving_peers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def mock(sp, name: str, itl_ms: float):
    port = sp.free_port()
    cmd = [sys.executable, "-m", "dyno", "bench", "mock-server", "--host", sp.HOST, "--port", str(port),
           "--ttft-ms", "5", "--itl-ms", str(itl_ms)]
    return sp.Server(name, cmd, port)


def test_skipped_peers_say_what_was_looked_for(sp, tmp_path):
    a = sp.make_parser().parse_args(["--vllm-venv", str(tmp_path / "novenv"), "--transformers-python",
                                     str(tmp_path / "nopy" / "python")])
    venv_python = tmp_path / "novenv" / "bin" / "python"
    assert sp.vllm_server(a, 1).skipped == f"not installed: no {venv_python} (--vllm-venv or $DYNO_PEER_VLLM)"
    a.llamacpp_python = str(tmp_path / "nope")
    assert sp.llamacpp_server(a, 1).skipped == (f"not installed: no {tmp_path / 'nope'} "
                                                "(--llamacpp-python or $DYNO_PEER_LLAMACPP)")
    a.llamacpp_python = sys.executable  # a python without llama_cpp
    assert sp.llamacpp_server(a, 1).skipped == f"not installed: {sys.executable} cannot import llama_cpp.server"
    assert sp.transformers_server(a, 1).skipped == (f"not installed: no {tmp_path / 'nopy' / 'transformers'} "
                                                    "(--transformers-python or $DYNO_PEER_TRANSFORMERS)")


def test_defaults_are_the_issue_workloads(sp):
    a = sp.make_parser().parse_args([])
    assert a.workloads == ["c1", "c8", "c32", "c64"] and a.peers == ["vllm", "llamacpp"]
    assert [(w.concurrency, w.num_prompts) for w in sp.WORKLOADS.values()] == [(1, 8), (8, 32), (32, 64), (64, 128)]
    assert (a.input_len, a.output_len, a.dtype, a.warmup) == (128, 64, "bfloat16", 1)
    assert "--dtype bfloat16" in " ".join(sp.dyno_server(a, 9).command)


def test_group_rss_counts_this_process(sp):
    assert sp.group_rss_mb(os.getpgrp()) > 10


def test_mock_engines_end_to_end(sp, tmp_path):
    out = tmp_path / "peers.json"
    a = sp.make_parser().parse_args(["--workloads", "c1", "c8", "--num-prompts", "4", "--input-len", "16",
                                     "--output-len", "8", "--tokenizer", "none", "--start-timeout", "60",
                                     "--stop-timeout", "5", "--out", str(out)])
    a.tokenizer = None
    servers = [mock(sp, "dyno", 2), mock(sp, "vllm", 8), sp.Server("llamacpp", skipped="not installed: no /x/python")]
    data = sp.run(a, servers)

    saved = json.loads(out.read_text())
    assert saved["workloads"] == ["c1", "c8"]
    dyno, vllm, llama = saved["engines"]
    assert dyno["status"] == vllm["status"] == "ok"
    assert llama == {"name": "llamacpp", "status": "skipped (not installed: no /x/python)", "results": {}}
    for e in (dyno, vllm):
        assert e["startup_s"] > 0 and e["peak_rss_mb"] > 10
        for r in e["results"].values():
            assert (r["completed"], r["failed"], r["total_output_tokens"]) == (4, 0, 32)
            assert r["output_throughput"] > 0 and r["median_tpot_ms"] > 0
    assert dyno["results"]["c1"]["ratio_to_dyno"] == 1.0
    assert 0 < vllm["results"]["c1"]["ratio_to_dyno"] < 0.9  # ITL 8 ms against 2 ms
    assert (tmp_path / "peers" / "vllm" / "c8" / "summary.json").exists()
    assert (tmp_path / "peers" / "dyno" / "server.log").exists()

    table = out.with_suffix(".md").read_text()
    assert table == sp.markdown(data)
    assert "| llamacpp | skipped (not installed: no /x/python) | – | – | – | – |" in table
    assert "× dyno)" in table and "| vllm | 4 at c=8 |" in table and "| 1 stream (4) |" in table
    assert "load average (1 min) before each server started → after its workloads: dyno " in table
