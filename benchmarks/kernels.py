"""Kernel benchmark: each Triton kernel against its torch reference and, for attention, against
torch's scaled_dot_product_attention, in GB/s and TFLOP/s beside the GPU's peak.

Needs a CUDA GPU (exits with a message otherwise). Shapes are Llama-3-8B's (32 query heads,
8 KV heads, head_dim 128, hidden 4096, intermediate 14336), bf16, block size 16. Prints a table
and writes benchmarks/results/kernels.json. `--smoke` runs tiny shapes once on the CPU in
Triton's interpreter, to check the script itself (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# kernels package: put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

# Dense bf16 tensor-core TFLOP/s and memory GB/s, from the vendors' data sheets.
PEAKS = {"H200": (989.0, 4800.0), "H100 PCIe": (756.0, 2000.0), "H100": (989.0, 3350.0),
         "A100-SXM4-80GB": (312.0, 2039.0), "A100": (312.0, 1555.0), "L40S": (362.0, 864.0),
         "L4": (121.0, 300.0), "A10G": (70.0, 600.0)}
HEADS, KV_HEADS, DIM, HIDDEN, INTER, BLOCK = 32, 8, 128, 4096, 14336, 16


@dataclass
class Row:
    kernel: str
    case: str
    impl: str
    ms: float
    gb_s: float
    tflop_s: float


def peak(name: str) -> tuple[float | None, float | None]:
    for key, value in PEAKS.items():  # most specific names first
        if key in name:
            return value
    return None, None


def timer(smoke: bool):
    if smoke:
        def run(fn):
            fn()
            start = time.perf_counter()
            fn()
            return (time.perf_counter() - start) * 1e3
        return run
    import triton.testing

    return lambda fn: triton.testing.do_bench(fn, warmup=25, rep=100)


def paged_cache(seq_lens: list[int], dtype, device, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """A shuffled block pool holding every sequence; returns (kv_cache, block_table)."""
    blocks = [-(-n // BLOCK) for n in seq_lens]
    num_blocks = 1 + sum(blocks)
    order = (torch.randperm(num_blocks - 1, generator=gen) + 1).tolist()
    table = torch.zeros(len(seq_lens), max(blocks), dtype=torch.int32)
    for i, nb in enumerate(blocks):
        table[i, :nb] = torch.tensor([order.pop() for _ in range(nb)], dtype=torch.int32)
    kv = torch.randn(2, num_blocks * BLOCK, KV_HEADS, DIM, generator=gen).to(device)
    return kv.to(dtype), table.to(device)


def contiguous_kv(kv, table, seq_lens, dtype):
    """Each sequence's keys and values gathered into [1, kv_heads, len, dim] for SDPA."""
    out = []
    for i, n in enumerate(seq_lens):
        pos = torch.arange(n, device=kv.device)
        slots = table[i, pos // BLOCK].long() * BLOCK + pos % BLOCK
        k = kv[0].view(torch.uint8)[slots].view(kv.dtype) if kv.dtype.itemsize == 1 else kv[0][slots]
        v = kv[1].view(torch.uint8)[slots].view(kv.dtype) if kv.dtype.itemsize == 1 else kv[1][slots]
        out.append((k.to(dtype).transpose(0, 1)[None], v.to(dtype).transpose(0, 1)[None]))
    return out


def bench_decode(time_fn, device, gen, num_seqs, ctx, cache_dtype, rows):
    from kernels import paged_decode_attention, paged_decode_attention_ref

    dtype = torch.bfloat16
    lens = [ctx] * num_seqs
    kv, table = paged_cache(lens, cache_dtype, device, gen)
    q = torch.randn(num_seqs, HEADS, DIM, generator=gen).to(device, dtype)
    seq_lens = torch.tensor(lens, dtype=torch.int32, device=device)
    args = (q, kv, table, seq_lens, DIM ** -0.5, BLOCK, 1.0, 1.0)
    nbytes = 2 * num_seqs * ctx * KV_HEADS * DIM * kv.element_size() + 2 * q.numel() * q.element_size()
    flops = 4 * num_seqs * HEADS * ctx * DIM
    case = f"{num_seqs} seqs x {ctx} ctx, {str(cache_dtype).removeprefix('torch.')} cache"
    impls = {"triton": lambda: paged_decode_attention(*args),
             "torch ref": lambda: paged_decode_attention_ref(*args)}
    if cache_dtype == dtype:  # SDPA on already-contiguous K/V: a peer without paging's gather
        ks, vs = zip(*contiguous_kv(kv, table, lens, dtype))
        kc, vc = torch.cat(ks), torch.cat(vs)  # [num_seqs, kv_heads, ctx, dim]
        impls["sdpa (contiguous)"] = lambda: torch.nn.functional.scaled_dot_product_attention(
            q[:, :, None], kc, vc, enable_gqa=True)
    for impl, fn in impls.items():
        ms = time_fn(fn)
        rows.append(Row("decode attention", case, impl, ms, nbytes / ms / 1e6, flops / ms / 1e9))


def bench_prefill(time_fn, device, gen, seqs, rows):
    from kernels import paged_prefill_attention, paged_prefill_attention_ref

    dtype = torch.bfloat16
    lens = [c + n for c, n in seqs]
    kv, table = paged_cache(lens, dtype, device, gen)
    q_lens = [n for _, n in seqs]
    q = torch.randn(sum(q_lens), HEADS, DIM, generator=gen).to(device, dtype)
    query_start = torch.tensor([0] + q_lens).cumsum(0).to(device, torch.int32)
    seq_lens = torch.tensor(lens, dtype=torch.int32, device=device)
    args = (q, kv, table, query_start, seq_lens, max(q_lens), DIM ** -0.5, BLOCK)
    # Causal: each new row attends its cached prefix and, on average, half the new rows.
    flops = sum(4 * HEADS * DIM * n * (c + (n + 1) / 2) for c, n in seqs)
    nbytes = sum(2 * (c + n) * KV_HEADS * DIM + 2 * n * HEADS * DIM for c, n in seqs) * 2
    case = f"{len(seqs)} seqs, " + ", ".join(f"{c}+{n}" for c, n in seqs[:2]) + (" ..." if len(seqs) > 2 else "")
    contiguous = contiguous_kv(kv, table, lens, dtype)
    starts = query_start.tolist()

    def sdpa():
        for i, ((c, n), (k, v)) in enumerate(zip(seqs, contiguous)):
            qi = q[starts[i]:starts[i + 1]].transpose(0, 1)[None]
            mask = None if c == 0 else torch.ones(n, c + n, dtype=torch.bool, device=device).tril(c)
            torch.nn.functional.scaled_dot_product_attention(qi, k, v, attn_mask=mask,
                                                             is_causal=c == 0, enable_gqa=True)

    impls = {"triton": lambda: paged_prefill_attention(*args),
             "torch ref": lambda: paged_prefill_attention_ref(*args), "sdpa (contiguous)": sdpa}
    for impl, fn in impls.items():
        ms = time_fn(fn)
        rows.append(Row("prefill attention", case, impl, ms, nbytes / ms / 1e6, flops / ms / 1e9))


def bench_elementwise(time_fn, device, gen, tokens, rows):
    import kernels as k

    dtype = torch.bfloat16

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device, dtype)

    x, r, w = rand(tokens, HIDDEN), rand(tokens, HIDDEN), rand(HIDDEN)
    q, kk, v = rand(tokens, HEADS, DIM), rand(tokens, KV_HEADS, DIM), rand(tokens, KV_HEADS, DIM)
    cos, sin = rand(tokens, DIM), rand(tokens, DIM)
    gate_up = rand(tokens, 2 * INTER)
    kv = torch.zeros(2, tokens, KV_HEADS, DIM, device=device, dtype=dtype)
    kv8 = torch.zeros(2, tokens, KV_HEADS, DIM, device=device, dtype=torch.float8_e4m3fn)
    slots = torch.randperm(tokens, generator=gen).to(device)
    e = 2  # bytes per bf16 element
    cases = [
        ("fused add+rmsnorm", f"{tokens} x {HIDDEN}", 4 * x.numel() * e,
         lambda: k.fused_add_rms_norm(x, r, w, 1e-5), lambda: k.fused_add_rms_norm_ref(x, r, w, 1e-5)),
        ("rotary", f"{tokens} tok, {HEADS}/{KV_HEADS} heads", 2 * (q.numel() + kk.numel()) * e,
         lambda: k.rotary_embedding(q, kk, cos, sin), lambda: k.rotary_embedding_ref(q, kk, cos, sin)),
        ("silu and mul", f"{tokens} x {INTER}", 3 * tokens * INTER * e,
         lambda: k.silu_and_mul(gate_up), lambda: k.silu_and_mul_ref(gate_up)),
        ("kv write", f"{tokens} tok, bf16 cache", 4 * kk.numel() * e,
         lambda: k.write_kv(kk, v, kv, slots), lambda: _index_write(kk, v, kv, slots)),
        ("kv write", f"{tokens} tok, fp8 cache", 3 * kk.numel() * e,
         lambda: k.write_kv(kk, v, kv8, slots), lambda: _index_write(kk, v, kv8, slots)),
    ]
    for kernel, case, nbytes, triton_fn, torch_fn in cases:
        # The kv write's per-token reference is too slow to time: torch's index_copy_ stands in.
        for impl, fn in (("triton", triton_fn), ("torch" if kernel == "kv write" else "torch ref", torch_fn)):
            ms = time_fn(fn)
            rows.append(Row(kernel, case, impl, ms, nbytes / ms / 1e6, 0.0))


def _index_write(k, v, kv, slots):
    """What the torch backend does: cast, then index_copy_ by slot (bytes for fp8)."""
    if kv.dtype.itemsize == 1:
        kv.view(torch.uint8)[0].index_copy_(0, slots, k.to(kv.dtype).view(torch.uint8))
        kv.view(torch.uint8)[1].index_copy_(0, slots, v.to(kv.dtype).view(torch.uint8))
    else:
        kv[0].index_copy_(0, slots, k)
        kv[1].index_copy_(0, slots, v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes on the CPU in Triton's interpreter; checks the script only")
    parser.add_argument("--out", default="benchmarks/results/kernels.json")
    args = parser.parse_args()
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before kernels (and triton.jit) import
        device = "cpu"
    elif not torch.cuda.is_available():
        sys.exit("benchmarks/kernels.py needs a CUDA GPU and torch sees none here (no GPU on this "
                 "machine, and none lent to this run); run it on a GPU, or --smoke to check the script")
    else:
        device = "cuda"
    gen = torch.Generator().manual_seed(0)
    time_fn = timer(args.smoke)
    rows: list[Row] = []
    with torch.inference_mode():
        if args.smoke:
            bench_decode(time_fn, device, gen, 2, 40, torch.bfloat16, rows)
            bench_decode(time_fn, device, gen, 2, 40, torch.float8_e4m3fn, rows)
            bench_prefill(time_fn, device, gen, [(0, 20), (16, 9)], rows)
            bench_elementwise(time_fn, device, gen, 8, rows)
        else:
            for num_seqs, ctx in ((1, 4096), (64, 1024), (64, 4096), (256, 2048)):
                bench_decode(time_fn, device, gen, num_seqs, ctx, torch.bfloat16, rows)
            bench_decode(time_fn, device, gen, 64, 4096, torch.float8_e4m3fn, rows)
            bench_prefill(time_fn, device, gen, [(0, 2048)], rows)
            bench_prefill(time_fn, device, gen, [(0, 512)] * 8, rows)
            bench_prefill(time_fn, device, gen, [(1536, 512)] * 4, rows)
            bench_elementwise(time_fn, device, gen, 4096, rows)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu (interpreter smoke run)"
    peak_tflops, peak_gbs = peak(name) if device == "cuda" else (None, None)
    print(f"device: {name}; peak: {peak_gbs or '?'} GB/s, {peak_tflops or '?'} bf16 TFLOP/s")
    print(f"{'kernel':<18} {'case':<34} {'impl':<18} {'ms':>9} {'GB/s':>9} {'%peak':>6} {'TFLOP/s':>8} {'%peak':>6}")
    for r in rows:
        bw = f"{100 * r.gb_s / peak_gbs:5.1f}%" if peak_gbs else "     ?"
        fl = f"{100 * r.tflop_s / peak_tflops:5.1f}%" if peak_tflops and r.tflop_s else "      "
        tf = f"{r.tflop_s:8.2f}" if r.tflop_s else " " * 8
        print(f"{r.kernel:<18} {r.case:<34} {r.impl:<18} {r.ms:9.3f} {r.gb_s:9.1f} {bw:>6} {tf} {fl:>6}")
    if args.smoke:
        print("(smoke run: interpreter timings, not performance)")
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": name, "peak_gb_s": peak_gbs, "peak_tflop_s": peak_tflops,
                               "torch": torch.__version__, "rows": [asdict(r) for r in rows]}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
