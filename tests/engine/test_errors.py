"""Bad input gets one clear error, and nothing already running is lost."""

from __future__ import annotations

import json

import pytest

from engine import LLM, SamplingParams
from engine.model_source import ModelSourceError


def test_unknown_architecture_is_named(tiny_models, tmp_path):
    path, _ = tiny_models["llama"]
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["GPTNeoXForCausalLM"]
    for f in path.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"architecture \['GPTNeoXForCausalLM'\] is not supported; "
                                         r"dyno runs LlamaForCausalLM"):
        LLM(str(tmp_path), skip_tokenizer_init=True, num_gpu_blocks_override=16)


def test_missing_model_path(tmp_path):
    with pytest.raises(ModelSourceError, match="does not exist"):
        LLM(str(tmp_path / "nowhere"))


def test_prompt_longer_than_the_context_is_rejected(default_llm):
    tok_len = default_llm.engine.info.max_model_len
    with pytest.raises(ValueError, match=f"the prompt has {tok_len} tokens, but the context length "
                                         rf"\(--max-model-len\) is {tok_len}"):
        default_llm.generate({"prompt_token_ids": [5] * tok_len})


def test_a_bad_prompt_in_a_batch_submits_nothing(default_llm):
    with pytest.raises(ValueError, match="token id 999999 is outside the vocabulary"):
        default_llm.generate(["fine", {"prompt_token_ids": [1, 999999]}])
    assert not default_llm.engine.has_unfinished_requests()


def test_logprobs_above_the_cap(default_llm):
    with pytest.raises(ValueError, match=r"logprobs=21 exceeds the server's --max-logprobs \(20\)"):
        default_llm.generate("hi", SamplingParams(logprobs=21))


def test_empty_prompt(default_llm):
    with pytest.raises(ValueError, match="the prompt is empty"):
        default_llm.generate({"prompt_token_ids": []})


def test_context_larger_than_the_cache(tiny_models):
    path, _ = tiny_models["llama"]
    with pytest.raises(ValueError, match="the KV cache holds 48 tokens, fewer than the context length 256"):
        LLM(str(path), skip_tokenizer_init=True, num_gpu_blocks_override=4)


def test_refused_flag_names_itself():
    from engine import ArgsError

    with pytest.raises(ArgsError, match="--enable-lora is not supported by dyno yet"):
        LLM(enable_lora=True)
