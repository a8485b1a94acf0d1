"""Paged decode attention against its torch reference."""

from __future__ import annotations

import pytest
import torch

from kernels import paged_decode_attention, paged_decode_attention_ref
from tests.kernels.conftest import DEVICE, TOLERANCES
from tests.kernels.paged import FP8, make_paged_case

GQA = [(4, 4), (8, 2), (5, 1)]
LENS = [1, 7, 16, 17, 40]  # one token, partly full blocks, exactly full, several blocks


def _check(seq_lens, heads, head_dim, block_size, dtype, cache_dtype=None, window=None):
    num_heads, num_kv_heads = heads
    case = make_paged_case(seq_lens, num_kv_heads, head_dim, block_size, dtype, cache_dtype)
    q = torch.randn(len(seq_lens), num_heads, head_dim, device=DEVICE).to(dtype)
    args = (q, case.kv_cache, case.block_table, case.seq_lens, head_dim ** -0.5, block_size,
            case.k_scale, case.v_scale, window)
    got = paged_decode_attention(*args)
    want = paged_decode_attention_ref(*args)
    assert not got.isnan().any()
    torch.testing.assert_close(got, want, **TOLERANCES[dtype])


@pytest.mark.parametrize("heads", GQA)
@pytest.mark.parametrize("block_size", [8, 16, 32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_decode_matches_reference(heads, block_size, dtype):
    _check(LENS, heads, 32, block_size, dtype)


@pytest.mark.parametrize("cache_dtype", FP8)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_fp8_cache(cache_dtype, dtype):
    _check(LENS, (8, 2), 32, 16, dtype, cache_dtype)


def test_decode_odd_head_dim_and_one_token():
    _check([1], (4, 4), 40, 8, torch.float32)
    _check([3, 1, 9], (6, 3), 24, 16, torch.float32)


@pytest.mark.parametrize("window", [1, 5, 24])
def test_decode_sliding_window(window):
    _check([1, 7, 30, 41], (4, 2), 32, 8, torch.float32, window=window)


def test_decode_many_sequences():
    lens = torch.randint(1, 70, (48,)).tolist()
    _check(lens, (4, 1), 16, 16, torch.float16)


def test_decode_writes_into_given_out():
    case = make_paged_case([5, 9], 2, 16, 8, torch.float32)
    q = torch.randn(2, 4, 16, device=DEVICE)
    out = torch.full((3, 4, 16), 7.0, device=DEVICE)
    paged_decode_attention(q, case.kv_cache, case.block_table, case.seq_lens, 0.25, 8, out=out[1:])
    assert (out[0] == 7.0).all()
    want = paged_decode_attention_ref(q, case.kv_cache, case.block_table, case.seq_lens, 0.25, 8)
    torch.testing.assert_close(out[1:], want, **TOLERANCES[torch.float32])


@pytest.mark.gpu
@pytest.mark.parametrize("heads", GQA + [(32, 8), (64, 8)])
@pytest.mark.parametrize("block_size", [8, 16, 32])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_decode_large_sweep(heads, block_size, dtype, head_dim):
    lens = torch.randint(1, 2000, (64,)).tolist() + [1, 4096]
    _check(lens, heads, head_dim, block_size, dtype)
    _check(lens, heads, head_dim, block_size, dtype, cache_dtype=torch.float8_e4m3fn)
