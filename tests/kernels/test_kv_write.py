"""Writing keys and values into the paged cache by slot mapping, fp8 included."""

from __future__ import annotations

import pytest
import torch

from kernels import write_kv, write_kv_ref
from tests.kernels.conftest import DEVICE
from tests.kernels.paged import FP8


def _caches(num_slots, num_kv_heads, head_dim, cache_dtype):
    raw = torch.randint(0, 120, (2, num_slots, num_kv_heads, head_dim), dtype=torch.uint8)
    if cache_dtype in FP8:
        kv = raw.view(cache_dtype)
    else:
        kv = raw.to(cache_dtype)
    return kv.to(DEVICE), kv.clone().to(DEVICE)


def _bytes(kv: torch.Tensor) -> torch.Tensor:
    return kv.view(torch.uint8) if kv.dtype in FP8 else kv


@pytest.mark.parametrize("num_kv_heads,head_dim", [(1, 16), (2, 32), (3, 24)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_write_matches_reference(num_kv_heads, head_dim, dtype):
    num_tokens, num_slots = 13, 64
    k = torch.randn(num_tokens, num_kv_heads, head_dim, device=DEVICE).to(dtype)
    v = torch.randn(num_tokens, num_kv_heads, head_dim, device=DEVICE).to(dtype)
    slots = torch.randperm(num_slots, device=DEVICE)[:num_tokens]
    slots[3] = -1  # padding: skipped
    got, want = _caches(num_slots, num_kv_heads, head_dim, dtype)
    write_kv(k, v, got, slots)
    write_kv_ref(k, v, want, slots)
    assert torch.equal(got, want)


@pytest.mark.parametrize("cache_dtype", FP8)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fp8_write_rounds_like_torch(cache_dtype, dtype):
    """Byte for byte as torch's cast, over values that cross exponent edges, subnormals included."""
    num_tokens, num_kv_heads, head_dim = 64, 2, 32
    mags = torch.logspace(-9, 2.4, num_tokens * num_kv_heads * head_dim, base=2.0)
    k = (mags * torch.randn(mags.shape).sign()).view(num_tokens, num_kv_heads, head_dim)
    k = (k * 0.07).to(dtype).to(DEVICE)
    v = torch.randn(num_tokens, num_kv_heads, head_dim, device=DEVICE).to(dtype)
    slots = torch.arange(num_tokens, device=DEVICE) * 2
    got, want = _caches(2 * num_tokens, num_kv_heads, head_dim, cache_dtype)
    write_kv(k, v, got, slots, k_scale=0.07, v_scale=0.5)
    write_kv_ref(k, v, want, slots, k_scale=0.07, v_scale=0.5)
    if DEVICE == "cuda" or dtype != torch.bfloat16:
        assert torch.equal(_bytes(got), _bytes(want))
    else:  # the interpreter truncates the fp32 -> bf16 step: at most one fp8 step off
        assert (_bytes(got).int() - _bytes(want).int()).abs().max() <= 1


def test_fp8_write_saturates():
    k = torch.tensor([1e6, -1e6, 440.0, 0.0]).view(4, 1, 1).expand(4, 1, 16).contiguous().to(DEVICE)
    got, want = _caches(4, 1, 16, torch.float8_e4m3fn)
    write_kv(k, k, got, torch.arange(4, device=DEVICE))
    write_kv_ref(k, k, want, torch.arange(4, device=DEVICE))
    assert got[0, :, 0, 0].float().tolist() == [448.0, -448.0, 448.0, 0.0]
    assert torch.equal(_bytes(got), _bytes(want))


def test_slots_past_two_to_the_31_elements_do_not_overflow():
    """Slot * stride beyond int32: the kernel's offsets are 64-bit. One kv head of 128 fp8
    bytes per slot; 2**24 + 16 slots put the last ones past 2**31 bytes."""
    num_slots, head_dim = (1 << 24) + 16, 128
    kv = torch.empty(2, num_slots, 1, head_dim, dtype=torch.float8_e4m3fn, device=DEVICE)
    slots = torch.tensor([0, num_slots - 1], device=DEVICE)
    k = torch.ones(2, 1, head_dim, device=DEVICE) * torch.tensor([1.0, 2.0], device=DEVICE)[:, None, None]
    write_kv(k, -k, kv, slots)
    assert kv[0, -1].float().eq(2.0).all() and kv[1, -1].float().eq(-2.0).all()
    assert kv[0, 0].float().eq(1.0).all()
