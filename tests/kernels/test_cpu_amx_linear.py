"""dyno's AMX int8 linear (engine/csrc/amx_linear.cpp): bf16 rows times int8 weights with a
scale per output channel, as `--quantization int8` layers run batches of up to AMX_UP_TO_ROWS
rows. Each row's result is its fp32 sum rounded once to bf16, whatever the batch holds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine import cpu_kernels
from engine.models.quant_linear import AMX_UP_TO_ROWS, Int8Linear, pack_int8_for_amx, quantize_int8

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


@pytest.mark.parametrize("rows", [1, 15, 16, 17, 32, 33, 100])
def test_rows_are_the_fp32_sum_rounded_to_bf16(rows):
    x, q, scale, bias, want = _case(rows)
    got = KERNELS.amx_int8_linear(x, pack_int8_for_amx(q), scale, bias)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, 64)
    torch.testing.assert_close(got.float(), want, rtol=2 ** -8, atol=1e-4)


def test_a_row_gets_the_same_bits_alone_or_in_a_batch():
    x, q, scale, bias, _ = _case(45)
    packed = pack_int8_for_amx(q)
    batch = KERNELS.amx_int8_linear(x, packed, scale, bias)
    for i in (0, 16, 31, 44):
        assert torch.equal(KERNELS.amx_int8_linear(x[i:i + 1], packed, scale, bias)[0], batch[i])


def test_without_bias_and_with_a_strided_input():
    x, q, scale, bias, want = _case(8, k=64)
    wide = torch.cat([x, x], dim=1)[:, :64]  # rows 128 apart: not contiguous
    got = KERNELS.amx_int8_linear(wide, pack_int8_for_amx(q), scale, None)
    torch.testing.assert_close(got.float(), want - bias.float(), rtol=2 ** -8, atol=1e-4)


def test_shapes_the_tiles_cannot_take_are_refused():
    q, scale = quantize_int8(torch.randn(64, 40))
    with pytest.raises(RuntimeError, match="multiples of 32"):
        KERNELS.amx_int8_linear(torch.randn(2, 40, dtype=torch.bfloat16), q, scale, None)


def test_int8_layers_run_their_batches_on_amx():
    torch.manual_seed(0)
    layer = Int8Linear(nn.Linear(64, 32, bias=False).to(torch.bfloat16))
    x = torch.randn(AMX_UP_TO_ROWS - 1, 64, dtype=torch.bfloat16)
    want = KERNELS.amx_int8_linear(x, layer.qweight, layer.scale, None)
    assert torch.equal(layer(x), want)
    assert layer(x[None]).shape == (1, AMX_UP_TO_ROWS - 1, 32)
