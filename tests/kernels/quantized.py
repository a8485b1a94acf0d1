"""Builders for the int4 kernel tests: a random weight quantized and packed as the kernels read it."""

from __future__ import annotations

import torch

from engine.models.amx_layout import pack_int4_gemv
from engine.models.quant_linear import dequantize_int4, quantize_int4


def int4_case(n: int, k: int, seed: int = 0):
    """((codes, params) in pack_int4_gemv's order, the float weight they stand for)."""
    torch.manual_seed(seed)
    codes, scales_and_zeros = quantize_int4(torch.randn(n, k))
    scales_and_zeros = scales_and_zeros.to(torch.bfloat16)
    return pack_int4_gemv(codes, scales_and_zeros), dequantize_int4(codes, scales_and_zeros.float())
