"""The Llama family (Llama, Mistral, Qwen2, SmolLM2): one model over a flat batch of tokens.

Q, K and V share one projection and gate/up another; the checkpoint's separate weights are
concatenated at load time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from engine.attention import AttentionMetadata, KVCacheLayer, make_attention
from engine.models.decode_stack import DecodeStack
from engine.models.ops import make_ops
from engine.models.rope import RotaryEmbedding


@dataclass(frozen=True)
class LlamaArgs:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    tie_word_embeddings: bool
    attention_bias: bool
    mlp_bias: bool
    sliding_window: int | None

    @classmethod
    def from_hf(cls, cfg) -> "LlamaArgs":
        num_heads = cfg.num_attention_heads
        is_qwen2 = cfg.model_type == "qwen2"
        window = getattr(cfg, "sliding_window", None)
        if is_qwen2 and not getattr(cfg, "use_sliding_window", False):
            window = None
        return cls(
            vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size, num_layers=cfg.num_hidden_layers,
            num_heads=num_heads, num_kv_heads=getattr(cfg, "num_key_value_heads", None) or num_heads,
            head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // num_heads,
            rms_norm_eps=cfg.rms_norm_eps,
            tie_word_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
            attention_bias=is_qwen2 or bool(getattr(cfg, "attention_bias", False)),
            mlp_bias=bool(getattr(cfg, "mlp_bias", False)),
            sliding_window=window)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, ops) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.ops = ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.rms_norm(x, self.weight, self.eps)

    def add(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(norm(x + residual), x + residual): one fused pass on the GPU path."""
        return self.ops.add_rms_norm(x, residual, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, a: LlamaArgs, ops) -> None:
        super().__init__()
        self.q_size = a.num_heads * a.head_dim
        self.kv_size = a.num_kv_heads * a.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = a.num_heads, a.num_kv_heads, a.head_dim
        self.qkv_proj = nn.Linear(a.hidden_size, self.q_size + 2 * self.kv_size, bias=a.attention_bias)
        self.o_proj = nn.Linear(self.q_size, a.hidden_size, bias=False)
        self.attn = make_attention(a.num_heads, a.num_kv_heads, a.head_dim, a.head_dim ** -0.5,
                                   a.sliding_window)
        self.ops = ops

    def forward(self, x, cos_sin, cache: KVCacheLayer, meta: AttentionMetadata) -> torch.Tensor:
        n = x.shape[0]
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(n, self.num_heads, self.head_dim)  # [num_tokens, num_heads, head_dim]
        k = k.view(n, self.num_kv_heads, self.head_dim)
        v = v.view(n, self.num_kv_heads, self.head_dim)
        q, k = self.ops.rotary(q, k, *cos_sin)
        return self.o_proj(self.attn.forward(q, k, v, cache, meta))


class MLP(nn.Module):
    def __init__(self, a: LlamaArgs, ops) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(a.hidden_size, 2 * a.intermediate_size, bias=a.mlp_bias)
        self.down_proj = nn.Linear(a.intermediate_size, a.hidden_size, bias=a.mlp_bias)
        self.ops = ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = getattr(self.gate_up_proj, "silu_and_mul", None)  # a quantized or AMX kernel's
        h = fused(x) if fused is not None else None
        if h is None:
            h = self.ops.silu_and_mul(self.gate_up_proj(x))
        return self.down_proj(h)


class DecoderLayer(nn.Module):
    def __init__(self, a: LlamaArgs, ops) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(a.hidden_size, a.rms_norm_eps, ops)
        self.self_attn = Attention(a, ops)
        self.post_attention_layernorm = RMSNorm(a.hidden_size, a.rms_norm_eps, ops)
        self.mlp = MLP(a, ops)

    def forward(self, x, residual, cos_sin, cache, meta) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual stream travels beside the layer output, so each norm fuses its add."""
        if residual is None:
            h, residual = self.input_layernorm(x), x
        else:
            h, residual = self.input_layernorm.add(x, residual)
        h = self.self_attn(h, cos_sin, cache, meta)
        h, residual = self.post_attention_layernorm.add(h, residual)
        return self.mlp(h), residual


class LlamaForCausalLM(nn.Module):
    def __init__(self, hf_config) -> None:
        super().__init__()
        a = self.args = LlamaArgs.from_hf(hf_config)
        ops = make_ops()
        self.embed_tokens = nn.Embedding(a.vocab_size, a.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(a, ops) for _ in range(a.num_layers))
        self.norm = RMSNorm(a.hidden_size, a.rms_norm_eps, ops)
        self.lm_head = nn.Linear(a.hidden_size, a.vocab_size, bias=False)
        if a.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rotary = RotaryEmbedding(hf_config, a.head_dim)
        self.decode_stack: DecodeStack | None = None  # set by build_decode_stack, once the weights are final

    def build_decode_stack(self) -> None:
        """Decode steps through engine/csrc's decode stack where every layer has its kernels
        (call after the linears are quantized or packed)."""
        self.decode_stack = DecodeStack.build(self)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                kv_caches: list[KVCacheLayer], meta: AttentionMetadata) -> torch.Tensor:
        """input_ids, positions: [num_tokens] -> hidden states [num_tokens, hidden_size]."""
        x = self.embed_tokens(input_ids)
        cos_sin = self.rotary.cos_sin(positions, x.dtype)
        if self.decode_stack is not None and self.decode_stack.takes(x, kv_caches, meta):
            x, residual = self.decode_stack(x, cos_sin, kv_caches, meta)
            return self.norm.add(x, residual)[0]
        residual = None
        for layer, cache in zip(self.layers, kv_caches):
            x, residual = layer(x, residual, cos_sin, cache, meta)
        return self.norm.add(x, residual)[0]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        params = dict(self.named_parameters())
        a = self.args
        fused = {"q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
                 "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1)}
        sizes = {"qkv_proj": [a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim,
                              a.num_kv_heads * a.head_dim],
                 "gate_up_proj": [a.intermediate_size, a.intermediate_size]}
        loaded = set()
        for hf_name, tensor in weights:
            name = hf_name.removeprefix("model.")
            if "rotary_emb" in name or (name == "lm_head.weight" and a.tie_word_embeddings):
                continue
            parts = name.split(".")
            if len(parts) >= 2 and parts[-2] in fused:
                target, shard = fused[parts[-2]]
                name = ".".join(parts[:-2] + [target, parts[-1]])
                offset = sum(sizes[target][:shard])
                params[name].data[offset:offset + tensor.shape[0]].copy_(tensor)
                loaded.add(f"{name}#{shard}")
                continue
            if name not in params:
                raise ValueError(f"checkpoint has a weight dyno's {type(self).__name__} does not: {hf_name}")
            params[name].data.copy_(tensor)
            loaded.add(name)
        self._check_all_loaded(loaded, params, sizes)

    def _check_all_loaded(self, loaded: set[str], params: dict, sizes: dict) -> None:
        expected = set()
        for name in params:
            target = name.split(".")[-2] if "." in name else ""
            if target in sizes:
                expected |= {f"{name}#{i}" for i in range(len(sizes[target]))}
            else:
                expected.add(name)
        if self.args.tie_word_embeddings:
            expected.discard("lm_head.weight")
        missing = sorted(expected - loaded)
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} weights, e.g. {missing[0]}")
