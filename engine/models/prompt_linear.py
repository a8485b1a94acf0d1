"""A linear layer's prompt-sized batches on AMX: its weight in bf16 tile order through
engine/csrc/amx_gemm.cpp, from PROMPT_FROM_ROWS rows on.

The quantized layers' decode kernels (amx_linear.cpp) read every row again for each weight
panel: fine at a few dozen rows, and 2x behind from a thousand. torch's bf16 matmul (oneDNN)
was what prompts took before; one layer of the default model (its four linears, ms):

    rows            32     128     512    1024    2048
    AMX int4      0.20    0.45    1.73    3.79   11.09
    amx_gemm      0.11    0.31    1.31    2.75    5.44
    torch bf16    0.38    0.73    1.86    4.07    5.47

Decode steps keep the int4 kernels below PROMPT_FROM_ROWS all the same: there the weights come
from memory (a bf16 copy is four times their bytes), which the hot-cache figures above hide.
The gate/up projection keeps its rows interleaved by sixteens (amx_layout.interleave_gate_up),
so silu_and_mul(x) gives SiLU(gate) * up straight from the tiles: the 2 * intermediate wide
product and the separate SiLU pass over it (~10% of a 2048-token prompt step) go.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.models import amx_layout

PROMPT_FROM_ROWS = 128


class PromptLinear(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, kernels, gate_up: bool = False) -> None:
        super().__init__()
        self._kernels = kernels
        self.out_features = weight.shape[0]
        self.gate_up = gate_up
        order = amx_layout.interleave_gate_up if gate_up else (lambda t: t)
        self.register_buffer("tiles", amx_layout.tile_order(order(weight.detach().to(torch.bfloat16))))
        self.bias = None if bias is None else order(bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._kernels.amx_gemm(x, self.tiles, self.out_features, self.bias, False)
        return amx_layout.deinterleave_gate_up(out) if self.gate_up else out

    def silu_and_mul(self, x: torch.Tensor) -> torch.Tensor:
        """bf16(SiLU(gate)) * up of a gate/up layer, as the separate ops would round it."""
        assert self.gate_up, "silu_and_mul needs the gate/up projection's interleaved weight"
        return self._kernels.amx_gemm(x, self.tiles, self.out_features, self.bias, True)
