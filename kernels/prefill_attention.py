"""Causal prefill / chunked-prefill attention over the paged cache, many sequences in one launch.

Sequence i's new queries are rows query_start[i]:query_start[i+1] of q; its context (the cached
prefix, then the new tokens, already written to the cache) is seq_lens[i] tokens long, so query
row j sits at position seq_lens[i] - q_len + j and attends to every position up to its own
(and no further back than the sliding window). One program per (sequence, BLOCK_M query rows,
query head); programs past a sequence's last query row store nothing.
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
def _prefill_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, out_ptr, table_ptr, query_start_ptr, seq_lens_ptr,
    qk_scale, k_scale, v_scale, window,
    stride_q_tok, stride_q_head, stride_o_tok, stride_o_head, stride_c_slot, stride_c_head,
    stride_table,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, DIM_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IS_FP8: tl.constexpr, PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    seq = tl.program_id(0)
    tile = tl.program_id(1)
    head = tl.program_id(2)
    kv_head = head // GROUP
    q_start = tl.load(query_start_ptr + seq)
    q_len = tl.load(query_start_ptr + seq + 1) - q_start
    seq_len = tl.load(seq_lens_ptr + seq)
    num_cached = seq_len - q_len
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    d = tl.arange(0, DIM_PAD)
    n = tl.arange(0, BLOCK_N)
    row_valid = rows < q_len
    q_pos = num_cached + rows  # [BLOCK_M]
    q_mask = row_valid[:, None] & (d[None, :] < HEAD_DIM)
    q_offs = (q_start + rows).to(tl.int64)[:, None] * stride_q_tok + head * stride_q_head + d[None, :]
    q = tl.load(q_ptr + q_offs, mask=q_mask, other=0.0)  # [BLOCK_M, DIM_PAD]
    dtype = q_ptr.dtype.element_ty

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, DIM_PAD], tl.float32)
    # Keys from the first row's window start to the last row's position; none past q_len.
    hi = tl.minimum(seq_len, num_cached + tile * BLOCK_M + BLOCK_M)
    hi = tl.where(tile * BLOCK_M < q_len, hi, 0)
    lo = tl.maximum(num_cached + tile * BLOCK_M - window + 1, 0)
    for start in range(lo, hi, BLOCK_N):
        pos = start + n
        valid = pos < hi
        k, v = load_kv_tile(k_cache_ptr, v_cache_ptr, table_ptr, pos, valid, d, seq, kv_head, k_scale,
                            v_scale, stride_table, stride_c_slot, stride_c_head, dtype, BLOCK_SIZE,
                            HEAD_DIM, IS_FP8)  # [BLOCK_N, DIM_PAD] each
        s = mm(q, tl.trans(k), PRECISION, UPCAST) * qk_scale  # [BLOCK_M, BLOCK_N]
        attend = valid[None, :] & (pos[None, :] <= q_pos[:, None]) \
            & (pos[None, :] > q_pos[:, None] - window)
        s = tl.where(attend, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing seen yet
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + mm(p.to(dtype), v, PRECISION, UPCAST)
        m_i = m_new
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    o_offs = (q_start + rows).to(tl.int64)[:, None] * stride_o_tok + head * stride_o_head + d[None, :]
    tl.store(out_ptr + o_offs, out.to(out_ptr.dtype.element_ty), mask=q_mask)


def paged_prefill_attention(q: torch.Tensor, kv_cache: torch.Tensor, block_table: torch.Tensor,
                            query_start: torch.Tensor, seq_lens: torch.Tensor, max_query_len: int,
                            scale: float, block_size: int, k_scale: float = 1.0,
                            v_scale: float = 1.0, sliding_window: int | None = None,
                            out: torch.Tensor | None = None) -> torch.Tensor:
    """q: [num_tokens, num_heads, head_dim], the new tokens of all sequences back to back;
    kv_cache: [2, num_slots, num_kv_heads, head_dim], new keys/values already written;
    block_table: [num_seqs, max_blocks] int; query_start: [num_seqs + 1] int, row offsets into q;
    seq_lens: [num_seqs] int, context lengths (cached prefix + new tokens); max_query_len: the
    longest q_len (sizes the grid without a device sync). Returns q's shape and dtype."""
    num_tokens, num_heads, head_dim = q.shape
    _, num_kv_heads, cache_dim = check_kv_cache(kv_cache, block_size)
    num_seqs = seq_lens.shape[0]
    assert cache_dim == head_dim and num_heads % num_kv_heads == 0, "q does not fit the cache"
    assert q.dtype in FLOAT_DTYPES and q.stride(-1) == 1, "q must be fp16/bf16/fp32, dim contiguous"
    assert kv_cache.dtype in FP8_DTYPES or kv_cache.dtype == q.dtype, "cache dtype must be q's or fp8"
    assert block_table.dim() == 2 and block_table.shape[0] == num_seqs and block_table.stride(1) == 1
    assert query_start.shape == (num_seqs + 1,) and not query_start.dtype.is_floating_point
    assert not seq_lens.dtype.is_floating_point
    if out is None:
        out = torch.empty_like(q)
    assert out.shape == q.shape and out.stride(-1) == 1
    if num_seqs == 0 or max_query_len == 0:
        return out
    block_m = 16 if max_query_len <= 16 else 64
    k_cache, v_cache = kv_cache[0], kv_cache[1]
    grid = (num_seqs, triton.cdiv(max_query_len, block_m), num_heads)
    _prefill_kernel[grid](
        q, k_cache, v_cache, out, block_table, query_start, seq_lens,
        scale * _LOG2E, float(k_scale), float(v_scale), window_or_none(sliding_window),
        q.stride(0), q.stride(1), out.stride(0), out.stride(1), k_cache.stride(0), k_cache.stride(1),
        block_table.stride(0),
        GROUP=num_heads // num_kv_heads, HEAD_DIM=head_dim, DIM_PAD=next_pow2(head_dim, 16),
        BLOCK_SIZE=block_size, BLOCK_M=block_m, BLOCK_N=max(32, block_size),
        IS_FP8=kv_cache.dtype in FP8_DTYPES, **dot_mode(q.dtype))
    return out


def paged_prefill_attention_ref(q: torch.Tensor, kv_cache: torch.Tensor, block_table: torch.Tensor,
                                query_start: torch.Tensor, seq_lens: torch.Tensor,
                                max_query_len: int, scale: float, block_size: int,
                                k_scale: float = 1.0, v_scale: float = 1.0,
                                sliding_window: int | None = None,
                                out: torch.Tensor | None = None) -> torch.Tensor:
    """Plain torch, one sequence at a time, with an explicit causal (and window) mask."""
    out = torch.empty_like(q) if out is None else out
    group = q.shape[1] // kv_cache.shape[2]
    starts = query_start.tolist()
    for i, seq_len in enumerate(seq_lens.tolist()):
        a, b = starts[i], starts[i + 1]
        pos = torch.arange(seq_len, device=q.device)
        slots = block_table[i, pos // block_size].long() * block_size + pos % block_size
        k = gather_slots(kv_cache[0], slots, k_scale, q.dtype).float().repeat_interleave(group, 1)
        v = gather_slots(kv_cache[1], slots, v_scale, q.dtype).float().repeat_interleave(group, 1)
        q_pos = torch.arange(seq_len - (b - a), seq_len, device=q.device)[:, None]
        mask = pos[None, :] <= q_pos
        if sliding_window:
            mask &= pos[None, :] > q_pos - sliding_window
        scores = torch.einsum("mhd,nhd->hmn", q[a:b].float(), k) * scale
        scores = scores.masked_fill(~mask, float("-inf"))
        out[a:b] = torch.einsum("hmn,nhd->mhd", scores.softmax(-1), v).to(q.dtype)
    return out
