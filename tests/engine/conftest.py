"""Shared fixtures: tiny random-weight models of real architectures, and the default model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)

ARCHS = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, {}),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, {"num_key_value_heads": 1}),
    # A short window so the tests cross it.
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, {"sliding_window": 24}),
}


def build_tiny_model(kind: str, path: Path, seed: int = 0):
    config_cls, model_cls, extra = ARCHS[kind]
    torch.manual_seed(seed)
    config = config_cls(**{**TINY, **extra}, tie_word_embeddings=False)
    model = model_cls(config).eval()
    # Default init gives near-uniform logits; scale up so greedy picks are not coin flips.
    with torch.no_grad():
        model.lm_head.weight.mul_(8)
    model.save_pretrained(path)
    return model


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, tuple[Path, torch.nn.Module]]:
    root = tmp_path_factory.mktemp("tiny")
    return {kind: (root / kind, build_tiny_model(kind, root / kind)) for kind in ARCHS}


@torch.inference_mode()
def hf_greedy(model, prompt: list[int], max_tokens: int) -> tuple[list[int], list[torch.Tensor]]:
    """transformers' model, greedy with its own KV cache; also each step's log-softmax."""
    out = model(torch.tensor([prompt]), use_cache=True)
    tokens, logprobs = [], []
    for _ in range(max_tokens):
        lp = out.logits[0, -1].float().log_softmax(-1)
        token = int(lp.argmax())
        tokens.append(token)
        logprobs.append(lp)
        out = model(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
    return tokens, logprobs


@pytest.fixture(scope="session")
def default_llm():
    from engine import LLM

    return LLM(dtype="float32", max_model_len=1024, enable_prefix_caching=True,
               gpu_memory_utilization=0.3)


@pytest.fixture(scope="session")
def default_hf_model(default_llm):
    return transformers.AutoModelForCausalLM.from_pretrained(
        default_llm.engine.info.model_path, dtype=torch.float32).eval()
