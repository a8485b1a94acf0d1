"""dyno's few-row linears (engine/csrc/gemv.cpp): int8 and int4 weights times 1 to 4 bf16 rows,
as `--quantization` layers run one to four decoding sequences on an AMX CPU. The rows are
quantized to 15-16 bits each, so a result is the fp32 sum up to about bf16's own rounding, and
a row gets the same bits whatever else is in the batch."""

from __future__ import annotations

import pytest
import torch

from engine import cpu_kernels
from engine.models.amx_layout import pack_int4_gemv, tile_order
from engine.models.quant_linear import dequantize_int4, quantize_int4, quantize_int8

KERNELS = cpu_kernels.load()
pytestmark = pytest.mark.skipif(KERNELS is None or not KERNELS.gemv_available(),
                                reason="dyno's CPU kernels did not build here, or without AVX-512 VNNI")


def _int4(n: int, k: int, seed: int = 0):
    torch.manual_seed(seed)
    codes, scales_and_zeros = quantize_int4(torch.randn(n, k))
    scales_and_zeros = scales_and_zeros.to(torch.bfloat16)
    weight = dequantize_int4(codes, scales_and_zeros.float())
    return pack_int4_gemv(codes, scales_and_zeros), weight


def _int8(n: int, k: int, seed: int = 0):
    torch.manual_seed(seed)
    q, scale = quantize_int8(torch.randn(n, k))
    return (tile_order(q), scale), q.float() * scale[:, None]


@pytest.mark.parametrize("rows", [1, 2, 3, 4])
@pytest.mark.parametrize("n, k", [(64, 96), (576, 1536), (512, 2048)])
def test_rows_are_the_fp32_sum_to_about_bf16_rounding(rows, n, k):
    x = torch.randn(rows, k, dtype=torch.bfloat16)
    bias = torch.randn(n, dtype=torch.bfloat16)
    for kernel, (packed, weight) in ((KERNELS.int4_gemv, _int4(n, k)), (KERNELS.int8_gemv, _int8(n, k))):
        got = kernel(x, *packed, bias)
        assert got.dtype == torch.bfloat16 and got.shape == (rows, n)
        want = x.float() @ weight.T + bias.float()
        torch.testing.assert_close(got.float(), want, rtol=2 ** -7, atol=2e-2)


def test_a_row_gets_the_same_bits_alone_or_in_a_batch():
    x = torch.randn(4, 576, dtype=torch.bfloat16) * torch.tensor([[1.0], [30.0], [0.01], [1.0]]).bfloat16()
    for kernel, (packed, _) in ((KERNELS.int4_gemv, _int4(96, 576)), (KERNELS.int8_gemv, _int8(96, 576))):
        batch = kernel(x, *packed, None)
        for i in range(4):
            assert torch.equal(kernel(x[i:i + 1], *packed, None)[0], batch[i])


def test_a_row_of_inf_or_nan_gives_nan_and_leaves_the_others_alone():
    x = torch.randn(3, 96, dtype=torch.bfloat16)
    x[1, 5] = float("inf")
    zero = torch.zeros(1, 96, dtype=torch.bfloat16)
    bias = torch.randn(64, dtype=torch.bfloat16)
    for kernel, (packed, _) in ((KERNELS.int4_gemv, _int4(64, 96)), (KERNELS.int8_gemv, _int8(64, 96))):
        got = kernel(x, *packed, None)
        assert bool(got[1].isnan().all()) and not bool(got[[0, 2]].isnan().any())
        assert torch.equal(kernel(x[:1], *packed, None)[0], got[0])
        assert torch.equal(kernel(zero, *packed, bias)[0], bias)  # a zero row: the bias alone


def test_more_rows_take_more_passes_and_the_same_bits():
    x = torch.randn(9, 96, dtype=torch.bfloat16)
    for kernel, (packed, _) in ((KERNELS.int4_gemv, _int4(64, 96)), (KERNELS.int8_gemv, _int8(64, 96))):
        batch = kernel(x, *packed, None)
        assert torch.equal(torch.cat([kernel(x[i:i + 4], *packed, None) for i in (0, 4, 8)]), batch)


def test_inputs_it_cannot_take_are_refused():
    (packed, scale), _ = _int8(64, 96)
    with pytest.raises(RuntimeError, match="bf16"):
        KERNELS.int8_gemv(torch.randn(2, 96), packed, scale, None)
    with pytest.raises(RuntimeError, match="multiples of 32"):
        KERNELS.int8_gemv(torch.randn(2, 40, dtype=torch.bfloat16), packed, scale, None)
