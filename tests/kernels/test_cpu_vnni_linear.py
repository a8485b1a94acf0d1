"""dyno's int4 and int8 linears for any number of rows on AVX-512 VNNI (engine/csrc/vnni_linear.cpp),
as `--quantization int4` layers run batches of five rows or more on a CPU without AMX, and int8
layers (int4's lm_head among them) every batch. Each row
is quantized to signed bytes with a scale per group of 32 inputs (llama.cpp's Q8_0), and the
integer sums are scaled per group: the result is that arithmetic's, up to the order of fp32
sums, ties in the rounding to bytes and the final bf16 rounding, and within ~1% of the fp32
product."""

from __future__ import annotations

import pytest
import torch

from engine import cpu_kernels
from engine.models.amx_layout import interleave_gate_up, pack_int4_gemv, pack_int8_vnni
from engine.models.quant_linear import quantize_int4, quantize_int8
from tests.kernels.quantized import int4_case

KERNELS = cpu_kernels.load()
pytestmark = pytest.mark.skipif(KERNELS is None or not KERNELS.vnni_available(),
                                reason="dyno's CPU kernels did not build here, or without AVX-512 VNNI")


def _int8(n: int, k: int, seed: int = 0):
    torch.manual_seed(seed)
    q, scale = quantize_int8(torch.randn(n, k))
    scale = scale.to(torch.bfloat16).float()
    return (pack_int8_vnni(q), scale), q.float() * scale[:, None]


def _linear(kind: str, n: int, k: int, seed: int = 0):
    """(the kernel as f(x, bias), the weight it computes with)."""
    (codes, params), weight = (int4_case if kind == "int4" else _int8)(n, k, seed)
    if kind == "int4":
        return (lambda x, bias=None: KERNELS.vnni_int4_linear(x, codes, params, bias, False)), weight
    return (lambda x, bias=None: KERNELS.vnni_int8_linear(x, codes, params, bias)), weight


def _rows_as_q8(x: torch.Tensor) -> torch.Tensor:
    """x as the kernel sees it: per group of 32, round(x * 127 / max |x|) * max |x| / 127."""
    groups = x.float().reshape(x.shape[0], -1, 32)
    top = groups.abs().amax(dim=-1, keepdim=True)
    q = torch.round(groups * (127 / top.clamp(min=1e-30)))
    return (q * (top / 127)).reshape(x.shape)


@pytest.mark.parametrize("rows", [1, 5, 6, 7, 13, 64, 700])
# 576 and 1536 inputs: the group counts the kernel knows at compile time; 300 groups: rows in parts
@pytest.mark.parametrize("n, k", [(64, 96), (64, 576), (32, 1536), (576, 1024), (32, 32 * 300)])
@pytest.mark.parametrize("kind", ["int4", "int8"])
def test_rows_get_their_q8_values_times_the_weight(kind, rows, n, k):
    torch.manual_seed(rows)
    x = torch.randn(rows, k, dtype=torch.bfloat16)
    bias = torch.randn(n, dtype=torch.bfloat16)
    linear, weight = _linear(kind, n, k)
    got = linear(x, bias)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, n)
    want = _rows_as_q8(x) @ weight.T + bias.float()
    # an input at a rounding tie may take the other code (the kernel's 127 / max is a reciprocal)
    one_step = float(x.float().abs().max() / 127 * weight.abs().max())
    torch.testing.assert_close(got.float(), want, rtol=2 ** -7, atol=2 * one_step)
    exact = x.float() @ weight.T + bias.float()
    assert float((got.float() - exact).norm() / exact.norm()) < 0.01


@pytest.mark.parametrize("kind", ["int4", "int8"])
def test_a_row_gets_the_same_bits_alone_or_in_a_batch(kind):
    x = torch.randn(9, 576, dtype=torch.bfloat16) * torch.tensor([[1.0], [30.0], [0.01]] * 3).bfloat16()
    linear, _ = _linear(kind, 96, 576)
    batch = linear(x)
    for i in range(9):
        assert torch.equal(linear(x[i:i + 1])[0], batch[i])


@pytest.mark.parametrize("kind", ["int4", "int8"])
def test_zero_rows_give_the_bias_and_inf_or_nan_give_nan_to_their_row_only(kind):
    x = torch.randn(4, 96, dtype=torch.bfloat16)
    x[1] = 0
    x[2, 5] = float("inf")
    x[3, 70] = float("nan")
    bias = torch.randn(64, dtype=torch.bfloat16)
    linear, _ = _linear(kind, 64, 96)
    got = linear(x, bias)
    assert torch.equal(got[1], bias)
    assert bool(got[2:].isnan().all()) and not bool(got[:2].isnan().any())


@pytest.mark.parametrize("rows", [1, 7, 40])
def test_silu_mul_gives_the_separate_ops_bits(rows):
    """A gate/up weight interleaved by sixteens: SiLU-and-mul on the way out, rounded as the
    plain product and silu_and_mul round it."""
    torch.manual_seed(rows)
    codes, scales_and_zeros = quantize_int4(torch.randn(128, 96))
    scales_and_zeros = scales_and_zeros.to(torch.bfloat16)
    plain = pack_int4_gemv(codes, scales_and_zeros)
    fused = pack_int4_gemv(interleave_gate_up(codes),
                           interleave_gate_up(scales_and_zeros.transpose(0, 1)).transpose(0, 1))
    x = torch.randn(rows, 96, dtype=torch.bfloat16)
    gate_up = KERNELS.vnni_int4_linear(x, *plain, None, False)
    want = KERNELS.silu_and_mul(gate_up)
    assert torch.equal(KERNELS.vnni_int4_linear(x, *fused, None, True), want)


@pytest.mark.parametrize("kind", ["int4", "int8"])
def test_other_shapes_are_refused(kind):
    linear, _ = _linear(kind, 64, 96)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        linear(torch.randn(2, 80, dtype=torch.bfloat16))
