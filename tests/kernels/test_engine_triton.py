"""The engine's greedy exactness tests on the Triton attention backend (in the interpreter here).

Tiny random-weight models of real architectures, fp32, against transformers' own greedy tokens:
mixed decode/prefill batches at every block size, chunked prefill with a sliding window,
prefix-cache hits, and an fp8 cache agreeing with the torch backend's fp8 cache.
"""

from __future__ import annotations

import random

import pytest
import torch

from engine import LLM, SamplingParams
from engine.triton_attention import TritonAttention
from tests.engine.conftest import build_tiny_model, hf_greedy

MAX_TOKENS = 12


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-triton")
    return {kind: (root / kind, build_tiny_model(kind, root / kind)) for kind in ("llama", "qwen2", "mistral")}


@pytest.fixture
def triton_backend(monkeypatch):
    monkeypatch.setenv("DYNO_ATTENTION_BACKEND", "triton")


def _prompts(lens, seed=0):
    rng = random.Random(seed)
    return [[rng.randrange(3, 512) for _ in range(n)] for n in lens]


def _generate(path, prompts, **engine_args):
    llm = LLM(str(path), skip_tokenizer_init=True, dtype="float32", **engine_args)
    assert isinstance(llm.engine.runner.model.layers[0].self_attn.attn, TritonAttention)
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    return llm, [o.outputs[0].token_ids for o in outs]


def _expected(model, prompts):
    return [hf_greedy(model, p, MAX_TOKENS)[0] for p in prompts]


# The interpreter runs every kernel of every layer in Python: one block size per architecture
# by default, the full grid with -m slow.
_SLOW = pytest.mark.slow


@pytest.mark.parametrize("arch, block_size", [
    ("llama", 16), ("qwen2", 8), ("mistral", 32),
    pytest.param("llama", 8, marks=_SLOW), pytest.param("llama", 32, marks=_SLOW),
    pytest.param("qwen2", 16, marks=_SLOW), pytest.param("qwen2", 32, marks=_SLOW),
    pytest.param("mistral", 8, marks=_SLOW), pytest.param("mistral", 16, marks=_SLOW)])
def test_mixed_batch_matches_transformers(tiny, triton_backend, arch, block_size):
    path, model = tiny[arch]
    prompts = _prompts([1, 7, 16, 17, 40, 63])
    _, got = _generate(path, prompts, block_size=block_size, num_gpu_blocks_override=128)
    assert got == _expected(model, prompts)


def test_preemption_matches_transformers(tiny, triton_backend):
    path, model = tiny["llama"]
    prompts = _prompts([20, 25, 30, 18], seed=5)
    llm, got = _generate(path, prompts, block_size=8, num_gpu_blocks_override=10,
                         max_model_len=64, max_num_batched_tokens=256)
    assert llm.engine.stats().num_preemptions > 0
    assert got == _expected(model, prompts)


def test_chunked_prefill_with_sliding_window_matches_transformers(tiny, triton_backend):
    path, model = tiny["mistral"]
    prompts = _prompts([50, 5, 33], seed=1)
    _, got = _generate(path, prompts, enable_chunked_prefill=True, max_num_batched_tokens=16,
                       max_num_seqs=4, block_size=8, num_gpu_blocks_override=64)
    assert got == _expected(model, prompts)


def test_prefix_cache_hits_match_transformers(tiny, triton_backend):
    path, model = tiny["llama"]
    shared = _prompts([32], seed=2)[0]
    prompts = [shared + tail for tail in _prompts([3, 10], seed=3)]
    llm = LLM(str(path), skip_tokenizer_init=True, dtype="float32", enable_prefix_caching=True,
              block_size=16, num_gpu_blocks_override=64)
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
    got = [o.outputs[0].token_ids for p in prompts
           for o in llm.generate([{"prompt_token_ids": p}], params)]
    assert llm.engine.stats().prefix_cache_hits == 32
    assert got == _expected(model, prompts)


def test_fp8_cache_matches_the_torch_backend(tiny, monkeypatch):
    path, _ = tiny["qwen2"]
    prompts = _prompts([9, 20], seed=4)
    args = dict(kv_cache_dtype="fp8", block_size=16, num_gpu_blocks_override=32)
    monkeypatch.setenv("DYNO_ATTENTION_BACKEND", "torch")
    torch_llm = LLM(str(path), skip_tokenizer_init=True, dtype="float32", **args)
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True, logprobs=1)
    want = torch_llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    monkeypatch.setenv("DYNO_ATTENTION_BACKEND", "triton")
    llm = LLM(str(path), skip_tokenizer_init=True, dtype="float32", **args)
    got = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    for a, b in zip(got, want):
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
        for la, lb, t in zip(a.outputs[0].logprobs, b.outputs[0].logprobs, a.outputs[0].token_ids):
            assert abs(la[t].logprob - lb[t].logprob) < 1e-4


def test_unknown_backend_name_is_a_clear_error(tiny, monkeypatch):
    monkeypatch.setenv("DYNO_ATTENTION_BACKEND", "flash")
    with pytest.raises(ValueError, match="DYNO_ATTENTION_BACKEND='flash' is not one of"):
        LLM(str(tiny["llama"][0]), skip_tokenizer_init=True, num_gpu_blocks_override=16)


def test_cuda_without_a_gpu_is_a_clear_error():
    from engine.model_loader import resolve_device

    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
        return
    with pytest.raises(ValueError, match="--device cuda: torch sees no CUDA device"):
        resolve_device("cuda")
