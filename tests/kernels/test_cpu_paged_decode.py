"""dyno's C++ paged decode attention (engine/csrc/paged_decode.cpp) against the torch
reference, on every code path it has: bf16 with head_dim 64 and up to four query heads per kv
head (values weighed in registers), other bf16 shapes (bf16 dot products, generic values loop),
fp32; an fp8 cache (e4m3, e5m2) under either (bf16 queries scoring its keys in fp16 products
and weighing its values in fp16);
with and without a sliding window. Unused cache
slots hold NaN: reading one fails."""

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
    case = make_paged_case(LENS, num_kv_heads, head_dim, 16, dtype, device="cpu")
    q = torch.randn(len(LENS), num_heads, head_dim).to(dtype)
    scale = head_dim ** -0.5
    got = KERNELS.paged_decode(q, case.kv_cache, case.block_table.long(), case.seq_lens.long(), 16,
                               window or 0, scale, 1.0, 1.0)
    want = paged_decode_attention_ref(q, case.kv_cache, case.block_table, case.seq_lens, scale, 16,
                                      1.0, 1.0, window)
    assert not got.isnan().any()
    torch.testing.assert_close(got.float(), want.float(), **attention_tolerance(dtype))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("cache_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("window", [None, 10])
@pytest.mark.parametrize("heads", [(9, 3), (8, 2)])  # bf16: values in fp16, all kv heads a pass or one each
def test_fp8_cache_matches_the_reference(dtype, cache_dtype, window, heads):
    """Codes are read as their exact values times the layer's scales (e4m3's subnormals too)."""
    torch.manual_seed(0)
    num_heads, num_kv_heads = heads
    case = make_paged_case(LENS, num_kv_heads, 64, 16, dtype, cache_dtype, device="cpu")
    q = torch.randn(len(LENS), num_heads, 64).to(dtype)
    got = KERNELS.paged_decode(q, case.kv_cache, case.block_table.long(), case.seq_lens.long(), 16,
                               window or 0, 0.125, case.k_scale, case.v_scale)
    want = paged_decode_attention_ref(q, case.kv_cache, case.block_table, case.seq_lens, 0.125, 16,
                                      case.k_scale, case.v_scale, window)
    assert got.dtype == dtype and not got.isnan().any()
    torch.testing.assert_close(got.float(), want.float(), **attention_tolerance(dtype))


@pytest.mark.parametrize("cache_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_fp8_keys_with_queries_too_large_for_fp16_products(cache_dtype):
    """bf16 queries meet fp8 keys in fp16 products while |q| < 2^14; a larger query takes fp32."""
    torch.manual_seed(0)
    case = make_paged_case(LENS, 3, 64, 16, torch.bfloat16, cache_dtype, device="cpu")
    q = torch.randn(len(LENS), 9, 64).bfloat16()
    q[2, 4, 7] = 40000.0
    got = KERNELS.paged_decode(q, case.kv_cache, case.block_table.long(), case.seq_lens.long(), 16,
                               0, 1e-4, case.k_scale, case.v_scale)
    want = paged_decode_attention_ref(q, case.kv_cache, case.block_table, case.seq_lens, 1e-4, 16,
                                      case.k_scale, case.v_scale, None)
    assert not got.isnan().any()
    torch.testing.assert_close(got.float(), want.float(), **attention_tolerance(torch.bfloat16))


def test_every_e4m3_code_reads_as_its_value():
    """Attending to one position returns its value row: codes 0-192 but NaN (127), subnormals
    and negatives among them."""
    kv = torch.zeros(2, 16, 3, 64, dtype=torch.uint8)
    kv[1, 5] = torch.tensor([c for c in range(193) if c != 0x7F], dtype=torch.uint8).view(3, 64)
    kv = kv.view(torch.float8_e4m3fn)
    got = KERNELS.paged_decode(torch.randn(1, 3, 64), kv, torch.zeros(1, 1, dtype=torch.long),
                               torch.tensor([6]), 16, 1, 0.125, 1.0, 1.0)  # window 1: position 5
    assert torch.equal(got[0], kv[1, 5].float())


@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("window", [None, 10])
@pytest.mark.parametrize("heads", [(9, 3), (8, 2)])
def test_fused_qkv_step_gives_the_bits_of_rotary_write_and_attention(cache_dtype, window, heads):
    """The decode stack's one pass per sequence: the same output and the same cache bytes as
    rotary, the cache write and paged_decode called in turn on the fused QKV output."""
    torch.manual_seed(0)
    num_heads, num_kv_heads = heads
    case = make_paged_case(LENS, num_kv_heads, 64, 16, torch.bfloat16, cache_dtype, device="cpu")
    table, lens = case.block_table.long(), case.seq_lens.long()
    last = lens - 1  # each sequence's fresh token takes its last position
    slots = table[torch.arange(len(LENS)), last // 16] * 16 + last % 16
    qkv = torch.randn(len(LENS), (num_heads + 2 * num_kv_heads) * 64).to(torch.bfloat16)
    angles = last[:, None].float() * torch.rand(1, 64)
    cos, sin = angles.cos().to(torch.bfloat16), angles.sin().to(torch.bfloat16)

    q, k, v = qkv.split([num_heads * 64, num_kv_heads * 64, num_kv_heads * 64], dim=1)
    q_rot, k_rot = KERNELS.rotary(q.view(-1, num_heads, 64), k.view(-1, num_kv_heads, 64),
                                  cos[:, None], sin[:, None])
    want_kv = case.kv_cache.clone()
    if cache_dtype == torch.bfloat16:
        KERNELS.kv_write(want_kv, k_rot, v.view(-1, num_kv_heads, 64), slots)
    else:
        KERNELS.kv_write_fp8(want_kv, k_rot, v.view(-1, num_kv_heads, 64), slots, case.k_scale, case.v_scale)
    want = KERNELS.paged_decode(q_rot, want_kv, table, lens, 16, window or 0, 0.125, case.k_scale, case.v_scale)

    got_kv = case.kv_cache.clone()
    got = KERNELS.paged_decode_qkv(qkv, cos, sin, got_kv, slots, table, lens, 16, num_heads, window or 0,
                                   0.125, case.k_scale, case.v_scale)
    assert not got.isnan().any()
    assert torch.equal(got.view(torch.int16), want.view(-1, num_heads * 64).view(torch.int16))
    assert torch.equal(got_kv.view(torch.uint8), want_kv.view(torch.uint8))


def test_fused_qkv_step_refuses_a_slot_outside_the_cache():
    case = make_paged_case([5], 3, 64, 16, torch.bfloat16, device="cpu")
    qkv = torch.zeros(1, 15 * 64, dtype=torch.bfloat16)
    cos = torch.ones(1, 64, dtype=torch.bfloat16)
    bad = torch.tensor([case.kv_cache.shape[1]])
    with pytest.raises(RuntimeError, match="slot out of range"):
        KERNELS.paged_decode_qkv(qkv, cos, cos, case.kv_cache, bad, case.block_table.long(),
                                 case.seq_lens.long(), 16, 9, 0, 0.125, 1.0, 1.0)
