"""dyno's C++ cache write (engine/csrc/kv_write.cpp) puts each token's key and value rows
where index_copy_ puts them, reading them in place from the fused QKV output; into an fp8 cache
it stores the codes torch's own path stores: (value / scale).to(fp8), every bf16 value tried."""

from __future__ import annotations

import pytest
import torch

from engine import cpu_kernels

KERNELS = cpu_kernels.load()
pytestmark = pytest.mark.skipif(KERNELS is None, reason="dyno's CPU kernels did not build here")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_land_in_their_slots_as_index_copy_puts_them(dtype):
    torch.manual_seed(0)
    kv = torch.randn(2, 64, 3, 8).to(dtype)
    _, k, v = torch.randn(5, 72 + 2 * 24).to(dtype).split([72, 24, 24], dim=-1)
    k, v = k.view(5, 3, 8), v.view(5, 3, 8)  # strided views of one fused row
    slots = torch.tensor([9, 0, 63, 17, 18])
    want = kv.clone()
    want[0].index_copy_(0, slots, k)
    want[1].index_copy_(0, slots, v)
    KERNELS.kv_write(kv, k, v, slots)
    assert torch.equal(kv, want)


def test_a_slot_outside_the_cache_is_refused():
    kv = torch.zeros(2, 4, 1, 8)
    with pytest.raises(RuntimeError, match="slot out of range"):
        KERNELS.kv_write(kv, torch.ones(1, 1, 8), torch.ones(1, 1, 8), torch.tensor([4]))


ALL_BF16 = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)


@pytest.mark.parametrize("cache_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("source", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("scale", [1.0, 0.05, 3.7])
def test_fp8_codes_are_torchs(cache_dtype, source, scale):
    values = ALL_BF16.to(source)
    if source == torch.float32:  # fp32 values between bf16's, large and tiny ones
        torch.manual_seed(0)
        values = torch.cat([values, torch.randn(65536) * 300, torch.randn(65536) * 1e-3])
    values = values[~values.isnan()]  # NaN's sign is not kept the same way: any NaN code will do
    values = values[:values.numel() // 256 * 256].view(-1, 4, 64)
    slots = torch.randperm(values.shape[0])
    kv = torch.zeros(2, values.shape[0], 4, 64, dtype=cache_dtype)
    KERNELS.kv_write_fp8(kv, values, -values, slots, scale, scale)
    codes = kv.view(torch.uint8)
    assert torch.equal(codes[0][slots], (values / scale).to(cache_dtype).view(torch.uint8))
    assert torch.equal(codes[1][slots], (-values / scale).to(cache_dtype).view(torch.uint8))


def test_fp8_write_takes_only_fp8_caches():
    kv = torch.zeros(2, 4, 1, 16).bfloat16()
    with pytest.raises(RuntimeError, match="an fp8 cache"):
        KERNELS.kv_write_fp8(kv, torch.ones(1, 1, 16).bfloat16(), torch.ones(1, 1, 16).bfloat16(),
                             torch.tensor([1]), 1.0, 1.0)
