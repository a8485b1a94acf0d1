"""dyno's AMX linears (engine/csrc/amx_linear.cpp): bf16 rows times bf16 weights, int8 weights
with a scale per output channel, or int4 weights with a scale and zero point per group of 32
inputs, as bf16 and `--quantization` layers run batches below PROMPT_FROM_ROWS rows. A bf16 row's
result is its fp32 sum rounded once to bf16; int8 quantizes each row to 15 bits first, so its
sums are that close; either way a row gets the same bits whatever the batch holds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine import cpu_kernels
from engine.models.amx_layout import pack_int4, pack_int8, tile_order
from engine.models.packed_linear import PackedLinear
from engine.models.prompt_linear import PROMPT_FROM_ROWS
from engine.models.quant_linear import (INT4_GEMV_UP_TO_ROWS, INT8_AMX_BELOW_ROWS, Int4Linear, Int8Linear,
                                        dequantize_int4, quantize_int4, quantize_int8)

KERNELS = cpu_kernels.load()
pytestmark = pytest.mark.skipif(KERNELS is None or not KERNELS.amx_available(),
                                reason="no AMX on this CPU, or dyno's CPU kernels did not build here")


def _case(rows: int, k: int = 96, n: int = 64):
    torch.manual_seed(rows)
    q, scale = quantize_int8(torch.randn(n, k))
    x = torch.randn(rows, k, dtype=torch.bfloat16)
    bias = torch.randn(n, dtype=torch.bfloat16)
    want = x.float() @ (q.float() * scale[:, None]).T + bias.float()
    return x, q, scale, bias, want


class _Counting:
    """dyno's kernels, counting the AMX calls."""

    def __init__(self) -> None:
        self.calls = 0

    def amx_int4_linear(self, *args):
        self.calls += 1
        return KERNELS.amx_int4_linear(*args)

    def amx_bf16_linear(self, *args):
        self.calls += 1
        return KERNELS.amx_bf16_linear(*args)

    def amx_gemm(self, *args):  # prompts: not counted
        return KERNELS.amx_gemm(*args)

    def amx_int8_linear(self, *args):
        self.calls += 1
        return KERNELS.amx_int8_linear(*args)

    def int4_gemv(self, *args):  # few rows: not AMX
        return KERNELS.int4_gemv(*args)


@pytest.mark.parametrize("rows", [1, 15, 16, 17, 32, 33, 100])
def test_int8_rows_are_the_fp32_sum_to_about_bf16_rounding(rows):
    x, q, scale, bias, want = _case(rows)
    got = KERNELS.amx_int8_linear(x, pack_int8(q), scale, bias)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, 64)
    torch.testing.assert_close(got.float(), want, rtol=2 ** -7, atol=2e-2)


@pytest.mark.parametrize("rows", [1, 16, 33])
def test_int4_rows_are_sums_over_the_dequantized_weight(rows):
    torch.manual_seed(rows)
    codes, scales_and_zeros = quantize_int4(torch.randn(64, 96))
    scales_and_zeros = scales_and_zeros.to(torch.bfloat16)
    x = torch.randn(rows, 96, dtype=torch.bfloat16)
    weight = dequantize_int4(codes, scales_and_zeros.float()).to(torch.bfloat16)  # the layer's dense copy
    got = KERNELS.amx_int4_linear(x, *pack_int4(codes, scales_and_zeros), None, False)
    # the kernel rounds each weight to bf16 after one fused multiply-add: at most a bf16 step apart
    torch.testing.assert_close(got.float(), x.float() @ weight.float().T, rtol=2 ** -7, atol=1e-2)


def test_bf16_rows_are_the_fp32_sum_rounded_to_bf16():
    torch.manual_seed(0)
    weight, x = torch.randn(64, 96).bfloat16(), torch.randn(33, 96).bfloat16()
    got = KERNELS.amx_bf16_linear(x, tile_order(weight), 64, None)
    torch.testing.assert_close(got.float(), x.float() @ weight.float().T, rtol=2 ** -8, atol=1e-4)


@pytest.mark.parametrize("rows, on_amx", [(1, True), (PROMPT_FROM_ROWS - 1, True), (PROMPT_FROM_ROWS, False)])
def test_bf16_layers_run_batches_below_a_prefills_size_on_amx(rows, on_amx):
    torch.manual_seed(0)
    linear = nn.Linear(64, 32).to(torch.bfloat16)
    layer = PackedLinear(linear)
    layer._amx = counting = _Counting()
    x = torch.randn(rows, 64, dtype=torch.bfloat16)
    want = x.float() @ linear.weight.float().T + linear.bias.float()
    torch.testing.assert_close(layer(x).float(), want, rtol=2 ** -7, atol=1e-2)
    assert counting.calls == int(on_amx)


def test_a_row_gets_the_same_bits_alone_or_in_a_batch():
    x, q, scale, bias, _ = _case(45)
    packed = pack_int8(q)
    batch = KERNELS.amx_int8_linear(x, packed, scale, bias)
    for i in (0, 16, 31, 44):
        assert torch.equal(KERNELS.amx_int8_linear(x[i:i + 1], packed, scale, bias)[0], batch[i])


def test_an_int8_row_of_inf_or_nan_gives_nan_and_leaves_the_others_alone():
    x, q, scale, bias, _ = _case(20)
    x[3, 7] = float("nan")
    got = KERNELS.amx_int8_linear(x, pack_int8(q), scale, bias)
    assert bool(got[3].isnan().all()) and not bool(got[torch.arange(20) != 3].isnan().any())


def test_without_bias_and_with_a_strided_input():
    x, q, scale, bias, want = _case(8, k=64)
    wide = torch.cat([x, x], dim=1)[:, :64]  # rows 128 apart: not contiguous
    got = KERNELS.amx_int8_linear(wide, pack_int8(q), scale, None)
    torch.testing.assert_close(got.float(), want - bias.float(), rtol=2 ** -7, atol=2e-2)


def test_shapes_the_tiles_cannot_take_are_refused():
    q, scale = quantize_int8(torch.randn(64, 40))
    with pytest.raises(RuntimeError, match="multiples of 32"):
        KERNELS.amx_int8_linear(torch.randn(2, 40, dtype=torch.bfloat16), q, scale, None)


@pytest.mark.parametrize("kind, rows, on_amx", [
    (Int4Linear, INT4_GEMV_UP_TO_ROWS, False), (Int4Linear, INT4_GEMV_UP_TO_ROWS + 1, True),
    (Int4Linear, PROMPT_FROM_ROWS - 1, True), (Int4Linear, PROMPT_FROM_ROWS, False),
    (Int8Linear, INT8_AMX_BELOW_ROWS - 1, True), (Int8Linear, INT8_AMX_BELOW_ROWS, False)])
def test_quantized_layers_take_amx_between_a_few_rows_and_a_prompts_size(kind, rows, on_amx):
    """int4: the few-row kernel below, the bf16 copy above; int8 gives prompts to the copy sooner."""
    torch.manual_seed(0)
    layer = kind(nn.Linear(64, 32, bias=False).to(torch.bfloat16))
    layer._amx = counting = _Counting()
    out = layer(torch.randn(rows, 64, dtype=torch.bfloat16))
    assert out.shape == (rows, 32) and counting.calls == int(on_amx)


def test_int8_layers_run_their_batches_on_amx():
    torch.manual_seed(0)
    layer = Int8Linear(nn.Linear(64, 32, bias=False).to(torch.bfloat16))
    x = torch.randn(INT8_AMX_BELOW_ROWS - 1, 64, dtype=torch.bfloat16)
    want = KERNELS.amx_int8_linear(x, layer.qweight, layer.scale, None)
    assert torch.equal(layer(x), want)
    assert layer(x[None]).shape == (1, INT8_AMX_BELOW_ROWS - 1, 32)

