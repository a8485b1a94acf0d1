"""Metric definitions on hand-built records (no server): exact values."""

from __future__ import annotations

import math

import pytest

from loadgen.metrics import SLO, is_good, summarize
from loadgen.schema import LATENCY_METRICS, STAT_PREFIXES, RequestRecord, append_record, read_records


def record(i: int = 0, send: float = 100.0, ttft: float = 0.1, gaps: tuple[float, ...] = (0.02,) * 4,
           tokens: list[int] | None = None, scheduled: float | None = None, **kw) -> RequestRecord:
    times = [send + ttft]
    for g in gaps:
        times.append(times[-1] + g)
    tokens = tokens or [1] * len(times)
    return RequestRecord(request_id=f"r{i}", point="p", index=i, is_warmup=False,
                         scheduled_time=send if scheduled is None else scheduled, send_time=send,
                         first_token_time=times[0], chunk_times=times, chunk_tokens=tokens,
                         end_time=times[-1] + 0.001, input_tokens=10, output_tokens=sum(tokens), **kw)


def test_ttft_tpot_e2el_follow_vllm_definitions():
    r = record(ttft=0.1, gaps=(0.02,) * 4)
    assert r.ttft == pytest.approx(0.1)
    assert r.e2el == pytest.approx(0.1 + 0.08)  # to the last token, not the stream's close
    assert r.tpot == pytest.approx(0.08 / 4)  # (e2el - ttft) / (tokens - 1)
    assert r.itl == pytest.approx([0.02] * 4)


def test_a_chunk_of_several_tokens_spreads_its_gap_evenly():
    r = record(gaps=(0.03, 0.06), tokens=[1, 3, 2])
    assert r.itl == pytest.approx([0.01, 0.01, 0.01, 0.03, 0.03])
    assert r.output_tokens == 6


def test_one_token_output_has_no_tpot_but_counts_as_good():
    r = record(gaps=(), tokens=[1])
    assert r.tpot is None
    assert is_good(r, [SLO("tpot", 0.001)])


def test_summary_has_every_vllm_key_and_exact_values():
    records = [record(i, send=100.0 + i, ttft=0.1 * (i + 1)) for i in range(4)]
    s = summarize(records, [SLO("ttft", 0.25)])
    for key in ("completed", "failed", "duration", "total_input_tokens", "total_output_tokens",
                "request_throughput", "output_throughput", "total_token_throughput", "request_goodput"):
        assert key in s
    for metric in LATENCY_METRICS:
        for stat in STAT_PREFIXES:
            assert f"{stat}_{metric}_ms" in s
    assert s["completed"] == 4 and s["failed"] == 0
    assert s["duration"] == pytest.approx(3 + 0.4 + 0.08 + 0.001)  # to the last stream's close
    assert s["request_throughput"] == pytest.approx(4 / s["duration"])
    assert s["output_throughput"] == pytest.approx(20 / s["duration"])
    assert s["total_token_throughput"] == pytest.approx(60 / s["duration"])
    assert s["mean_ttft_ms"] == pytest.approx(250.0)
    assert s["median_ttft_ms"] == pytest.approx(250.0)
    assert s["std_ttft_ms"] == pytest.approx(math.sqrt(12500.0))  # population std, as numpy/vLLM
    assert s["request_goodput"] == pytest.approx(2 / s["duration"])  # ttft 100, 200 ms pass


def test_failures_count_by_kind_and_warmup_is_left_out():
    ok = record(0)
    bad = record(1, error_kind="http_500", error="boom")
    warm = record(2, ttft=5.0)
    warm.is_warmup = True
    s = summarize([ok, bad, warm])
    assert s["completed"] == 1 and s["failed"] == 1
    assert s["failed_by_kind"] == {"http_500": 1}
    assert s["p99_ttft_ms"] == pytest.approx(100.0)  # the 5 s warm-up request is not in it


def test_latency_from_intended_send_shows_client_queueing():
    r = record(send=100.5, scheduled=100.0, ttft=0.1)
    assert r.ttft == pytest.approx(0.1)
    assert r.ttft_intended == pytest.approx(0.6)


def test_summary_rebuilds_exactly_from_the_jsonl(tmp_path):
    records = [record(i, send=100.0 + 0.1 * i, ttft=0.05 + 0.01 * i) for i in range(10)]
    path = tmp_path / "requests.jsonl"
    for r in records:
        append_record(path, r)
    with open(path, "a") as f:
        f.write('{"request_id": "torn')  # a run killed mid-write
    assert summarize(read_records(path)) == summarize(records)
