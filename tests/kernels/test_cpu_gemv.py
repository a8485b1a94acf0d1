"""dyno's few-row int4 linear (engine/csrc/gemv.cpp): int4 weights times 1 to 4 bf16 rows, as
`--quantization int4` layers run one to four decoding sequences on an AMX CPU. The rows are
quantized to 15 bits each, so a result is the fp32 sum up to about bf16's own rounding, and a
row gets the same bits whatever else is in the batch."""

from __future__ import annotations

import pytest
import torch

from engine import cpu_kernels
from tests.kernels.quantized import int4_case

KERNELS = cpu_kernels.load()
pytestmark = pytest.mark.skipif(KERNELS is None or not KERNELS.gemv_available(),
                                reason="dyno's CPU kernels did not build here, or without AVX-512 VNNI")


@pytest.mark.parametrize("rows", [1, 2, 3, 4])
@pytest.mark.parametrize("n, k", [(64, 96), (576, 1536), (512, 2048)])
def test_rows_are_the_fp32_sum_to_about_bf16_rounding(rows, n, k):
    x = torch.randn(rows, k, dtype=torch.bfloat16)
    bias = torch.randn(n, dtype=torch.bfloat16)
    (codes, params), weight = int4_case(n, k)
    got = KERNELS.int4_gemv(x, codes, params, bias)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, n)
    torch.testing.assert_close(got.float(), x.float() @ weight.T + bias.float(), rtol=2 ** -7, atol=2e-2)


def test_a_row_gets_the_same_bits_alone_or_in_a_batch():
    x = torch.randn(4, 576, dtype=torch.bfloat16) * torch.tensor([[1.0], [30.0], [0.01], [1.0]]).bfloat16()
    (codes, params), _ = int4_case(96, 576)
    batch = KERNELS.int4_gemv(x, codes, params, None)
    for i in range(4):
        assert torch.equal(KERNELS.int4_gemv(x[i:i + 1], codes, params, None)[0], batch[i])


def test_more_rows_take_more_passes_and_the_same_bits():
    x = torch.randn(9, 96, dtype=torch.bfloat16)
    (codes, params), _ = int4_case(64, 96)
    batch = KERNELS.int4_gemv(x, codes, params, None)
    assert torch.equal(torch.cat([KERNELS.int4_gemv(x[i:i + 4], codes, params, None) for i in (0, 4, 8)]), batch)


def test_a_row_of_inf_or_nan_gives_nan_and_leaves_the_others_alone():
    x = torch.randn(3, 96, dtype=torch.bfloat16)
    x[1, 5] = float("inf")
    bias = torch.randn(64, dtype=torch.bfloat16)
    (codes, params), _ = int4_case(64, 96)
    got = KERNELS.int4_gemv(x, codes, params, None)
    assert bool(got[1].isnan().all()) and not bool(got[[0, 2]].isnan().any())
    assert torch.equal(KERNELS.int4_gemv(x[:1], codes, params, None)[0], got[0])
    zero = torch.zeros(1, 96, dtype=torch.bfloat16)
    assert torch.equal(KERNELS.int4_gemv(zero, codes, params, bias)[0], bias)  # the bias alone


def test_inputs_it_cannot_take_are_refused():
    (codes, params), _ = int4_case(64, 96)
    with pytest.raises(RuntimeError, match="bf16"):
        KERNELS.int4_gemv(torch.randn(2, 96), codes, params, None)
    with pytest.raises(RuntimeError, match="rows must be contiguous"):
        KERNELS.int4_gemv(torch.randn(96, 2, dtype=torch.bfloat16).T, codes, params, None)
