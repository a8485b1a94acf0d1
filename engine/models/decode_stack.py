"""A decode step's decoder layers in one C++ call (engine/csrc/decode_stack.cpp).

On the CPU every piece of a decoder layer runs in one of dyno's C++ kernels, and at a few dozen
sequences the Python between them (module calls, views, the choice of kernel) costs about as
much as the elementwise kernels themselves: ~50 us a layer, and the second thread waits through
all of it. The stack calls the same kernels, on the same views and in the same order, from C++,
so a step's outputs are the same bits (default model, int4 + fp8 cache, offline decode steps:
32 sequences 21.7-21.9 -> 18.0-18.1 ms, one 6.5-6.7 -> 4.9-5.1 ms).

From 32 sequences on a CPU without AMX each thread takes its own share of the sequences
through every layer (decode_stack.cpp says what that changed).

It takes decode-only steps small enough for every linear's small-batch kernel, when each
layer's linears have one (AMX: bf16 in tile order, int8, int4; without AMX, int8 and int4 on VNNI) and
the attention reads the cache in place; anything else stays on the Python layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KINDS = {"bf16": 0, "int8": 1, "int4": 2, "int4_vnni": 3, "int8_vnni": 4}  # decode_stack.h's Linear::Kind
_CACHE_DTYPES = (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2)  # paged_decode's, with bf16 queries


@dataclass(frozen=True)
class KernelSpec:
    """The C++ kernel a linear's small batches take, and the tensors it reads."""

    kind: str  # a key of KINDS
    weight: torch.Tensor
    params: torch.Tensor | None
    out_features: int
    bias: torch.Tensor | None
    below_rows: int  # batches of fewer rows than this take the kernel
    gemv_codes: torch.Tensor | None = None  # int4: its few-row kernel's weights ...
    gemv_params: torch.Tensor | None = None
    gemv_up_to_rows: int = 0  # ... for batches of up to this many rows
    silu_fused: bool = False  # int4 gate/up: its AMX batches give SiLU-and-mul (quant_linear)

    def build(self, kernels):
        empty = torch.empty(0)
        return kernels.StackLinear(KINDS[self.kind], self.weight, _or(self.params, empty),
                                   _or(self.gemv_codes, empty), _or(self.gemv_params, empty),
                                   self.out_features, self.gemv_up_to_rows, self.bias, self.silu_fused)


class DecodeStack:
    def __init__(self, stack, below_rows: int) -> None:
        self._stack = stack
        self.below_rows = below_rows

    @classmethod
    def build(cls, model) -> "DecodeStack | None":
        """The model's layers as one C++ stack, or None when a piece has no kernel here."""
        layers = list(model.layers)
        kernels = _kernels_of(layers)
        if kernels is None:
            return None
        specs = [[_spec(m) for m in (L.self_attn.qkv_proj, L.self_attn.o_proj, L.mlp.gate_up_proj,
                                     L.mlp.down_proj)] for L in layers]
        if any(s is None for row in specs for s in row):
            return None
        built = [_layer(kernels, L, row) for L, row in zip(layers, specs)]
        return cls(kernels.DecodeStack(built), min(s.below_rows for row in specs for s in row))

    def takes(self, x: torch.Tensor, kv_caches, meta) -> bool:
        """A decode-only step on the CPU in bf16, with a cache the kernels read in place."""
        return (not meta.prefills and meta.num_decodes == x.shape[0] < self.below_rows
                and x.dtype == torch.bfloat16 and x.device.type == "cpu"
                and kv_caches[0].kv.dtype in _CACHE_DTYPES and kv_caches[0].kv.device.type == "cpu")

    def __call__(self, x, cos_sin, kv_caches, meta) -> tuple[torch.Tensor, torch.Tensor]:
        """(the last layer's output, the residual stream)."""
        cos, sin = cos_sin
        return self._stack.forward(x, cos, sin, [c.kv for c in kv_caches], [c.k_scale for c in kv_caches],
                                   [c.v_scale for c in kv_caches], meta.slot_mapping,
                                   meta.decode_block_table, meta.decode_context_lens,
                                   kv_caches[0].block_size)


def _or(t: torch.Tensor | None, default: torch.Tensor) -> torch.Tensor:
    return default if t is None else t


def _kernels_of(layers):
    """The C++ kernels when every layer's norms and attention run on them, else None."""
    kernels = getattr(layers[0].self_attn.attn, "kernels", None) if layers else None
    if (kernels is None or not hasattr(kernels, "DecodeStack")
            or not (kernels.amx_available() or kernels.vnni_available())):
        return None
    pieces = [piece for L in layers for piece in (L.self_attn.attn, L.self_attn.ops)]
    return kernels if all(getattr(p, "kernels", None) is kernels for p in pieces) else None


def _spec(linear) -> KernelSpec | None:
    spec = getattr(linear, "kernel_spec", None)
    return spec() if spec is not None else None


def _layer(kernels, L, specs: list[KernelSpec]):
    attn = L.self_attn.attn
    return kernels.StackLayer(
        L.input_layernorm.weight, L.post_attention_layernorm.weight, L.input_layernorm.eps,
        *(s.build(kernels) for s in specs), attn.num_heads, attn.num_kv_heads, attn.head_dim,
        attn.window, attn.scale)
