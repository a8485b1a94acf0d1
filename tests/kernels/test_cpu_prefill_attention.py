"""dyno's AMX prompt attention (engine/csrc/prefill_attention.cpp) against SDPA in fp32: several
prompts in one call, each attending causally to its cached prefix and itself, read from
scattered cache slots (every other slot NaN), with and without a sliding window; and the engine
taking it for bf16 prompts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine import LLM, SamplingParams, cpu_kernels

KERNELS = cpu_kernels.load()
pytestmark = pytest.mark.skipif(KERNELS is None or not (KERNELS.amx_available() or KERNELS.vnni_available()),
                                reason="no AMX on this CPU, or dyno's CPU kernels did not build here")

HEADS, KV_HEADS, DIM = 9, 3, 64


def _reference(q, k, v, cached, window):
    n, ctx = q.shape[0], k.shape[0]
    seen = torch.arange(ctx)[None, :] <= torch.arange(cached, cached + n)[:, None]
    if window:
        seen &= torch.arange(ctx)[None, :] > torch.arange(cached, cached + n)[:, None] - window
    out = F.scaled_dot_product_attention(q.float().transpose(0, 1), k.float().transpose(0, 1),
                                         v.float().transpose(0, 1), attn_mask=seen, scale=DIM ** -0.5,
                                         enable_gqa=True)
    return out.transpose(0, 1)


@pytest.mark.parametrize("window", [0, 20])
def test_prompts_match_sdpa(window):
    torch.manual_seed(window)
    prompts = [(128, 0), (1, 0), (17, 0), (33, 40), (16, 100), (70, 3)]  # (new tokens, cached)
    kv = torch.full((2, 1024, KV_HEADS, DIM), float("nan")).bfloat16()
    free = torch.randperm(1024)
    qs, slots, wants = [], [], []
    for n, cached in prompts:
        mine, free = free[:n + cached], free[n + cached:]
        kv[:, mine] = torch.randn(2, n + cached, KV_HEADS, DIM).bfloat16()
        q = torch.randn(n, HEADS, DIM).bfloat16()
        qs.append(q)
        slots.append(mine)
        wants.append(_reference(q, kv[0, mine], kv[1, mine], cached, window))
    query_starts = torch.tensor([0] + [n for n, _ in prompts]).cumsum(0)
    context_starts = torch.tensor([0] + [n + c for n, c in prompts]).cumsum(0)
    got = KERNELS.prefill_attention(torch.cat(qs), kv, query_starts, torch.cat(slots), context_starts,
                                    window, DIM ** -0.5, 1.0, 1.0)
    assert got.dtype == torch.bfloat16 and not got.isnan().any()
    torch.testing.assert_close(got.float(), torch.cat(wants), atol=1.6e-2, rtol=1.6e-2)


@pytest.mark.parametrize("cache_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_fp8_cache_reads_as_its_codes_times_the_scales(cache_dtype):
    torch.manual_seed(1)
    n, cached, k_scale, v_scale = 40, 9, 0.05, 0.03
    values = torch.randn(2, n + cached, KV_HEADS, DIM)
    codes = torch.stack([values[0] / k_scale, values[1] / v_scale]).to(cache_dtype)
    kv = torch.zeros(2, 64, KV_HEADS, DIM, dtype=cache_dtype)
    slots = torch.randperm(64)[:n + cached]
    kv[:, slots] = codes
    q = torch.randn(n, HEADS, DIM).bfloat16()
    keys, vals = (codes[0].float() * k_scale).bfloat16(), (codes[1].float() * v_scale).bfloat16()
    got = KERNELS.prefill_attention(q, kv, torch.tensor([0, n]), slots, torch.tensor([0, n + cached]),
                                    0, DIM ** -0.5, k_scale, v_scale)
    torch.testing.assert_close(got.float(), _reference(q, keys, vals, cached, 0), atol=1.6e-2, rtol=1.6e-2)


def test_other_shapes_are_refused():
    q = torch.randn(4, 4, 32).bfloat16()
    kv = torch.randn(2, 8, 2, 32).bfloat16()
    with pytest.raises(RuntimeError, match="head_dim 64"):
        KERNELS.prefill_attention(q, kv, torch.tensor([0, 4]), torch.arange(4), torch.tensor([0, 4]), 0, 0.1,
                                  1.0, 1.0)


def test_bf16_engine_prompts_take_the_kernel(monkeypatch):
    """The default model (head_dim 64) in bf16: prompts never reach the SDPA path."""
    llm = LLM(dtype="bfloat16", max_model_len=256, num_gpu_blocks_override=64)
    attention = next(m.attn for m in llm.engine.runner.model.modules() if hasattr(m, "attn"))
    calls = []
    monkeypatch.setattr(type(attention), "_prefill", lambda *a: calls.append(a))
    prompts = [{"prompt_token_ids": list(range(3, 3 + n))} for n in (37, 5)]
    out = llm.generate(prompts, SamplingParams(max_tokens=3, ignore_eos=True))
    assert [len(o.outputs[0].token_ids) for o in out] == [3, 3] and calls == []
