"""Builders for paged-cache test cases: scattered block tables, NaN in every unused slot."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tests.kernels.conftest import DEVICE

FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)


@dataclass
class PagedCase:
    kv_cache: torch.Tensor  # [2, num_slots, num_kv_heads, head_dim]
    block_table: torch.Tensor  # [num_seqs, max_blocks] int32, padded with block 0
    seq_lens: torch.Tensor  # [num_seqs] int32
    k_scale: float
    v_scale: float


def make_paged_case(seq_lens: list[int], num_kv_heads: int, head_dim: int, block_size: int,
                    dtype: torch.dtype, cache_dtype: torch.dtype | None = None,
                    extra_blocks: int = 3, device: str = DEVICE) -> PagedCase:
    """Each sequence gets its own blocks from a shuffled pool (block 0 stays the placeholder);
    written slots hold random values, every other slot NaN (or fp8's NaN bytes)."""
    cache_dtype = cache_dtype or dtype
    blocks_per_seq = [-(-n // block_size) for n in seq_lens]
    num_blocks = 1 + sum(blocks_per_seq) + extra_blocks
    order = (torch.randperm(num_blocks - 1) + 1).tolist()
    max_blocks = max(blocks_per_seq)
    table = torch.zeros(len(seq_lens), max_blocks, dtype=torch.int32)
    values = torch.randn(2, num_blocks * block_size, num_kv_heads, head_dim, dtype=torch.float32)
    fp8 = cache_dtype in FP8
    k_scale, v_scale = (0.05, 0.03) if fp8 else (1.0, 1.0)
    written = torch.zeros(num_blocks * block_size, dtype=torch.bool)
    for i, (n, nb) in enumerate(zip(seq_lens, blocks_per_seq)):
        ids = [order.pop() for _ in range(nb)]
        table[i, :nb] = torch.tensor(ids, dtype=torch.int32)
        pos = torch.arange(n)
        written[torch.tensor(ids)[pos // block_size] * block_size + pos % block_size] = True
    if fp8:
        values[0] /= k_scale
        values[1] /= v_scale
        raw = values.to(cache_dtype).view(torch.uint8)
        raw[:, ~written] = 0xFF  # NaN in e4m3fn, NaN in e5m2 too
        kv = raw.view(cache_dtype)
    else:
        values[:, ~written] = float("nan")
        kv = values.to(dtype)
    return PagedCase(kv.to(device), table.to(device), torch.tensor(seq_lens, dtype=torch.int32,
                     device=device), k_scale, v_scale)


def attention_tolerance(dtype: torch.dtype) -> dict:
    return {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float16: dict(atol=2e-3, rtol=2e-3),
            torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2)}[dtype]
