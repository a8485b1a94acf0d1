"""`dyno bench`: flags named as `vllm bench serve` names them where the concept is the same.

    dyno bench --base-url http://127.0.0.1:8000 --num-prompts 200 --max-concurrency 1 4 16
    dyno bench --request-rate 2 4 8 --duration 60 --slo ttft=500ms --result-dir runs/a
    dyno bench --capacity --slo ttft=500ms --slo tpot=50ms --slo-percentile 90
    dyno bench --sweep --sweep-points 8
    dyno bench --rebuild runs/a          # summary again from requests.jsonl
    dyno bench mock-server --port 8000 --ttft-ms 50 --itl-ms 10
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from loadgen import schema
from loadgen.arrivals import ARRIVALS, LoadPoint, LoadShapeError
from loadgen.bench import Bench, BenchConfig
from loadgen.capacity import CapacitySearch, search_capacity
from loadgen.datasets import DATASETS, DatasetConfig, DatasetError
from loadgen.discovery import ServerError
from loadgen.display import LiveProgress, show_summaries
from loadgen.lengths import LengthDist, LengthSpecError
from loadgen.metrics import SLO, SLO_METRICS, summarize
from loadgen.sweep import sweep
from loadgen.tokens import TokenizerError

USER_ERRORS = (ServerError, DatasetError, LengthSpecError, LoadShapeError, TokenizerError, ValueError, OSError)


def parse_slo(text: str) -> SLO:
    """`ttft=500ms`, `tpot=0.05s`, `e2el=2000` (ms), or vLLM's --goodput form `ttft:500`."""
    name, sep, value = text.replace(":", "=").partition("=")
    name = name.strip().lower()
    if not sep or name not in SLO_METRICS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected METRIC=VALUE with METRIC in {', '.join(SLO_METRICS)}")
    value = value.strip().lower()
    scale = 1.0 if value.endswith("s") and not value.endswith("ms") else 0.001
    try:
        number = float(value.removesuffix("ms").removesuffix("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a time like 500ms or 0.5s") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the limit must be > 0")
    return SLO(name, number * scale)


def positive_rate(text: str) -> float:
    rate = float(text)
    if not rate > 0:
        raise argparse.ArgumentTypeError(f"{text}: a request rate must be > 0 (inf sends all at once)")
    return rate


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dyno bench", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[1:]))
    g = p.add_argument_group("server")
    g.add_argument("--base-url", help="e.g. http://127.0.0.1:8000 (default: look on local ports "
                   "8000, 8080, 30000, 11434)")
    g.add_argument("--endpoint", default=None, help="default /v1/completions (/v1/chat/completions "
                   "with --backend openai-chat or a multiturn dataset)")
    g.add_argument("--backend", choices=("openai", "openai-chat"), default="openai")
    g.add_argument("--model", help="default: the first model the server lists")
    g.add_argument("--tokenizer", help="local tokenizer directory (default: count with the server's usage)")
    g.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="default $OPENAI_API_KEY")
    g.add_argument("--request-timeout", type=float, default=600.0, help="seconds per request")
    g.add_argument("--extra-body", type=json.loads, default={}, help="JSON merged into every request body")
    add_workload_arguments(p)
    _add_load(p)
    g = p.add_argument_group("output")
    g.add_argument("--result-dir", help="write requests.jsonl, summary.json, summary.csv, points/ here")
    g.add_argument("--scrape-interval", type=float, default=1.0, help="seconds between /metrics scrapes")
    g.add_argument("--no-scrape", action="store_true", help="do not scrape the server's /metrics")
    g.add_argument("--disable-tqdm", "--no-progress", dest="no_progress", action="store_true")
    g.add_argument("--rebuild", metavar="PATH", help="summarize an earlier run's requests.jsonl (file or dir)")
    g.add_argument("--log-level", default="WARNING")
    return p


def add_workload_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("workload")
    g.add_argument("--dataset-name", choices=DATASETS, default="random")
    g.add_argument("--dataset-path")
    g.add_argument("--random-input-len", type=int, default=1024)
    g.add_argument("--random-output-len", type=int, default=128)
    g.add_argument("--random-range-ratio", type=float, default=0.0, help="uniform on len*[1-r, 1+r]")
    g.add_argument("--input-len-dist", help="instead of the three above: fixed:N, uniform:A,B, "
                   "normal:MEAN,STD, lognormal:MEDIAN,SIGMA, hist:N=W,...")
    g.add_argument("--output-len-dist", help="as --input-len-dist, for output lengths")
    g.add_argument("--prefix-groups", "--prefix-repetition-num-prefixes", type=int, default=4)
    g.add_argument("--prefix-len", "--prefix-repetition-prefix-len", type=int, default=256)
    g.add_argument("--num-turns", type=int, default=3, help="multiturn: turns per conversation")
    g.add_argument("--ignore-eos", action="store_true", help="ask for exactly max_tokens output tokens")
    g.add_argument("--seed", type=int, default=0)


def _add_load(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("load")
    g.add_argument("--num-prompts", type=int, default=None, help="requests per load point (default 1000, "
                   "or unlimited with --duration)")
    g.add_argument("--duration", type=float, help="seconds per load point (stops sending after it)")
    g.add_argument("--warmup", type=int, default=0, help="requests per point left out of the metrics")
    g.add_argument("--request-rate", type=positive_rate, nargs="+", help="req/s, open loop; several run in "
                   "turn; inf sends all at once")
    g.add_argument("--arrival", choices=ARRIVALS, default="poisson")
    g.add_argument("--burstiness", type=float, default=1.0, help="gamma shape; 1 is Poisson")
    g.add_argument("--max-concurrency", type=int, nargs="+", help="closed loop at each concurrency; "
                   "with --request-rate, a cap on requests in flight")
    g.add_argument("--slo", type=parse_slo, action="append", default=[], help="e.g. ttft=500ms (repeatable)")
    g.add_argument("--goodput", type=parse_slo, nargs="+", default=[], help="vLLM's form: ttft:500 tpot:50")
    g.add_argument("--slo-percentile", type=float, default=90.0, help="--capacity: share of requests")
    g.add_argument("--capacity", action="store_true", help="find the largest load within the SLOs")
    g.add_argument("--capacity-by", choices=("concurrency", "rate"), default="concurrency")
    g.add_argument("--capacity-max", type=float, default=4096.0)
    g.add_argument("--sweep", action="store_true", help="synchronous, then throughput, then rates between")
    g.add_argument("--sweep-points", type=int, default=10)


def load_points(args: argparse.Namespace) -> tuple[LoadPoint, ...]:
    rates, concs = args.request_rate, args.max_concurrency
    if rates:
        caps = concs or [None]
        return tuple(LoadPoint(rate=r, arrival=args.arrival, burstiness=args.burstiness, max_concurrency=c)
                     for r, c in itertools.product(rates, caps))
    if concs:
        return tuple(LoadPoint(concurrency=c) for c in concs)
    return (LoadPoint(rate=math.inf),)  # vLLM's default: everything at once


def dataset_config(args: argparse.Namespace) -> DatasetConfig:
    in_len = args.input_len_dist or _vllm_len(args.random_input_len, args.random_range_ratio)
    out_len = args.output_len_dist or _vllm_len(args.random_output_len, args.random_range_ratio)
    LengthDist.parse(in_len), LengthDist.parse(out_len)  # fail now, not mid-run
    return DatasetConfig(args.dataset_name, args.dataset_path, in_len, out_len, args.prefix_groups,
                         args.prefix_len, args.num_turns, args.seed)


def _vllm_len(length: int, ratio: float) -> str:
    d = LengthDist.vllm_random(length, ratio)
    return f"fixed:{length}" if d.kind == "fixed" else f"uniform:{d.params[0]:g},{d.params[1]:g}"


def bench_config(args: argparse.Namespace) -> BenchConfig:
    endpoint = args.endpoint or ("/v1/chat/completions" if args.backend == "openai-chat"
                                 or args.dataset_name == "multiturn" else "/v1/completions")
    num = args.num_prompts if args.num_prompts is not None else (None if args.duration else 1000)
    if num is not None and num < 1:
        raise ValueError(f"--num-prompts {num}: must be at least 1")
    return BenchConfig(args.base_url, endpoint, args.model, args.api_key, args.tokenizer, dataset_config(args),
                       load_points(args), num, args.duration, args.warmup, tuple(args.slo + args.goodput),
                       args.ignore_eos, args.seed, args.result_dir,
                       None if args.no_scrape else args.scrape_interval, args.request_timeout, args.extra_body)


async def run(args: argparse.Namespace, console: Console) -> int:
    config = bench_config(args)
    with LiveProgress(console, enabled=not args.no_progress) as progress:
        with Bench(config, progress).open() as bench:
            console.print(f"[bold]{bench.server.base_url}[/] serving [bold]{bench.model}[/]"
                          + ("" if args.base_url else " (found on a local port)"))
            await _run_mode(args, bench, console)
    show_summaries(console, [p.summary for p in bench.result.points])
    for s in bench.result.points:
        for kind, n in s.summary["failed_by_kind"].items():
            console.print(f"[red]{s.summary['point']}: {n} failed ({kind}):[/] "
                          f"{escape(s.summary['first_error_by_kind'].get(kind, ''))}", highlight=False)
    for warning in bench.result.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    if "capacity" in bench.result.extra:
        console.print(f"[bold green]{bench.result.extra['capacity']['answer']}")
    if bench.dir is not None:
        console.print(f"results in {bench.dir}")
    return 0


async def _run_mode(args: argparse.Namespace, bench: Bench, console: Console) -> None:
    if args.capacity:
        search = CapacitySearch(tuple(args.slo + args.goodput), args.slo_percentile, args.capacity_by,
                                max_load=args.capacity_max, arrival=args.arrival)
        answer = await search_capacity(bench, search)
        bench.result.extra.update(answer.to_dict())
    elif args.sweep:
        cap = args.max_concurrency[0] if args.max_concurrency else None
        await sweep(bench, args.sweep_points, args.arrival, args.burstiness, cap)
    else:
        for point in bench.config.points:
            await bench.run_point(point)


def rebuild(args: argparse.Namespace, console: Console) -> int:
    """Summaries again from a requests.jsonl (e.g. of a run killed midway)."""
    path = Path(args.rebuild)
    path = path / schema.REQUESTS_FILE if path.is_dir() else path
    records = schema.read_records(path)
    points = list(dict.fromkeys(r.point for r in records))
    summaries = [summarize([r for r in records if r.point == pt], args.slo + args.goodput) for pt in points]
    show_summaries(console, summaries)
    out = path.parent / "rebuilt_summary.json"
    schema.write_json(out, {"schema_version": schema.SCHEMA_VERSION, "source": str(path), "points": summaries})
    console.print(f"{len(records)} records from {path}; summary in {out}")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["mock-server"]:
        from loadgen.mock_server import serve

        serve(argv[1:])
        return 0
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    console = Console(width=None if sys.stdout.isatty() else 160)  # pipes/logs: don't squeeze tables
    try:
        if args.rebuild:
            return rebuild(args, console)
        return asyncio.run(run(args, console))
    except USER_ERRORS as e:
        print(f"dyno bench: error: {e}", file=sys.stderr)
        if args.result_dir and Path(args.result_dir, schema.REQUESTS_FILE).exists():
            print(f"dyno bench: finished requests are kept in {args.result_dir}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = f"; finished requests are kept in {args.result_dir}" if args.result_dir else ""
        print(f"dyno bench: interrupted{kept}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
