"""Prometheus metrics for GET /metrics, under the names vLLM exports.

Dashboards and monitors built for vLLM (its Grafana dashboard, `vllm bench`, GuideLLM's
scraper, alert rules) read dyno unchanged: same metric names, same label `model_name`, same
histogram bucket boundaries (vllm/v1/metrics/loggers.py).

Two kinds of values:
- engine state and engine counters (requests running/waiting, KV cache usage, prefix cache
  queries/hits, preemptions, prompt/generation tokens) are read from `stats()` when Prometheus
  scrapes, by a custom collector: nothing is copied on the engine's hot path;
- per-request observations (TTFT, inter-token gaps, end-to-end and queue time, token counts,
  finish reasons) are pushed by the serving handlers through the observe_* methods.

Each ServerMetrics owns a private CollectorRegistry, so several servers (tests) can live in
one process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from engine.llm_engine import EngineStats

# vLLM turns off the `_created` series too; without this every counter and histogram gets one.
prometheus_client.disable_created_metrics()

LABELS = ["model_name"]
CONTENT_TYPE = getattr(prometheus_client.exposition, "CONTENT_TYPE_PLAIN_0_0_4",
                       prometheus_client.CONTENT_TYPE_LATEST)

# Bucket boundaries as vLLM's PrometheusStatLogger has them.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0)
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
                           40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
FINISH_REASONS = ("stop", "length", "abort")
DEFAULT_MAX_MODEL_LEN = 8192  # token-count buckets when the caller does not pass the real one


def build_1_2_5_buckets(max_value: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to max_value (vLLM's token-count buckets)."""
    buckets, scale = [], 1
    while True:
        for m in (1, 2, 5):
            if m * scale > max_value:
                return buckets
            buckets.append(m * scale)
        scale *= 10


class _EngineCollector(Collector):
    """Gauges and counters read from the engine's stats at scrape time."""

    def __init__(self, model_name: str, stats: Callable[[], EngineStats]) -> None:
        self.model_name = model_name
        self.stats = stats

    def describe(self) -> list[Metric]:
        return []  # registering must not call stats(): the engine may not be up yet

    def collect(self) -> Iterator[Metric]:
        s = self.stats()
        label = [self.model_name]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=LABELS)
            g.add_metric(label, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            # The family is named without `_total`; the exposition adds it, as for vLLM's Counters.
            c = CounterMetricFamily(name, doc, labels=LABELS)
            c.add_metric(label, value)
            return c

        yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
                    s.num_running)
        yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
                    s.num_waiting)
        yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
                    s.kv_cache_usage)
        yield gauge("vllm:gpu_cache_usage_perc",
                    "KV-cache usage. 1 means 100 percent usage. "
                    "DEPRECATED: Use vllm:kv_cache_usage_perc instead.", s.kv_cache_usage)
        yield gauge("dyno:kv_cache_free_blocks", "KV cache blocks free (dyno's own metric).",
                    s.num_free_blocks)
        yield gauge("dyno:kv_cache_total_blocks", "KV cache blocks in all (dyno's own metric).",
                    s.num_total_blocks)
        yield gauge("dyno:kv_cache_cached_blocks", "Free KV cache blocks that still hold a "
                    "cached prefix (dyno's own metric).", s.num_cached_free_blocks)
        yield counter("vllm:prefix_cache_queries",
                      "Prefix cache queries, in terms of number of queried tokens.",
                      s.prefix_cache_queries)
        yield counter("vllm:prefix_cache_hits",
                      "Prefix cache hits, in terms of number of cached tokens.",
                      s.prefix_cache_hits)
        yield counter("vllm:gpu_prefix_cache_queries",
                      "Prefix cache queries, in terms of number of queried tokens. "
                      "DEPRECATED: Use vllm:prefix_cache_queries instead.", s.prefix_cache_queries)
        yield counter("vllm:gpu_prefix_cache_hits",
                      "Prefix cache hits, in terms of number of cached tokens. "
                      "DEPRECATED: Use vllm:prefix_cache_hits instead.", s.prefix_cache_hits)
        yield counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.",
                      s.num_preemptions)
        yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.",
                      s.num_prompt_tokens)
        yield counter("vllm:generation_tokens", "Number of generation tokens processed.",
                      s.num_generation_tokens)


class ServerMetrics:
    """The /metrics registry of one server: engine state at scrape time plus request histograms."""

    def __init__(self, model_name: str, stats: Callable[[], EngineStats], *,
                 max_model_len: int | None = None) -> None:
        self.model_name = model_name
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(model_name, stats))
        token_buckets = build_1_2_5_buckets(max_model_len or DEFAULT_MAX_MODEL_LEN)

        def histogram(name: str, doc: str, buckets) -> Histogram:
            return Histogram(name, doc, LABELS, buckets=buckets,
                             registry=self.registry).labels(model_name)

        self.ttft = histogram("vllm:time_to_first_token_seconds",
                              "Histogram of time to first token in seconds.", TTFT_BUCKETS)
        self.inter_token = histogram("vllm:inter_token_latency_seconds",
                                     "Histogram of inter-token latency in seconds.", TPOT_BUCKETS)
        self.tpot = histogram("vllm:time_per_output_token_seconds",
                              "Histogram of time per output token in seconds. "
                              "DEPRECATED: Use vllm:inter_token_latency_seconds instead.",
                              TPOT_BUCKETS)
        self.e2e = histogram("vllm:e2e_request_latency_seconds",
                             "Histogram of e2e request latency in seconds.",
                             REQUEST_LATENCY_BUCKETS)
        self.queue = histogram("vllm:request_queue_time_seconds",
                               "Histogram of time spent in WAITING phase for request.",
                               REQUEST_LATENCY_BUCKETS)
        self.prompt_tokens = histogram("vllm:request_prompt_tokens",
                                       "Number of prefill tokens processed.", token_buckets)
        self.generation_tokens = histogram("vllm:request_generation_tokens",
                                           "Number of generation tokens processed.", token_buckets)
        success = Counter("vllm:request_success", "Count of successfully processed requests.",
                          LABELS + ["finished_reason"], registry=self.registry)
        self._success = {reason: success.labels(model_name, reason) for reason in FINISH_REASONS}
        self._success_family = success

    # -- observations pushed by the serving handlers -------------------------------------------

    def observe_first_token(self, ttft_s: float) -> None:
        self.ttft.observe(ttft_s)

    def observe_inter_token(self, seconds: float, num_tokens: int = 1) -> None:
        """num_tokens new tokens after `seconds`: num_tokens gaps of seconds/num_tokens each."""
        if num_tokens <= 0:
            return
        gap = seconds / num_tokens
        for _ in range(num_tokens):
            self.inter_token.observe(gap)
            self.tpot.observe(gap)

    def observe_finished(self, *, e2e_s: float, queue_s: float | None, num_prompt_tokens: int,
                         num_generation_tokens: int, finish_reason: str) -> None:
        self.e2e.observe(e2e_s)
        if queue_s is not None:
            self.queue.observe(queue_s)
        self.prompt_tokens.observe(num_prompt_tokens)
        self.generation_tokens.observe(num_generation_tokens)
        reason = str(finish_reason or "abort")
        counter = self._success.get(reason)
        if counter is None:
            counter = self._success[reason] = self._success_family.labels(self.model_name, reason)
        counter.inc()

    # -- scrape ---------------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of this registry, and its content type."""
        # Only classic names here, so the body is the 0.0.4 text format every scraper reads.
        return prometheus_client.generate_latest(self.registry), CONTENT_TYPE
