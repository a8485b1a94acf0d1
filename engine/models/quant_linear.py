"""Weight-only quantized linear layers (--quantization int8 | int4), for the CPU.

A decode step at a few sequences reads every weight once and does little arithmetic on it, so
its time is the weights' bytes over memory bandwidth: int8 halves them and int4 quarters them
(measured on these cores, all linears of the default model at one sequence: bf16 18.4 ms,
int8 13.2 ms, int4 8.7 ms). From a few rows on, the dequantizing kernels cost more than they
save (at 32 rows bf16 23 ms, int4 58 ms), so each layer also keeps its dequantized weight in
bf16 and multiplies batches of DENSE_FROM_ROWS rows or more (prefills, busy decode steps) with
it: the same weights, bf16's speed, at the cost of holding both copies.

int8: one symmetric scale per output channel. int4: asymmetric, one scale and zero point per
group of 32 input channels, the layout torch's int4 CPU kernel takes. Activations stay in the
model dtype; both kernels compute in bf16, so a quantized model runs in bf16.
"""

from __future__ import annotations

import torch
from torch import nn

from engine import cpu_kernels
from engine.models.packed_linear import PackedLinear, can_pack

METHODS = ("int8", "int4")
INT4_GROUP = 32
# int4 decode steps in the engine: ahead at 6 rows (22.0 vs 22.7 ms), behind at 8 (25.0 vs 23.7)
DENSE_FROM_ROWS = 8
_INNER_K_TILES = 2  # the int4 packing's K tiling; 2 is what the CPU kernel is tuned for
# int8 on AMX, all linears of the default model (ms): 1 row 8.6 vs bf16 13.0, 32 rows 7.7 vs
# 16.2, 256 rows 33 vs 36, 1024 rows 124 vs 100: below this many rows the AMX kernel takes them.
AMX_UP_TO_ROWS = 256
_AMX_TILE = 32


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight [N, K], per-channel scale [N]) with weight ≈ q * scale."""
    w = weight.float()
    scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def quantize_int4(weight: torch.Tensor, group: int = INT4_GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes 0..15 as int32 [N, K], scales_and_zeros [K // group, N, 2]) with
    weight ≈ (code - 8) * scale + zero, per group of `group` input channels."""
    n, k = weight.shape
    w = weight.float().reshape(n, k // group, group)
    low, high = w.amin(dim=-1), w.amax(dim=-1)
    scale = ((high - low) / 15).clamp(min=1e-8)
    zero = low + 8 * scale
    codes = torch.round((w - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32)
    scales_and_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()
    return codes.reshape(n, k), scales_and_zeros


def dequantize_int4(codes: torch.Tensor, scales_and_zeros: torch.Tensor,
                    group: int = INT4_GROUP) -> torch.Tensor:
    """The float weight the int4 kernel computes with (for tests and agreement checks)."""
    n, k = codes.shape
    scale, zero = scales_and_zeros.transpose(0, 1).unbind(-1)  # [N, K // group] each
    w = (codes.reshape(n, k // group, group).float() - 8) * scale[..., None] + zero[..., None]
    return w.reshape(n, k)


class _WeightOnlyLinear(nn.Module):
    """Shared by both methods: the kernels take 2-D activations; the bias is added after."""

    def __init__(self, linear: nn.Linear, dequantized: torch.Tensor) -> None:
        super().__init__()
        self.bias = linear.bias
        dense = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
        dense.weight = nn.Parameter(dequantized.to(torch.bfloat16), requires_grad=False)
        dense.bias = linear.bias
        packable = can_pack(torch.bfloat16, dense.weight.device)
        self.dense = PackedLinear(dense, keep_weight=False) if packable else dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:  # the engine passes [tokens, features]; others may not
            return self.forward(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)
        if x.shape[0] >= DENSE_FROM_ROWS:
            return self.dense(x)
        out = self._matmul(x)
        return out if self.bias is None else out + self.bias

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def pack_int8_for_amx(q: torch.Tensor) -> torch.Tensor:
    """int8 [N, K] in the AMX kernel's order: per panel of 32 output channels, per block of 32
    input channels, two 16-channel halves, each as 16 input pairs x 16 channels x the pair."""
    n, k = q.shape
    return q.reshape(n // 32, 2, 16, k // 32, 16, 2).permute(0, 3, 1, 4, 2, 5).contiguous()


def _amx_kernels(weight: torch.Tensor):
    """dyno's CPU kernels when they can run this layer on AMX, else None."""
    n, k = weight.shape
    if weight.device.type != "cpu" or n % _AMX_TILE or k % _AMX_TILE:
        return None
    kernels = cpu_kernels.load()
    return kernels if kernels is not None and kernels.amx_available() else None


class Int8Linear(_WeightOnlyLinear):
    def __init__(self, linear: nn.Linear) -> None:
        q, scale = quantize_int8(linear.weight.detach())
        scale = scale.to(torch.bfloat16)
        super().__init__(linear, q.float() * scale.float()[:, None])
        self._amx = _amx_kernels(q)
        if self._amx is not None:
            self.register_buffer("qweight", pack_int8_for_amx(q))
            self.register_buffer("scale", scale.float())
        else:
            self.register_buffer("qweight", q)
            self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._amx is None or x.dim() != 2 or x.dtype != torch.bfloat16 or x.shape[0] >= AMX_UP_TO_ROWS:
            return super().forward(x)
        return self._amx.amx_int8_linear(x, self.qweight, self.scale, self.bias)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x, self.qweight, self.scale)


class Int4Linear(_WeightOnlyLinear):
    def __init__(self, linear: nn.Linear) -> None:
        codes, scales_and_zeros = quantize_int4(linear.weight.detach())
        scales_and_zeros = scales_and_zeros.to(torch.bfloat16)
        super().__init__(linear, dequantize_int4(codes, scales_and_zeros.float()))
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            codes, _INNER_K_TILES))
        self.register_buffer("scales_and_zeros", scales_and_zeros)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.packed, INT4_GROUP,
                                                         self.scales_and_zeros)


def can_quantize(linear: nn.Linear, method: str) -> bool:
    """int4 needs whole groups of input channels; a layer that has none stays in bf16."""
    return method == "int8" or linear.in_features % INT4_GROUP == 0


def quantize_linears(model: nn.Module, method: str) -> int:
    """Swap the model's nn.Linear layers for quantized ones in place; returns how many.

    Under int4 the output projection (lm_head) takes int8: it alone decides the next token,
    and int4 there costs most of the agreement with fp32 (as llama.cpp keeps its output
    tensor at higher precision)."""
    kind = {"int8": Int8Linear, "int4": Int4Linear}[method]
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear or not can_quantize(child, method):
                continue
            setattr(parent, name, Int8Linear(child) if name == "lm_head" else kind(child))
            swapped += 1
    return swapped
