"""What each number on the Monitor is: its formula, source metric and window (the `?` key),
and the key list the help screen shows."""

from __future__ import annotations

from dataclasses import dataclass

from tui.series import WINDOW_S


@dataclass(frozen=True, slots=True)
class Explanation:
    title: str
    formula: str
    source: str
    window: str


_W = f"the last {WINDOW_S:g} s of scrapes"
_PCT = "histogram_quantile over the bucket increase between the window's first and last scrape"

EXPLANATIONS: dict[str, Explanation] = {
    "gen_tps": Explanation("generation tokens/s", "Δ counter / Δ time between two scrapes",
                           "vllm:generation_tokens_total (mock: mock_generation_tokens_total)",
                           "one scrape interval (~1 s)"),
    "prompt_tps": Explanation("prompt tokens/s", "Δ counter / Δ time between two scrapes",
                              "vllm:prompt_tokens_total", "one scrape interval (~1 s)"),
    "running": Explanation("requests running", "gauge as scraped", "vllm:num_requests_running",
                           "the latest scrape"),
    "waiting": Explanation("requests waiting", "gauge as scraped", "vllm:num_requests_waiting",
                           "the latest scrape"),
    "kv_usage_pct": Explanation("KV cache usage", "gauge × 100", "vllm:kv_cache_usage_perc",
                                "the latest scrape"),
    "kv_used_blocks": Explanation("KV blocks used", "total − free (without a total gauge: "
                                  "free × usage / (1 − usage))", "dyno:kv_cache_total_blocks, "
                                  "dyno:kv_cache_free_blocks, vllm:kv_cache_usage_perc",
                                  "the latest scrape"),
    "kv_cached_blocks": Explanation("KV blocks cached", "gauge as scraped: free blocks that still "
                                    "hold a reusable prefix", "dyno:kv_cache_cached_blocks",
                                    "the latest scrape"),
    "kv_free_blocks": Explanation("KV blocks free", "gauge as scraped",
                                  "dyno:kv_cache_free_blocks", "the latest scrape"),
    "prefix_hit_pct": Explanation("prefix cache hit rate", "100 × Δ hits / Δ queries (tokens)",
                                  "vllm:prefix_cache_hits_total, vllm:prefix_cache_queries_total",
                                  _W),
    "ttft_p50": Explanation("server TTFT p50", _PCT, "vllm:time_to_first_token_seconds", _W),
    "ttft_p99": Explanation("server TTFT p99", _PCT, "vllm:time_to_first_token_seconds", _W),
    "itl_p50": Explanation("server inter-token latency p50", _PCT,
                           "vllm:inter_token_latency_seconds", _W),
    "itl_p99": Explanation("server inter-token latency p99", _PCT,
                           "vllm:inter_token_latency_seconds", _W),
    "client_ttft_p50": Explanation("client TTFT p50", "numpy percentile of first token − send",
                                   "the bench's per-request records (loadgen RequestRecord)",
                                   f"requests whose first token came in the last {WINDOW_S:g} s"),
    "client_ttft_p99": Explanation("client TTFT p99", "numpy percentile of first token − send",
                                   "the bench's per-request records (loadgen RequestRecord)",
                                   f"requests whose first token came in the last {WINDOW_S:g} s"),
    "ttft_gap_ms": Explanation("client − server TTFT (p50)", "client TTFT p50 − server TTFT p50",
                               "RequestRecord vs vllm:time_to_first_token_seconds",
                               f"both over the last {WINDOW_S:g} s"),
    "sched_lag_ms": Explanation("generator scheduling lag", "max(dispatch (or send) − scheduled)",
                                "RequestRecord.dispatch_time / send_time / scheduled_time",
                                "requests of the last 10 s; large = the generator is the "
                                "bottleneck"),
}

KEYS: tuple[tuple[str, str], ...] = (
    ("1 … 6", "Servers, Monitor, Bench, Compare, Tune, Reports (not while typing in a field)"),
    ("F2 … F7", "the same screens, from anywhere"),
    ("F1", "this help"),
    ("?", "on a number (Monitor): what it is — formula, source, window, samples"),
    ("ctrl+p", "command palette: every action"),
    ("tab / shift+tab", "move between widgets; the mouse works too"),
    ("q / ctrl+q", "quit (asks before stopping servers this dashboard launched)"),
    ("Monitor: s", "declare an SLO (also in the palette)"),
    ("Servers: n", "launch a `dyno serve` from the flag form"),
    ("Servers: a", "attach to a URL"),
    ("Servers: d", "look for servers on the usual local ports"),
    ("Servers: x / r", "stop / restart the selected server"),
    ("Servers: enter", "select the server and open its Monitor"),
    ("Replay: space", "play / pause"),
    ("Replay: . / ,", "step one second forward / back"),
    ("Replay: ] / [", "seek 10 s forward / back; home / end: start / end"),
)


def explain(key: str, samples: int) -> str:
    e = EXPLANATIONS.get(key)
    if e is None:
        return f"{key}: no explanation"
    return (f"{e.title}\nformula: {e.formula}\nsource: {e.source}\nwindow: {e.window}\n"
            f"samples: {samples}")
