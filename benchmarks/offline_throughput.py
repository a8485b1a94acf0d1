"""Offline throughput: dyno's engine against transformers' batched generate, same prompts.

Default workload (issue 3): the default model, 64 prompts of 256 tokens, 128 output tokens
each (ignore_eos), fp32 and bf16. Prints a table and writes benchmarks/results/offline_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import torch

from engine import LLM, SamplingParams

FLOPS_PER_TOKEN = 0.27e9  # ~2 x parameters of SmolLM2-135M, lm_head included


def make_prompts(tokenizer, num: int, length: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    vocab = [i for i in range(200, tokenizer.vocab_size)]
    return [[rng.choice(vocab) for _ in range(length)] for _ in range(num)]


def run_dyno(dtype: str, prompts, output_len: int, repeats: int) -> list[float]:
    llm = LLM(dtype=dtype, max_model_len=1024, enable_prefix_caching=False)
    params = SamplingParams(temperature=0, max_tokens=output_len, ignore_eos=True)
    llm.generate([{"prompt_token_ids": p} for p in prompts[:4]], SamplingParams(max_tokens=4))  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
        elapsed = time.perf_counter() - start
        rates.append(sum(len(o.outputs[0].token_ids) for o in outs) / elapsed)
    return rates


@torch.inference_mode()
def run_transformers(model_path: str, dtype: str, prompts, output_len: int, repeats: int,
                     batch_size: int) -> list[float]:
    from transformers import AutoModelForCausalLM

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).eval()
    model.generate(torch.tensor(prompts[:2]), max_new_tokens=2, do_sample=False)  # warm-up
    rates = []
    for _ in range(repeats):
        start, total = time.perf_counter(), 0
        for i in range(0, len(prompts), batch_size):
            batch = torch.tensor(prompts[i:i + batch_size])  # equal lengths: no padding needed
            out = model.generate(batch, max_new_tokens=output_len, min_new_tokens=output_len,
                                 do_sample=False)
            total += (out.shape[1] - batch.shape[1]) * batch.shape[0]
        rates.append(total / (time.perf_counter() - start))
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--input-len", type=int, default=256)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--hf-batch-size", type=int, default=64)
    p.add_argument("--skip-transformers", action="store_true")
    p.add_argument("--out", default="benchmarks/results/offline_throughput.json")
    a = p.parse_args()

    probe = LLM(max_model_len=1024, num_gpu_blocks_override=80)
    prompts = make_prompts(probe.get_tokenizer(), a.num_prompts, a.input_len, seed=0)
    model_path = probe.engine.info.model_path
    del probe
    rows = []
    for dtype in a.dtypes:
        dyno = statistics.median(run_dyno(dtype, prompts, a.output_len, a.repeats))
        hf = None if a.skip_transformers else statistics.median(
            run_transformers(model_path, dtype, prompts, a.output_len, a.repeats, a.hf_batch_size))
        rows.append({"dtype": dtype, "dyno_tok_s": dyno, "transformers_tok_s": hf,
                     "ratio": dyno / hf if hf else None,
                     "dyno_achieved_gflops": dyno * FLOPS_PER_TOKEN / 1e9})
    print(f"{'dtype':<10} {'dyno tok/s':>11} {'transformers tok/s':>19} {'ratio':>7} {'dyno GFLOP/s':>13}")
    for r in rows:
        hf = f"{r['transformers_tok_s']:.1f}" if r["transformers_tok_s"] else "-"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "-"
        print(f"{r['dtype']:<10} {r['dyno_tok_s']:>11.1f} {hf:>19} {ratio:>7} {r['dyno_achieved_gflops']:>13.1f}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": vars(a), "machine": platform.processor() or platform.machine(),
                               "threads": torch.get_num_threads(), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
