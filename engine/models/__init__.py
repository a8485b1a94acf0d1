"""Model classes chosen by the `architectures` field of a model's config."""

from __future__ import annotations

from engine.models.llama import LlamaForCausalLM

_REGISTRY = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": LlamaForCausalLM,
}


def supported_architectures() -> list[str]:
    return sorted(_REGISTRY)


def get_model_class(hf_config):
    archs = list(getattr(hf_config, "architectures", None) or [])
    for arch in archs:
        if arch in _REGISTRY:
            return _REGISTRY[arch]
    raise ValueError(f"architecture {archs or '(none given)'} is not supported; dyno runs "
                     f"{', '.join(supported_architectures())}")


__all__ = ["get_model_class", "supported_architectures"]
