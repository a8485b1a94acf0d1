"""bf16 linear layers with their weights reordered once at load time.

On a CPU with AMX, the weight goes in tile order: batches below prompt_linear.PROMPT_FROM_ROWS
rows run on dyno's AMX kernel for a few dozen rows (all linears of the default model at 32 rows
12.5 vs 18.3 ms with oneDNN's packed weight, at one row 12.2 vs 15.5), larger ones (prompts) on
its prompt kernel (a 512-token prompt step's linears 59 vs 65 ms, the same bits). Elsewhere the
weight is packed for oneDNN: torch's plain bf16 matmul reorders the weight on every call, and
packing it at load time makes small-batch decode matmuls 1.3-1.6x faster. Results stay bf16
matmuls with fp32 sums, though the order of the sums differs between the paths in the last bits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.models import amx_layout
from engine.models.decode_stack import KernelSpec
from engine.models.prompt_linear import PROMPT_FROM_ROWS


def can_pack(dtype: torch.dtype, device: torch.device) -> bool:
    return (dtype == torch.bfloat16 and device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


class PackedLinear(nn.Module):
    def __init__(self, linear: nn.Linear, keep_weight: bool = True) -> None:
        super().__init__()
        # The original parameters stay (tied weights, lm_head = embed_tokens, still need them)
        # unless the caller made the linear only to pack it (then the AMX path, which needs
        # them for big batches, is not taken either).
        self.weight = linear.weight if keep_weight else None
        self.bias = linear.bias
        self.out_features = linear.out_features
        bf16 = keep_weight and linear.weight.dtype == torch.bfloat16
        self._amx = amx_layout.kernels_for(linear.weight) if bf16 else None
        if self._amx is not None:
            self.register_buffer("tiles", amx_layout.tile_order(linear.weight.detach()))
            self.packed = None
        else:
            self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 1)

    def kernel_spec(self) -> KernelSpec | None:
        if self._amx is None:
            return None
        return KernelSpec("bf16", self.tiles, None, self.out_features, self.bias, PROMPT_FROM_ROWS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._amx is None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        if x.dim() != 2:
            return F.linear(x, self.weight, self.bias)
        if x.shape[0] < PROMPT_FROM_ROWS:
            return self._amx.amx_bf16_linear(x, self.tiles, self.out_features, self.bias)
        return self._amx.amx_gemm(x, self.tiles, self.out_features, self.bias, False)


def pack_linears(model: nn.Module) -> None:
    """Swap every nn.Linear of the model for a PackedLinear, in place."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, PackedLinear(child))
