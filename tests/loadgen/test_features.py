"""Discovery, /metrics scraping, multi-turn, trace replay, sweep, tokenizer, live events."""

from __future__ import annotations

import dataclasses
import json
import socket
import time

import pytest

from loadgen import DatasetConfig, LoadPoint, PointDone, RequestDone, run_bench, run_sweep
from loadgen.datasets import load_corpus
from loadgen.discovery import ServerError, discover_local
from loadgen.tokens import load_counter, TokenizerError
from tests.loadgen.conftest import make_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_discovery_finds_the_first_server_and_its_model(mock_factory):
    mock = mock_factory(ttft_ms=10, itl_ms=2, output_len=3)
    info = discover_local(ports=(free_port(), mock.port))
    assert info.base_url == mock.base_url and info.models == ("mock",) and info.has_metrics
    with pytest.raises(ServerError, match="no OpenAI-compatible server found"):
        discover_local(ports=(free_port(),))


def test_server_metrics_are_scraped_beside_the_records(mock_factory, tmp_path):
    mock = mock_factory(ttft_ms=100, itl_ms=20, output_len=10)
    cfg = make_config(mock, LoadPoint(concurrency=4), num_prompts=16, scrape_interval_s=0.1,
                      result_dir=str(tmp_path))
    result = run_bench(cfg)
    samples = result.points[0].server_metrics
    assert len(samples) >= 5
    assert max(s.values["mock_num_requests_running"] for s in samples) == 4
    lines = (tmp_path / "server_metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(samples) and json.loads(lines[0])["point"] == "concurrency=4"


def test_multiturn_turns_carry_the_history(mock_factory):
    mock = mock_factory(ttft_ms=10, itl_ms=2, output_len=3)
    dataset = DatasetConfig(name="multiturn", num_turns=3, input_len="5", output_len="3")
    result = run_bench(make_config(mock, LoadPoint(concurrency=2), num_prompts=2, dataset=dataset,
                                   endpoint="/v1/chat/completions"))
    records = sorted(result.points[0].records, key=lambda r: (r.session_id, r.turn))
    assert len(records) == 6 and len({r.session_id for r in records}) == 2
    first = [r for r in records if r.session_id == records[0].session_id]
    # Each turn sends all earlier user turns and replies: 5, 5+3+5, 5+3+5+3+5 words.
    assert [r.input_tokens for r in first] == [5, 13, 21]
    assert all(r.send_time >= p.end_time for p, r in zip(first, first[1:]))


def test_trace_replay_sends_on_the_trace_clock(mock_factory, tmp_path):
    mock = mock_factory(ttft_ms=10, itl_ms=2, output_len=3)
    trace = tmp_path / "trace.jsonl"
    times = [0.0, 0.1, 0.35, 0.4]
    trace.write_text("".join(json.dumps({"timestamp": 5 + t, "input_len": 8, "output_len": 3}) + "\n" for t in times))
    dataset = DatasetConfig(name="trace", path=str(trace))
    result = run_bench(make_config(mock, LoadPoint(rate=1.0), num_prompts=None, dataset=dataset))
    records = sorted(result.points[0].records, key=lambda r: r.index)
    t0 = records[0].scheduled_time
    assert [r.scheduled_time - t0 for r in records] == pytest.approx(times, abs=1e-6)
    assert all(r.sched_lag < 0.005 for r in records)


def test_sweep_runs_synchronous_throughput_then_rates_between(mock_factory):
    mock = mock_factory(ttft_ms=10, itl_ms=2, output_len=3)
    result = run_sweep(make_config(mock, LoadPoint(concurrency=1), num_prompts=8), num_points=4)
    labels = [p.summary["point"] for p in result.points]
    assert labels[:2] == ["concurrency=1", "rate=inf"] and len(labels) == 4
    sync, peak = result.extra["sweep"]["synchronous_rate"], result.extra["sweep"]["saturation_rate"]
    assert sync < result.points[2].point.rate < result.points[3].point.rate < peak


def test_live_events_arrive_per_request_and_per_point(mock_factory):
    mock = mock_factory(ttft_ms=10, itl_ms=2, output_len=3)
    events = []
    run_bench(make_config(mock, LoadPoint(concurrency=2), num_prompts=5), on_event=events.append)
    assert sum(isinstance(e, RequestDone) for e in events) == 5
    assert isinstance(events[-1], PointDone) and events[-1].summary["completed"] == 5


@pytest.mark.parametrize("point", [LoadPoint(concurrency=4), LoadPoint(rate=200.0, arrival="constant")])
def test_should_stop_ends_the_run_early_and_cancels_requests_in_flight(mock_factory, point):
    # 40 requests of ~0.5 s each: the whole run would take seconds; it stops after the 4th.
    mock = mock_factory(ttft_ms=20, itl_ms=50, output_len=10)
    finished = []
    cfg = dataclasses.replace(make_config(mock, point, num_prompts=40), points=(point, LoadPoint(concurrency=1)))
    start = time.monotonic()
    result = run_bench(cfg, on_event=lambda e: isinstance(e, RequestDone) and finished.append(e),
                       should_stop=lambda: "enough" if len(finished) >= 4 else None)
    assert time.monotonic() - start < 3
    assert result.stopped == "stopped early: enough"
    assert len(result.points) == 1  # the second point never ran
    summary = result.points[0].summary
    assert summary["stop_reason"] == "stopped early: enough" and summary["completed"] == 4
    assert len(result.points[0].records) == 4  # requests in flight were cancelled, not recorded
    assert "stopped early: enough" in result.warnings[0]


def test_duration_limits_a_point(mock_factory):
    mock = mock_factory(ttft_ms=10, itl_ms=2, output_len=3)
    result = run_bench(make_config(mock, LoadPoint(rate=40.0, arrival="constant"), num_prompts=None,
                                   duration_s=0.5))
    assert len(result.points[0].records) == 20  # due at 0, 25, ..., 475 ms


def test_a_local_tokenizer_sets_exact_prompt_lengths(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    words = sorted(set(load_corpus().split()))
    model = tokenizers.models.WordLevel({w: i for i, w in enumerate(["[UNK]"] + words)}, unk_token="[UNK]")
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.decoder = tokenizers.decoders.WordPiece(prefix="##")  # joins words with spaces
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path)
    counter = load_counter(str(tmp_path))
    assert counter.is_exact
    from loadgen.datasets import iter_workload

    spec = next(iter_workload(DatasetConfig(input_len="77", seed=3), counter))
    assert counter.count_text(spec.prompt) == 77 == spec.input_tokens
    with pytest.raises(TokenizerError, match="no such directory"):
        load_counter(str(tmp_path / "nope"))
