"""Rotary position embedding (the rotate-half form Llama uses) for q and k in one launch.

cos and sin are per token, [num_tokens, head_dim] with the two halves equal (as the engine makes
them); the kernel reads the first half. One program per token rotates all its q and k heads.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import FLOAT_DTYPES, next_pow2


@triton.jit
def _rotate(x_ptr, out_ptr, token, stride_tok, stride_head, stride_o_tok, stride_o_head, cos, sin,
            NUM_HEADS: tl.constexpr, HALF: tl.constexpr, HEADS_PAD: tl.constexpr,
            HALF_PAD: tl.constexpr):
    h = tl.arange(0, HEADS_PAD)
    i = tl.arange(0, HALF_PAD)
    mask = (h[:, None] < NUM_HEADS) & (i[None, :] < HALF)
    base = x_ptr + token * stride_tok + h[:, None] * stride_head + i[None, :]
    x1 = tl.load(base, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(base + HALF, mask=mask, other=0.0).to(tl.float32)
    out = out_ptr + token * stride_o_tok + h[:, None] * stride_o_head + i[None, :]
    dtype = out_ptr.dtype.element_ty
    tl.store(out, (x1 * cos - x2 * sin).to(dtype), mask=mask)
    tl.store(out + HALF, (x2 * cos + x1 * sin).to(dtype), mask=mask)


@triton.jit
def _rotary_kernel(
    q_ptr, k_ptr, cos_ptr, sin_ptr, q_out_ptr, k_out_ptr,
    stride_q_tok, stride_q_head, stride_k_tok, stride_k_head, stride_qo_tok, stride_qo_head,
    stride_ko_tok, stride_ko_head, stride_cos, stride_sin,
    NUM_Q_HEADS: tl.constexpr, NUM_K_HEADS: tl.constexpr, HALF: tl.constexpr,
    Q_HEADS_PAD: tl.constexpr, K_HEADS_PAD: tl.constexpr, HALF_PAD: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, HALF_PAD)
    cos = tl.load(cos_ptr + token * stride_cos + i, mask=i < HALF, other=0.0).to(tl.float32)[None, :]
    sin = tl.load(sin_ptr + token * stride_sin + i, mask=i < HALF, other=0.0).to(tl.float32)[None, :]
    _rotate(q_ptr, q_out_ptr, token, stride_q_tok, stride_q_head, stride_qo_tok, stride_qo_head,
            cos, sin, NUM_Q_HEADS, HALF, Q_HEADS_PAD, HALF_PAD)
    _rotate(k_ptr, k_out_ptr, token, stride_k_tok, stride_k_head, stride_ko_tok, stride_ko_head,
            cos, sin, NUM_K_HEADS, HALF, K_HEADS_PAD, HALF_PAD)


def rotary_embedding(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                     sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q: [num_tokens, num_heads, head_dim]; k: [num_tokens, num_kv_heads, head_dim];
    cos, sin: [num_tokens, head_dim] (or [num_tokens, 1, head_dim]). Returns rotated (q, k)."""
    num_tokens, num_q_heads, head_dim = q.shape
    assert head_dim % 2 == 0 and k.shape[0] == num_tokens and k.shape[2] == head_dim
    assert q.dtype == k.dtype and q.dtype in FLOAT_DTYPES and q.stride(-1) == 1 and k.stride(-1) == 1
    cos, sin = cos.reshape(num_tokens, -1), sin.reshape(num_tokens, -1)
    assert cos.shape == sin.shape == (num_tokens, head_dim) and cos.stride(-1) == sin.stride(-1) == 1
    q_out, k_out = torch.empty_like(q), torch.empty_like(k)
    if num_tokens:
        half = head_dim // 2
        _rotary_kernel[(num_tokens,)](
            q, k, cos, sin, q_out, k_out, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
            q_out.stride(0), q_out.stride(1), k_out.stride(0), k_out.stride(1),
            cos.stride(0), sin.stride(0),
            NUM_Q_HEADS=num_q_heads, NUM_K_HEADS=k.shape[1], HALF=half,
            Q_HEADS_PAD=next_pow2(num_q_heads), K_HEADS_PAD=next_pow2(k.shape[1]),
            HALF_PAD=next_pow2(half))
    return q_out, k_out


def rotary_embedding_ref(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                         sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    cos = cos.reshape(q.shape[0], 1, -1)
    sin = sin.reshape(q.shape[0], 1, -1)

    def rotate_half(x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
