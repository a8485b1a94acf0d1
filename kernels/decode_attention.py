"""Paged attention for one-token decodes: each sequence reads its own block table.

One program per (sequence, KV head) attends all the query heads that share that KV head (GQA),
gathering TILE_N cached tokens at a time by block table, with an online softmax in fp32.
Tokens past a sequence's length, or before its sliding window, are never loaded.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import FLOAT_DTYPES, FP8_DTYPES, check_kv_cache, dot_mode, \
    gather_slots, load_kv_tile, mm, next_pow2, \
    window_or_none

_LOG2E = 1.4426950408889634


@triton.jit
def _decode_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, out_ptr, table_ptr, seq_lens_ptr,
    qk_scale, k_scale, v_scale, window,
    stride_q_tok, stride_q_head, stride_o_tok, stride_o_head, stride_c_slot, stride_c_head,
    stride_table,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, DIM_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, TILE_N: tl.constexpr, IS_FP8: tl.constexpr, PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    seq_len = tl.load(seq_lens_ptr + seq)
    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, DIM_PAD)
    n = tl.arange(0, TILE_N)
    q_mask = (g[:, None] < GROUP) & (d[None, :] < HEAD_DIM)
    heads = kv_head * GROUP + g
    q = tl.load(q_ptr + seq * stride_q_tok + heads[:, None] * stride_q_head + d[None, :],
                mask=q_mask, other=0.0)  # [GROUP_PAD, DIM_PAD]
    dtype = q_ptr.dtype.element_ty

    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, DIM_PAD], tl.float32)
    lo = tl.maximum(seq_len - window, 0)
    for start in range(lo, seq_len, TILE_N):
        pos = start + n
        valid = pos < seq_len
        k, v = load_kv_tile(k_cache_ptr, v_cache_ptr, table_ptr, pos, valid, d, seq, kv_head, k_scale,
                            v_scale, stride_table, stride_c_slot, stride_c_head, dtype, BLOCK_SIZE,
                            HEAD_DIM, IS_FP8)  # [TILE_N, DIM_PAD] each
        s = mm(q, tl.trans(k), PRECISION, UPCAST) * qk_scale  # [GROUP_PAD, TILE_N]
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + mm(p.to(dtype), v, PRECISION, UPCAST)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(out_ptr + seq * stride_o_tok + heads[:, None] * stride_o_head + d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=q_mask)


def paged_decode_attention(q: torch.Tensor, kv_cache: torch.Tensor, block_table: torch.Tensor,
                           seq_lens: torch.Tensor, scale: float, block_size: int,
                           k_scale: float = 1.0, v_scale: float = 1.0,
                           sliding_window: int | None = None,
                           out: torch.Tensor | None = None) -> torch.Tensor:
    """q: [num_seqs, num_heads, head_dim], one query token per sequence (at position seq_len - 1);
    kv_cache: [2, num_slots, num_kv_heads, head_dim]; block_table: [num_seqs, max_blocks] int;
    seq_lens: [num_seqs] int, the context length including the query token.
    Returns [num_seqs, num_heads, head_dim] in q's dtype."""
    num_seqs, num_heads, head_dim = q.shape
    _, num_kv_heads, cache_dim = check_kv_cache(kv_cache, block_size)
    assert cache_dim == head_dim and num_heads % num_kv_heads == 0, "q does not fit the cache"
    assert q.dtype in FLOAT_DTYPES and q.stride(-1) == 1, "q must be fp16/bf16/fp32, dim contiguous"
    assert kv_cache.dtype in FP8_DTYPES or kv_cache.dtype == q.dtype, "cache dtype must be q's or fp8"
    assert block_table.dim() == 2 and block_table.shape[0] == num_seqs and block_table.stride(1) == 1
    assert seq_lens.shape == (num_seqs,) and not seq_lens.dtype.is_floating_point
    if out is None:
        out = torch.empty_like(q)
    assert out.shape == q.shape and out.stride(-1) == 1
    if num_seqs == 0:
        return out
    group = num_heads // num_kv_heads
    k_cache, v_cache = kv_cache[0], kv_cache[1]
    _decode_kernel[(num_seqs, num_kv_heads)](
        q, k_cache, v_cache, out, block_table, seq_lens,
        scale * _LOG2E, float(k_scale), float(v_scale), window_or_none(sliding_window),
        q.stride(0), q.stride(1), out.stride(0), out.stride(1), k_cache.stride(0), k_cache.stride(1),
        block_table.stride(0),
        GROUP=group, GROUP_PAD=next_pow2(group, 16), HEAD_DIM=head_dim,
        DIM_PAD=next_pow2(head_dim, 16), BLOCK_SIZE=block_size, TILE_N=max(32, block_size),
        IS_FP8=kv_cache.dtype in FP8_DTYPES, **dot_mode(q.dtype))
    return out


def paged_decode_attention_ref(q: torch.Tensor, kv_cache: torch.Tensor, block_table: torch.Tensor,
                               seq_lens: torch.Tensor, scale: float, block_size: int,
                               k_scale: float = 1.0, v_scale: float = 1.0,
                               sliding_window: int | None = None,
                               out: torch.Tensor | None = None) -> torch.Tensor:
    """Plain torch, one sequence at a time: gather its keys and values by block table."""
    out = torch.empty_like(q) if out is None else out
    group = q.shape[1] // kv_cache.shape[2]
    for i, seq_len in enumerate(seq_lens.tolist()):
        pos = torch.arange(seq_len, device=q.device)
        if sliding_window:
            pos = pos[max(0, seq_len - sliding_window):]
        slots = block_table[i, pos // block_size].long() * block_size + pos % block_size
        k = gather_slots(kv_cache[0], slots, k_scale, q.dtype).float()  # [len, kv_heads, dim]
        v = gather_slots(kv_cache[1], slots, v_scale, q.dtype).float()
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        scores = torch.einsum("hd,nhd->hn", q[i].float(), k) * scale
        out[i] = torch.einsum("hn,nhd->hd", scores.softmax(-1), v).to(q.dtype)
    return out

