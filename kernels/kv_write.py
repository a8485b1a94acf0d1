"""Write new keys and values into the paged cache by slot mapping, quantizing for an fp8 cache.

A negative slot is padding: the kernel skips it. fp8 values are rounded to nearest-even in fp32
before the cast (exact on the GPU, and it sidesteps the interpreter's fp8 cast, which truncates),
and saturate at the format's largest finite value.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import FLOAT_DTYPES, FP8_DTYPES, check_kv_cache, next_pow2

_FP8_FORMATS = {  # dtype -> (mantissa bits, smallest normal exponent, largest finite value)
    torch.float8_e4m3fn: (3, -6, 448.0),
    torch.float8_e5m2: (2, -14, 57344.0),
}


@triton.jit
def _round_to_fp8_grid(x, MANTISSA: tl.constexpr, MIN_EXP: tl.constexpr, MAX_VALUE: tl.constexpr):
    """x (fp32) rounded to nearest-even on the fp8 grid, as fp32: exactly representable in fp8."""
    x = tl.minimum(tl.maximum(x, -MAX_VALUE), MAX_VALUE)
    biased = (x.to(tl.int32, bitcast=True) >> 23) & 0xFF
    biased = tl.maximum(biased, MIN_EXP + 127)  # subnormals share the smallest normal's step
    # step * 2**23: adding and subtracting it rounds to a multiple of the fp8 step (fp32 is RNE).
    magic = ((biased - MANTISSA + 23) << 23).to(tl.float32, bitcast=True)
    mag = tl.abs(x)
    rounded = (mag + magic) - magic
    return tl.where(x < 0, -rounded, rounded)


@triton.jit
def _kv_write_kernel(
    k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_ptr, k_scale, v_scale,
    stride_k_tok, stride_k_head, stride_v_tok, stride_v_head, stride_c_slot, stride_c_head,
    NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, HEADS_PAD: tl.constexpr,
    DIM_PAD: tl.constexpr, IS_FP8: tl.constexpr, MANTISSA: tl.constexpr, MIN_EXP: tl.constexpr,
    MAX_VALUE: tl.constexpr,
):
    token = tl.program_id(0)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    h = tl.arange(0, HEADS_PAD)
    d = tl.arange(0, DIM_PAD)
    # A block-shaped test of the slot (the interpreter rejects a scalar folded into a mask).
    mask = (h[:, None] < NUM_KV_HEADS) & (d[None, :] < HEAD_DIM) & (h[:, None] * 0 + slot >= 0)
    k = tl.load(k_ptr + token * stride_k_tok + h[:, None] * stride_k_head + d[None, :], mask=mask)
    v = tl.load(v_ptr + token * stride_v_tok + h[:, None] * stride_v_head + d[None, :], mask=mask)
    if IS_FP8:
        # As torch does it: divide in the model's dtype, then cast to fp8.
        k = _round_to_fp8_grid((k.to(tl.float32) / k_scale).to(k.dtype).to(tl.float32),
                               MANTISSA, MIN_EXP, MAX_VALUE)
        v = _round_to_fp8_grid((v.to(tl.float32) / v_scale).to(v.dtype).to(tl.float32),
                               MANTISSA, MIN_EXP, MAX_VALUE)
    dst = slot * stride_c_slot + h[:, None] * stride_c_head + d[None, :]
    tl.store(k_cache_ptr + dst, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(v_cache_ptr + dst, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def write_kv(k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor,
             k_scale: float = 1.0, v_scale: float = 1.0) -> None:
    """k, v: [num_tokens, num_kv_heads, head_dim]; kv_cache: [2, num_slots, num_kv_heads, head_dim];
    slot_mapping: [num_tokens] int, -1 = skip. Writes in place."""
    num_slots, num_kv_heads, head_dim = check_kv_cache(kv_cache, 1)
    num_tokens = k.shape[0]
    assert k.shape == v.shape == (num_tokens, num_kv_heads, head_dim), "k, v must match the cache"
    assert k.dtype == v.dtype and k.dtype in FLOAT_DTYPES, f"unsupported k/v dtype {k.dtype}"
    assert kv_cache.dtype in FP8_DTYPES or kv_cache.dtype == k.dtype, "cache dtype must be k's or fp8"
    assert k.stride(-1) == 1 and v.stride(-1) == 1, "k, v head_dim must be contiguous"
    assert slot_mapping.shape == (num_tokens,) and not slot_mapping.dtype.is_floating_point
    if num_tokens == 0:
        return
    mantissa, min_exp, max_value = _FP8_FORMATS.get(kv_cache.dtype, (0, 0, 0.0))
    k_cache, v_cache = kv_cache[0], kv_cache[1]
    _kv_write_kernel[(num_tokens,)](
        k, v, k_cache, v_cache, slot_mapping, float(k_scale), float(v_scale),
        k.stride(0), k.stride(1), v.stride(0), v.stride(1), k_cache.stride(0), k_cache.stride(1),
        NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim, HEADS_PAD=next_pow2(num_kv_heads),
        DIM_PAD=next_pow2(head_dim), IS_FP8=kv_cache.dtype in FP8_DTYPES, MANTISSA=mantissa,
        MIN_EXP=min_exp, MAX_VALUE=max_value)


def write_kv_ref(k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor,
                 k_scale: float = 1.0, v_scale: float = 1.0) -> None:
    """Plain torch, one token at a time."""
    fp8 = kv_cache.dtype in FP8_DTYPES
    for token, slot in enumerate(slot_mapping.tolist()):
        if slot < 0:
            continue
        for i, (x, scale) in enumerate(((k[token], k_scale), (v[token], v_scale))):
            if fp8:
                limit = _FP8_FORMATS[kv_cache.dtype][2]
                x = (x / scale).float().clamp(-limit, limit).to(x.dtype)
            kv_cache[i, slot] = x.to(kv_cache.dtype)
