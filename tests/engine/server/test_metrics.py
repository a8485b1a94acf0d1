"""engine/server/metrics.py: vLLM's names, labels and buckets; values read at scrape time."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.llm_engine import EngineStats
from engine.server.metrics import (REQUEST_LATENCY_BUCKETS, TPOT_BUCKETS, TTFT_BUCKETS, ServerMetrics,
                                   build_1_2_5_buckets)

VLLM_NAMES = {
    "vllm:num_requests_running": "gauge", "vllm:num_requests_waiting": "gauge",
    "vllm:gpu_cache_usage_perc": "gauge", "vllm:kv_cache_usage_perc": "gauge",
    "vllm:prefix_cache_queries": "counter", "vllm:prefix_cache_hits": "counter",
    "vllm:gpu_prefix_cache_queries": "counter", "vllm:gpu_prefix_cache_hits": "counter",
    "vllm:prompt_tokens": "counter", "vllm:generation_tokens": "counter",
    "vllm:num_preemptions": "counter", "vllm:request_success": "counter",
    "vllm:time_to_first_token_seconds": "histogram", "vllm:time_per_output_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram", "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram", "vllm:request_prompt_tokens": "histogram",
    "vllm:request_generation_tokens": "histogram",
}


class FakeEngine:
    def __init__(self):
        self.stats = EngineStats(num_running=2, num_waiting=3, kv_cache_usage=0.25, num_free_blocks=48,
                                 prefix_cache_queries=100, prefix_cache_hits=40, num_preemptions=1,
                                 num_prompt_tokens=500, num_generation_tokens=70, num_total_blocks=64,
                                 num_cached_free_blocks=5)
        self.calls = 0

    def get(self) -> EngineStats:
        self.calls += 1
        return self.stats


def scrape(m: ServerMetrics) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}}."""
    body, content_type = m.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def families(m: ServerMetrics) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(m.render()[0].decode())}


def one(samples, name, **labels):
    labels.setdefault("model_name", "tiny")
    return samples[name][tuple(sorted(labels.items()))]


def test_vllm_names_and_types():
    m = ServerMetrics("tiny", FakeEngine().get)
    assert families(m).items() >= VLLM_NAMES.items()
    body = m.render()[0].decode()
    for name in ("vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:num_preemptions_total",
                 "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
                 "vllm:gpu_prefix_cache_hits_total", 'vllm:request_success_total{finished_reason="stop"'):
        assert name in body
    assert "_created" not in body


def test_gauges_and_counters_read_stats_at_scrape_time():
    engine = FakeEngine()
    m = ServerMetrics("tiny", engine.get)
    assert engine.calls == 0  # registering does not touch the engine
    s = scrape(m)
    assert one(s, "vllm:num_requests_running") == 2 and one(s, "vllm:num_requests_waiting") == 3
    assert one(s, "vllm:kv_cache_usage_perc") == one(s, "vllm:gpu_cache_usage_perc") == 0.25
    assert one(s, "vllm:prefix_cache_queries_total") == 100 and one(s, "vllm:prefix_cache_hits_total") == 40
    assert one(s, "vllm:prompt_tokens_total") == 500 and one(s, "vllm:generation_tokens_total") == 70
    assert one(s, "vllm:num_preemptions_total") == 1 and one(s, "dyno:kv_cache_free_blocks") == 48
    assert one(s, "dyno:kv_cache_total_blocks") == 64 and one(s, "dyno:kv_cache_cached_blocks") == 5
    engine.stats.num_prompt_tokens, engine.stats.num_running = 800, 0
    s = scrape(m)
    assert one(s, "vllm:prompt_tokens_total") == 800 and one(s, "vllm:num_requests_running") == 0


def test_histograms_have_vllm_buckets():
    m = ServerMetrics("tiny", FakeEngine().get, max_model_len=1000)
    s = scrape(m)

    def bounds(name):
        return [float(dict(k)["le"]) for k in s[name + "_bucket"]][:-1]  # without +Inf

    assert bounds("vllm:time_to_first_token_seconds") == list(TTFT_BUCKETS)
    assert bounds("vllm:inter_token_latency_seconds") == list(TPOT_BUCKETS)
    assert bounds("vllm:time_per_output_token_seconds") == list(TPOT_BUCKETS)
    assert bounds("vllm:e2e_request_latency_seconds") == list(REQUEST_LATENCY_BUCKETS)
    assert bounds("vllm:request_queue_time_seconds") == list(REQUEST_LATENCY_BUCKETS)
    assert bounds("vllm:request_prompt_tokens") == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    assert build_1_2_5_buckets(100) == [1, 2, 5, 10, 20, 50, 100]


def test_observations():
    m = ServerMetrics("tiny", FakeEngine().get)
    m.observe_first_token(0.03)
    m.observe_inter_token(0.2, num_tokens=4)  # four gaps of 0.05
    m.observe_inter_token(0.5)
    m.observe_finished(e2e_s=1.2, queue_s=0.01, num_prompt_tokens=7, num_generation_tokens=6, finish_reason="length")
    m.observe_finished(e2e_s=0.4, queue_s=None, num_prompt_tokens=3, num_generation_tokens=1, finish_reason="stop")
    s = scrape(m)
    assert one(s, "vllm:time_to_first_token_seconds_count") == 1
    assert one(s, "vllm:time_to_first_token_seconds_bucket", le="0.04") == 1
    assert one(s, "vllm:time_to_first_token_seconds_bucket", le="0.02") == 0
    assert one(s, "vllm:inter_token_latency_seconds_count") == 5
    assert one(s, "vllm:inter_token_latency_seconds_sum") == pytest.approx(0.7)
    assert one(s, "vllm:inter_token_latency_seconds_bucket", le="0.05") == 4
    assert one(s, "vllm:time_per_output_token_seconds_count") == 5
    assert one(s, "vllm:e2e_request_latency_seconds_count") == 2
    assert one(s, "vllm:e2e_request_latency_seconds_sum") == pytest.approx(1.6)
    assert one(s, "vllm:request_queue_time_seconds_count") == 1  # None is not observed
    assert one(s, "vllm:request_prompt_tokens_sum") == 10
    assert one(s, "vllm:request_generation_tokens_sum") == 7
    assert one(s, "vllm:request_success_total", finished_reason="length") == 1
    assert one(s, "vllm:request_success_total", finished_reason="stop") == 1
    assert one(s, "vllm:request_success_total", finished_reason="abort") == 0


def test_servers_in_one_process_do_not_share_metrics():
    a, b = ServerMetrics("a", FakeEngine().get), ServerMetrics("a", FakeEngine().get)
    a.observe_first_token(1.0)
    assert one(scrape(a), "vllm:time_to_first_token_seconds_count", model_name="a") == 1
    assert one(scrape(b), "vllm:time_to_first_token_seconds_count", model_name="a") == 0


def test_model_name_label():
    s = scrape(ServerMetrics("my-served-name", FakeEngine().get))
    assert one(s, "vllm:num_requests_running", model_name="my-served-name") == 2
