"""The decode stack (decode steps' layers in one C++ call) gives the Python layers' outputs, bit
for bit, for every architecture, weight format and cache dtype it takes."""

from __future__ import annotations

import pytest
import torch

from engine import LLM, SamplingParams, cpu_kernels
from engine.attention import AttentionMetadata, PrefillSpan

KERNELS = cpu_kernels.load()
AMX = KERNELS is not None and KERNELS.amx_available()
pytestmark = pytest.mark.skipif(
    KERNELS is None or not (AMX or KERNELS.vnni_available()),
    reason="the decode stack runs dyno's AMX kernels, or without AMX its VNNI ones")


def _needs_a_kernel_for(quantization: str | None) -> None:
    if not AMX and quantization is None:
        pytest.skip("without AMX only quantized layers have a decode kernel (VNNI)")

PROMPTS = [[(7 * i + 3 * j) % 500 + 1 for j in range(5 + 9 * i)] for i in range(5)]


def _tiny_llm(tiny_models, arch: str, **kwargs) -> LLM:
    # 64 blocks hold every test's contexts; the default pool takes seconds to allocate
    path, _ = tiny_models[arch]
    return LLM(str(path), skip_tokenizer_init=True, max_model_len=256, num_gpu_blocks_override=64, **kwargs)


def _generate(llm: LLM, prompts: list[list[int]]) -> list[tuple[list[int], list[float]]]:
    # 40 tokens: the longest context crosses the mistral model's 24-token window
    params = SamplingParams(max_tokens=40, ignore_eos=True, temperature=0, logprobs=2)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    return [(o.outputs[0].token_ids,
             [lp[t].logprob for lp, t in zip(o.outputs[0].logprobs, o.outputs[0].token_ids)])
            for o in outs]


def _with_and_without_stack(llm: LLM, prompts):
    model = llm.engine.runner.model
    stack = model.decode_stack
    assert stack is not None
    with_stack = _generate(llm, prompts)
    model.decode_stack = None
    try:
        without = _generate(llm, prompts)
    finally:
        model.decode_stack = stack
    return with_stack, without


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
@pytest.mark.parametrize("quantization,kv_cache_dtype", [(None, "auto"), ("int8", "auto"),
                                                          ("int4", "auto"), ("int4", "fp8")])
def test_decode_steps_match_the_python_layers(tiny_models, arch, quantization, kv_cache_dtype):
    _needs_a_kernel_for(quantization)
    llm = _tiny_llm(tiny_models, arch, dtype="bfloat16", quantization=quantization,
                    kv_cache_dtype=kv_cache_dtype)
    with_stack, without = _with_and_without_stack(llm, PROMPTS)
    assert with_stack == without
    assert [len(tokens) for tokens, _ in with_stack] == [40] * len(PROMPTS)


@pytest.mark.parametrize("quantization,kv_cache_dtype", [("int8", "auto"), ("int4", "fp8")])
def test_batches_split_over_the_threads_match_the_python_layers(tiny_models, quantization, kv_cache_dtype):
    # from 32 rows each thread takes its share of the sequences through every layer (VNNI only)
    path, _ = tiny_models["llama"]
    llm = LLM(str(path), skip_tokenizer_init=True, max_model_len=256, num_gpu_blocks_override=256,
              dtype="bfloat16", quantization=quantization, kv_cache_dtype=kv_cache_dtype)
    prompts = [[(5 * i + 11 * j) % 500 + 1 for j in range(3 + i % 7)] for i in range(33)]
    with_stack, without = _with_and_without_stack(llm, prompts)
    assert with_stack == without
    assert [len(tokens) for tokens, _ in with_stack] == [40] * len(prompts)


@pytest.mark.parametrize("num_prompts", [1, 3])
def test_few_row_int4_steps_match_the_python_layers(tiny_models, num_prompts):
    """One to four rows take int4's few-row VNNI kernel, in the stack as in Python."""
    llm = _tiny_llm(tiny_models, "llama", quantization="int4")
    with_stack, without = _with_and_without_stack(llm, PROMPTS[:num_prompts])
    assert with_stack == without


def test_the_stack_takes_only_small_decode_only_steps(tiny_models):
    if not AMX:
        pytest.skip("the VNNI kernels take batches of every size: no bound to test")
    llm = _tiny_llm(tiny_models, "llama", quantization="int8")
    stack, caches = llm.engine.runner.model.decode_stack, llm.engine.runner.kv_caches
    assert stack.below_rows == 256  # the int8 layers' AMX bound

    def meta(rows, prefills=()):
        return AttentionMetadata(torch.zeros(rows, dtype=torch.long), rows - sum(s.end - s.start for s in prefills),
                                 None, None, list(prefills))

    x = torch.zeros(32, 64, dtype=torch.bfloat16)
    assert stack.takes(x, caches, meta(32))
    assert not stack.takes(x, caches, meta(32, [PrefillSpan(16, 32, torch.zeros(16, dtype=torch.long), None)]))
    assert not stack.takes(torch.zeros(256, 64, dtype=torch.bfloat16), caches, meta(256))
    assert not stack.takes(x.float(), caches, meta(32))


def test_float32_models_keep_the_python_layers(tiny_models):
    llm = _tiny_llm(tiny_models, "llama", dtype="float32")
    assert llm.engine.runner.model.decode_stack is None
