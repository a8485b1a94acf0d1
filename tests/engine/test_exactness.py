"""Greedy tokens identical to transformers (fp32), whatever the batching, paging or caching."""

from __future__ import annotations

import random

import pytest

from engine import LLM, SamplingParams
from tests.engine.conftest import hf_greedy

MAX_TOKENS = 12
PROMPT_LENS = [1, 7, 16, 17, 40, 63]


def _prompts(lens: list[int], seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 512) for _ in range(n)] for n in lens]


def _run(path, prompts, max_tokens=MAX_TOKENS, **engine_args):
    llm = LLM(str(path), skip_tokenizer_init=True, dtype="float32", **engine_args)
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    return llm, [o.outputs[0].token_ids for o in outs]


def _expected(model, prompts, max_tokens=MAX_TOKENS):
    return [hf_greedy(model, p, max_tokens)[0] for p in prompts]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
@pytest.mark.parametrize("block_size", [8, 16, 32])
def test_mixed_batch_matches_transformers(tiny_models, arch, block_size):
    path, model = tiny_models[arch]
    prompts = _prompts(PROMPT_LENS)
    _, got = _run(path, prompts, block_size=block_size, num_gpu_blocks_override=128)
    assert got == _expected(model, prompts)


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_chunked_prefill_matches_transformers(tiny_models, arch):
    path, model = tiny_models[arch]
    prompts = _prompts([70, 33, 5, 90])
    llm, got = _run(path, prompts, enable_chunked_prefill=True, max_num_batched_tokens=16,
                    max_num_seqs=8, num_gpu_blocks_override=128)
    assert got == _expected(model, prompts)


def test_prefix_cache_hits_give_the_same_tokens(tiny_models):
    path, model = tiny_models["llama"]
    shared = _prompts([48], seed=1)[0]
    prompts = [shared + tail for tail in _prompts([3, 9, 20, 1], seed=2)]
    llm = LLM(str(path), skip_tokenizer_init=True, dtype="float32", enable_prefix_caching=True,
              num_gpu_blocks_override=128, block_size=16)
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
    first = llm.generate([{"prompt_token_ids": p} for p in prompts[:1]], params)
    rest = llm.generate([{"prompt_token_ids": p} for p in prompts[1:]], params)
    got = [o.outputs[0].token_ids for o in first + rest]
    assert got == _expected(model, prompts)
    stats = llm.engine.stats()
    assert stats.prefix_cache_hits == 3 * 48  # three later prompts each reuse the 3 shared blocks
    assert [o.num_cached_tokens for o in rest] == [48, 48, 48]


def test_preemption_gives_the_same_tokens(tiny_models):
    path, model = tiny_models["llama"]
    prompts = _prompts([20, 25, 30, 18, 22, 27], seed=3)
    # 13 usable blocks of 8 tokens: six requests growing to ~60 tokens cannot all stay resident.
    llm, got = _run(path, prompts, max_tokens=30, block_size=8, num_gpu_blocks_override=14,
                    max_model_len=100, max_num_batched_tokens=256)
    assert llm.engine.stats().num_preemptions > 0
    assert got == _expected(model, prompts, max_tokens=30)


def test_every_block_is_free_or_cached_after_requests_finish(tiny_models):
    path, _ = tiny_models["qwen2"]
    llm, _ = _run(path, _prompts(PROMPT_LENS), enable_prefix_caching=True, num_gpu_blocks_override=64)
    kv = llm.engine.kv_cache
    assert kv.num_free_blocks == 63
    assert all(b.ref_cnt == 0 for b in kv.pool.blocks[1:])


def test_logprobs_match_transformers_log_softmax(tiny_models):
    path, model = tiny_models["qwen2"]
    prompt = _prompts([11], seed=4)[0]
    llm = LLM(str(path), skip_tokenizer_init=True, dtype="float32", num_gpu_blocks_override=64)
    out = llm.generate({"prompt_token_ids": prompt},
                       SamplingParams(temperature=0, max_tokens=6, logprobs=5, ignore_eos=True))[0]
    tokens, ref_lps = hf_greedy(model, prompt, 6)
    comp = out.outputs[0]
    assert comp.token_ids == tokens
    for token, entry, ref in zip(tokens, comp.logprobs, ref_lps):
        top5 = ref.topk(5)
        assert sorted(entry) == sorted(set(top5.indices.tolist()) | {token})
        for tid, lp in entry.items():
            assert abs(lp.logprob - float(ref[tid])) < 1e-4
            assert lp.rank == int((ref > ref[tid]).sum()) + 1
    assert abs(comp.cumulative_logprob - sum(float(r[t]) for t, r in zip(tokens, ref_lps))) < 1e-4


def test_prompt_logprobs_match_transformers(tiny_models):
    import torch

    path, model = tiny_models["llama"]
    prompt = _prompts([30], seed=5)[0]
    llm = LLM(str(path), skip_tokenizer_init=True, dtype="float32", num_gpu_blocks_override=64,
              enable_chunked_prefill=True, max_num_batched_tokens=8, max_num_seqs=4)
    out = llm.generate({"prompt_token_ids": prompt},
                       SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=2))[0]
    with torch.inference_mode():
        ref = model(torch.tensor([prompt])).logits[0].float().log_softmax(-1)
    assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == len(prompt)
    for i, entry in enumerate(out.prompt_logprobs[1:], start=1):
        assert abs(entry[prompt[i]].logprob - float(ref[i - 1, prompt[i]])) < 1e-4


def test_stale_nan_in_reused_memory_never_leaks_into_outputs(tiny_models):
    """Freshly handed-out blocks may hold anything; poisoned with NaN, outputs stay exact."""
    path, model = tiny_models["llama"]
    llm = LLM(str(path), skip_tokenizer_init=True, dtype="float32", num_gpu_blocks_override=64)
    for cache in llm.engine.runner.kv_caches:
        cache.kv[:, 16:] = float("nan")  # everything but the placeholder block 0
    prompts = _prompts([3, 21, 9], seed=6)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True))
    assert [o.outputs[0].token_ids for o in outs] == _expected(model, prompts)
