"""dyno's C++ paged decode attention (engine/csrc/paged_decode.cpp) against the torch
reference, on every code path it has: bf16 with head_dim 64 and up to four query heads per kv
head (values weighed in registers), other bf16 shapes (bf16 dot products, generic values loop),
fp32; with and without a sliding window. Unused cache slots hold NaN: reading one fails."""

from __future__ import annotations

import pytest
import torch

from engine import cpu_kernels
from kernels import paged_decode_attention_ref
from tests.kernels.paged import attention_tolerance, make_paged_case

KERNELS = cpu_kernels.load()
pytestmark = pytest.mark.skipif(KERNELS is None, reason="dyno's CPU kernels did not build here")

LENS = [1, 7, 16, 17, 40, 203]


@pytest.mark.parametrize("dtype, heads, head_dim", [
    (torch.bfloat16, (3, 3), 64), (torch.bfloat16, (6, 3), 64), (torch.bfloat16, (9, 3), 64),
    (torch.bfloat16, (8, 2), 64), (torch.bfloat16, (10, 2), 64),  # 5 per kv head: generic values
    (torch.bfloat16, (4, 2), 32), (torch.bfloat16, (4, 2), 48),  # 48: no bf16 dot either
    (torch.float32, (9, 3), 64)])
@pytest.mark.parametrize("window", [None, 10])
def test_kernel_matches_the_reference(dtype, heads, head_dim, window):
    torch.manual_seed(0)
    num_heads, num_kv_heads = heads
    case = make_paged_case(LENS, num_kv_heads, head_dim, 16, dtype)
    q = torch.randn(len(LENS), num_heads, head_dim).to(dtype)
    scale = head_dim ** -0.5
    got = KERNELS.paged_decode(q, case.kv_cache, case.block_table.long(), case.seq_lens.long(), 16,
                               window or 0, scale)
    want = paged_decode_attention_ref(q, case.kv_cache, case.block_table, case.seq_lens, scale, 16,
                                      1.0, 1.0, window)
    assert not got.isnan().any()
    torch.testing.assert_close(got.float(), want.float(), **attention_tolerance(dtype))
