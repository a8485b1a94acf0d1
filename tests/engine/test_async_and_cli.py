"""The async engine (what the server will drive) and `dyno generate` from the shell."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
import torch

from engine import AsyncLLM, EngineArgs, SamplingParams


@pytest.fixture(scope="module")
def async_llm(tiny_models):
    path, _ = tiny_models["llama"]
    llm = AsyncLLM(EngineArgs(model=str(path), skip_tokenizer_init=True, num_gpu_blocks_override=64))
    yield llm
    llm.shutdown()


def _collect(llm, prompt, params, request_id):
    async def run():
        return [out async for out in llm.generate({"prompt_token_ids": prompt}, params, request_id)]
    return asyncio.run(run())


def test_streams_deltas_that_add_up(async_llm):
    deltas = _collect(async_llm, [5, 6, 7], SamplingParams(temperature=0, max_tokens=6, ignore_eos=True), "s1")
    assert [len(d.outputs[0].token_ids) for d in deltas] == [1] * 6
    assert [d.finished for d in deltas] == [False] * 5 + [True]
    assert deltas[-1].outputs[0].finish_reason == "length"


def test_concurrent_streams_each_get_their_own_tokens(async_llm, tiny_models):
    params = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)

    async def run():
        async def one(i):
            return [t for o in [o async for o in async_llm.generate({"prompt_token_ids": [i, i + 1]}, params, f"c{i}")]
                    for t in o.outputs[0].token_ids]
        return await asyncio.gather(*(one(i) for i in range(10, 16)))

    together = asyncio.run(run())
    alone = [[t for o in _collect(async_llm, [i, i + 1], params, f"a{i}") for t in o.outputs[0].token_ids]
             for i in range(10, 16)]
    assert together == alone


def test_leaving_the_stream_aborts_the_request(async_llm):
    async def run():
        stream = async_llm.generate({"prompt_token_ids": [1, 2, 3]},
                                    SamplingParams(max_tokens=200, ignore_eos=True), "gone")
        async for _ in stream:
            break
        await stream.aclose()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not async_llm.engine.has_unfinished_requests():
                return True
        return False

    assert asyncio.run(run())
    assert async_llm.engine.kv_cache.num_free_blocks == 63


def test_a_bad_request_raises_in_the_caller(async_llm):
    async def run():
        async for _ in async_llm.generate({"prompt_token_ids": []}, SamplingParams(), "bad"):
            pass
    with pytest.raises(ValueError, match="the prompt is empty"):
        asyncio.run(run())


def test_dyno_generate_on_the_default_model():
    proc = subprocess.run(
        [sys.executable, "-m", "dyno", "generate", "--prompt", "What is the capital of France?",
         "--max-tokens", "12", "--json", "--dtype", "float32", "--max-model-len", "512"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["outputs"][0]["text"] == "The capital of France is Paris."
    assert "tokens/s" in proc.stderr


def test_dyno_generate_refuses_a_bad_flag_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "dyno", "generate", "--block-size", "12"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--block-size" in proc.stderr.strip().splitlines()[-1]


def test_dummy_weights_run_a_model_shape_without_its_weights(tiny_models):
    from engine import LLM

    path, _ = tiny_models["qwen2"]
    llm = LLM(str(path), load_format="dummy", skip_tokenizer_init=True, num_gpu_blocks_override=32)
    out = llm.generate({"prompt_token_ids": [1, 2, 3]}, SamplingParams(max_tokens=4, ignore_eos=True))[0]
    assert len(out.outputs[0].token_ids) == 4


def test_dummy_weights_repeat_for_a_seed_and_loading_leaves_torch_init_alone(tiny_models):
    """Models are built without torch's random init (every weight is then loaded or set): the
    dummy weights still come from the seed, and torch.nn.init is itself again afterwards."""
    from engine import LLM

    path, _ = tiny_models["llama"]
    before = torch.nn.init.uniform_
    weights = [LLM(str(path), load_format="dummy", skip_tokenizer_init=True, num_gpu_blocks_override=32,
                   seed=seed).engine.runner.model.layers[0].mlp.down_proj.weight.clone()
               for seed in (3, 3, 4)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    assert torch.nn.init.uniform_ is before
    linear = torch.nn.Linear(4, 4)
    assert linear.weight.abs().sum() > 0 and linear.weight.std() > 0


def test_global_seed_makes_unseeded_sampling_repeat(tiny_models):
    from engine import LLM

    path, _ = tiny_models["llama"]
    params = SamplingParams(temperature=1.0, max_tokens=12, ignore_eos=True)

    def run(seed):
        llm = LLM(str(path), skip_tokenizer_init=True, num_gpu_blocks_override=32, seed=seed)
        return llm.generate({"prompt_token_ids": [4, 5, 6]}, params)[0].outputs[0].token_ids

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_json_log_format_and_periodic_stats(tiny_models, caplog):
    import logging

    from engine import LLM
    from engine.log import JsonFormatter

    path, _ = tiny_models["llama"]
    llm = LLM(str(path), skip_tokenizer_init=True, num_gpu_blocks_override=32)
    llm.engine._last_log = (0.0, 0, 0)  # as if the last report were long ago
    with caplog.at_level(logging.INFO, logger="engine.llm_engine"):
        llm.generate({"prompt_token_ids": [4, 5, 6]}, SamplingParams(max_tokens=2, ignore_eos=True))
    record = next(r for r in caplog.records if "generation" in r.getMessage())
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "info" and line["logger"] == "engine.llm_engine"
    assert "KV cache" in line["message"] and "prefix cache hit rate" in line["message"]

    quiet = LLM(str(path), skip_tokenizer_init=True, num_gpu_blocks_override=32, disable_log_stats=True)
    quiet.engine._last_log = (0.0, 0, 0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="engine.llm_engine"):
        quiet.generate({"prompt_token_ids": [4, 5, 6]}, SamplingParams(max_tokens=2, ignore_eos=True))
    assert not [r for r in caplog.records if "generation" in r.getMessage()]
