"""Prefill / chunked-prefill attention over the paged cache against its torch reference."""

from __future__ import annotations

import pytest
import torch

from kernels import paged_prefill_attention, paged_prefill_attention_ref
from tests.kernels.conftest import DEVICE, TOLERANCES
from tests.kernels.paged import FP8, make_paged_case

GQA = [(4, 4), (8, 2), (5, 1)]
# (cached prefix, new tokens): fresh prompts, one-token chunks, chunks after a cached prefix
# that ends mid-block or on a block edge, a chunk longer than one query tile.
SEQS = [(0, 1), (0, 7), (0, 17), (5, 1), (16, 9), (13, 20), (0, 40)]


def _check(seqs, heads, head_dim, block_size, dtype, cache_dtype=None, window=None):
    num_heads, num_kv_heads = heads
    seq_lens = [c + n for c, n in seqs]
    case = make_paged_case(seq_lens, num_kv_heads, head_dim, block_size, dtype, cache_dtype)
    q_lens = [n for _, n in seqs]
    query_start = torch.tensor([0] + q_lens, device=DEVICE).cumsum(0).to(torch.int32)
    q = torch.randn(sum(q_lens), num_heads, head_dim, device=DEVICE).to(dtype)
    args = (q, case.kv_cache, case.block_table, query_start, case.seq_lens, max(q_lens),
            head_dim ** -0.5, block_size, case.k_scale, case.v_scale, window)
    got = paged_prefill_attention(*args)
    want = paged_prefill_attention_ref(*args)
    assert not got.isnan().any()
    torch.testing.assert_close(got, want, **TOLERANCES[dtype])


@pytest.mark.parametrize("heads", GQA)
@pytest.mark.parametrize("block_size", [8, 16, 32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_prefill_matches_reference(heads, block_size, dtype):
    _check(SEQS, heads, 32, block_size, dtype)


@pytest.mark.parametrize("cache_dtype", FP8)
def test_prefill_fp8_cache(cache_dtype):
    _check(SEQS, (8, 2), 32, 16, torch.bfloat16, cache_dtype)


@pytest.mark.parametrize("window", [1, 6, 24])
def test_prefill_sliding_window(window):
    _check([(0, 30), (20, 13), (3, 1), (40, 2)], (4, 2), 16, 8, torch.float32, window=window)


def test_prefill_odd_head_dim_single_sequence():
    _check([(0, 3)], (3, 1), 40, 8, torch.float32)
    _check([(9, 70)], (2, 2), 24, 16, torch.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("heads", GQA + [(32, 8)])
@pytest.mark.parametrize("block_size", [8, 16, 32])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_prefill_large_sweep(heads, block_size, dtype, head_dim):
    gen = torch.Generator().manual_seed(1)
    seqs = [(int(c), int(n)) for c, n in zip(torch.randint(0, 1500, (24,), generator=gen),
                                             torch.randint(1, 700, (24,), generator=gen))]
    _check(seqs + [(0, 1), (0, 2048)], heads, head_dim, block_size, dtype)
    _check(seqs, heads, head_dim, block_size, dtype, cache_dtype=torch.float8_e5m2)
