"""Rotary position embedding, with inverse frequencies from transformers' own rope functions."""

from __future__ import annotations

import torch
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS


def _rope_params(hf_config) -> dict:
    params = getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None)
    params = dict(params or {})
    params.setdefault("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    params.setdefault("rope_type", params.get("type", "default"))
    return params


class RotaryEmbedding:
    def __init__(self, hf_config, head_dim: int) -> None:
        params = _rope_params(hf_config)
        kind = params["rope_type"]
        if kind == "default":
            exponent = torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim
            inv_freq, self.scaling = 1.0 / (params["rope_theta"] ** exponent), 1.0
        elif kind in ROPE_INIT_FUNCTIONS:
            inv_freq, self.scaling = ROPE_INIT_FUNCTIONS[kind](hf_config, "cpu")
        else:
            raise ValueError(f"rope type {kind!r} is not supported by dyno")
        self.inv_freq = inv_freq.float()  # [head_dim // 2]

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.float()[:, None] * self.inv_freq.to(positions.device)[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)  # [num_tokens, head_dim]
        cos = (emb.cos() * self.scaling).to(dtype)[:, None, :]
        sin = (emb.sin() * self.scaling).to(dtype)[:, None, :]
        return cos, sin
