"""Weights in the order dyno's CPU linear kernels read them: the AMX ones (engine/csrc/
amx_linear.cpp) and, for a few rows, the VNNI ones (engine/csrc/gemv.cpp).

The AMX kernels take 32 output channels (a panel) at a time and 32 input channels (one tile row
of bf16 pairs, and one int4 quantization group) per step: a panel's tiles lie contiguous, so a
thread streams its panels front to back. int8 weights go in fours of inputs for AMX-INT8
(pack_int8); int4 ones have an order of their own for the VNNI kernel (pack_int4_gemv).
"""

from __future__ import annotations

import torch

from engine import cpu_kernels

TILE = 32  # a layer's input and output channels must be multiples of this


def tile_order(weight: torch.Tensor) -> torch.Tensor:
    """A weight [N, K] (bf16, or int4 codes) as [N/32][K/32][2][16][16][2]: panel, input block,
    16-channel half, input pair, channel, member of the pair."""
    n, k = weight.shape
    return weight.reshape(n // TILE, 2, 16, k // TILE, 16, 2).permute(0, 3, 1, 4, 2, 5).contiguous()


def interleave_gate_up(t: torch.Tensor) -> torch.Tensor:
    """A fused gate/up weight [2 * I, K] (or bias [2 * I]) with its rows in sixteens, gate then
    up: every 32-channel panel then holds both halves of 16 outputs of SiLU-and-mul."""
    half = t.shape[0] // 2
    return t.reshape(2, half // 16, 16, *t.shape[1:]).transpose(0, 1).reshape(t.shape)


def deinterleave_gate_up(out: torch.Tensor) -> torch.Tensor:
    """Outputs [rows, 2 * I] of an interleaved gate/up weight back in gate, then up order."""
    rows = out.shape[0]
    return out.reshape(rows, -1, 2, 16).transpose(1, 2).reshape(rows, -1)


def pack_int8(q: torch.Tensor) -> torch.Tensor:
    """An int8 weight [N, K] in the order amx_int8_linear reads it, inputs in fours for AMX-INT8:
    [N/32][K/64][2][16][16][4] (panel, 64 inputs, 16-channel half, four inputs, channel, member),
    K padded to a multiple of 64 with zeros."""
    n, k = q.shape
    k_pad = -(-k // 64) * 64
    padded = torch.nn.functional.pad(q, (0, k_pad - k))
    return padded.reshape(n // TILE, 2, 16, k_pad // 64, 16, 4).permute(0, 3, 1, 4, 2, 5).contiguous()


def pack_int4(codes: torch.Tensor, scales_and_zeros: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes 0..15 [N, K] and scales_and_zeros [K/32, N, 2] as (uint8 [N/32][K/32][2][16][16],
    bf16 [N/32][K/32][2][2][16]): each tile row of 32 codes in 16 bytes, byte j holding
    positions j (low nibble) and j + 16; then each half's 16 scales and 16 zero points."""
    n, k = codes.shape
    rows = tile_order(codes.to(torch.uint8)).reshape(n // TILE, k // TILE, 2, 16, TILE)
    packed = rows[..., :16] | (rows[..., 16:] << 4)
    params = scales_and_zeros.reshape(k // TILE, n // TILE, 2, 16, 2).permute(1, 0, 2, 4, 3)
    return packed.contiguous(), params.to(torch.bfloat16).contiguous()


def pack_int4_gemv(codes: torch.Tensor, scales_and_zeros: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes 0..15 [N, K] and scales_and_zeros [K/32, N, 2] in int4_gemv's order: (uint8
    [N/16][K/32][4][64], bf16 [N/16][K/32][2][16]). Per 16 channels and group, row i's byte
    4c + j holds input 4i + j of channel c (low nibble) and input 16 + 4i + j (high); then the
    16 scales and the 16 zero points."""
    n, k = codes.shape
    # [block, channel, group, half, row, j] -> [block, group, row, channel, j, half]
    c = codes.to(torch.uint8).reshape(n // 16, 16, k // TILE, 2, 4, 4).permute(0, 2, 4, 1, 5, 3)
    packed = c[..., 0] | (c[..., 1] << 4)
    params = scales_and_zeros.reshape(k // TILE, n // 16, 16, 2).permute(1, 0, 3, 2)
    return packed.contiguous(), params.to(torch.bfloat16).contiguous()


def pack_int8_vnni(q: torch.Tensor) -> torch.Tensor:
    """int8 [N, K] in vnni_int8_linear's order: uint8 [N/16][K/32][8][64] of q + 128. Per 16
    channels and group of 32 inputs, row 2i + h's byte 4c + j holds input 16h + 4i + j of
    channel c."""
    n, k = q.shape
    u = (q.to(torch.int16) + 128).to(torch.uint8)
    # [block, channel, group, half, i, j] -> [block, group, i, half, channel, j]
    return u.reshape(n // 16, 16, k // TILE, 2, 4, 4).permute(0, 2, 4, 3, 1, 5).contiguous()


def kernels_for(weight: torch.Tensor):
    """dyno's CPU kernels when they can run a layer of this weight on AMX here (and its few-row
    batches with VNNI, which every AMX CPU has), else None."""
    n, k = weight.shape
    if weight.device.type != "cpu" or n % TILE or k % TILE:
        return None
    kernels = cpu_kernels.load()
    usable = kernels is not None and kernels.amx_available() and kernels.gemv_available()
    return kernels if usable else None


def vnni_kernels_for(weight: torch.Tensor):
    """dyno's CPU kernels when a CPU without AMX runs an int4 or int8 layer of this weight on
    AVX-512 VNNI (engine/csrc/vnni_linear.cpp, and gemv.cpp for int4's few rows), else None."""
    n, k = weight.shape
    if weight.device.type != "cpu" or n % TILE or k % TILE:
        return None
    kernels = cpu_kernels.load()
    usable = (kernels is not None and not kernels.amx_available() and kernels.vnni_available()
              and kernels.gemv_available())
    return kernels if usable else None
