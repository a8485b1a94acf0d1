"""dyno's prompt-sized AMX linear (engine/csrc/amx_gemm.cpp), which `--quantization` layers run
batches of PROMPT_FROM_ROWS rows and more on: each output is its fp32 sum rounded once to bf16,
the same bits the decode kernel gives a row; the gate/up projection can give SiLU(gate) * up
directly, the same bits as the product followed by silu_and_mul."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine import cpu_kernels
from engine.models.amx_layout import interleave_gate_up, tile_order
from engine.models.prompt_linear import PROMPT_FROM_ROWS
from engine.models.quant_linear import INT4_GEMV_UP_TO_ROWS, Int4Linear, dequantize_int4, quantize_int4

KERNELS = cpu_kernels.load()
pytestmark = pytest.mark.skipif(KERNELS is None or not KERNELS.amx_available(),
                                reason="no AMX on this CPU, or dyno's CPU kernels did not build here")


def _case(rows: int, n: int = 96, k: int = 96, seed: int = 0):
    torch.manual_seed(seed)
    x = torch.randn(rows, k, dtype=torch.bfloat16)
    w = (torch.randn(n, k) / k ** 0.5).to(torch.bfloat16)
    bias = torch.randn(n, dtype=torch.bfloat16)
    return x, w, bias


# rows on both sides of the kernel's switch from splitting panels to splitting rows (512), with
# and without a partial last block of 32; 96 outputs: three panels, split unevenly
@pytest.mark.parametrize("rows", [1, 31, 32, 33, 200, 511, 512, 700])
def test_rows_are_the_fp32_sum_rounded_once_and_match_the_decode_kernel(rows):
    x, w, bias = _case(rows)
    got = KERNELS.amx_gemm(x, tile_order(w), 96, bias, False)
    want = (x.float() @ w.float().T + bias.float()).to(torch.bfloat16)
    assert got.shape == (rows, 96) and got.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=2 ** -7, atol=1e-3)
    assert torch.equal(got, KERNELS.amx_bf16_linear(x, tile_order(w), 96, bias))


def test_a_row_gets_the_same_bits_alone_or_in_a_prompt():
    x, w, _ = _case(700, k=1536, seed=1)
    got = KERNELS.amx_gemm(x, tile_order(w), 96, None, False)
    for i in (0, 355, 699):
        assert torch.equal(got[i], KERNELS.amx_gemm(x[i:i + 1], tile_order(w), 96, None, False)[0])


@pytest.mark.parametrize("rows", [7, 600])
def test_fused_silu_and_mul_gives_the_bits_of_the_separate_ops(rows):
    x, w, bias = _case(rows, n=128)
    product = KERNELS.amx_gemm(x, tile_order(w), 128, bias, False)
    fused = KERNELS.amx_gemm(x, tile_order(interleave_gate_up(w)), 128, interleave_gate_up(bias), True)
    assert fused.shape == (rows, 64)
    assert torch.equal(fused, KERNELS.silu_and_mul(product))


def test_a_strided_input_and_refused_shapes():
    x, w, bias = _case(40)
    wide = torch.cat([x, x], dim=1)[:, :96]  # rows 192 apart
    assert torch.equal(KERNELS.amx_gemm(wide, tile_order(w), 96, bias, False),
                       KERNELS.amx_gemm(x, tile_order(w), 96, bias, False))
    with pytest.raises(RuntimeError, match="multiples of 32"):
        KERNELS.amx_gemm(torch.randn(2, 40, dtype=torch.bfloat16), w, 96, None, False)


def test_an_int4_gate_up_layers_prompts_fuse_silu_with_the_bits_of_the_separate_ops():
    torch.manual_seed(0)
    linear = nn.Linear(64, 128, bias=False).to(torch.bfloat16)
    layer = Int4Linear(linear, gate_up=True)
    codes, scales_and_zeros = quantize_int4(linear.weight)
    weight = dequantize_int4(codes, scales_and_zeros.to(torch.bfloat16).float()).to(torch.bfloat16).float()
    x = torch.randn(PROMPT_FROM_ROWS, 64, dtype=torch.bfloat16)
    product = layer(x)  # gate, then up, as a plain layer gives them
    assert product.shape == (PROMPT_FROM_ROWS, 128)
    torch.testing.assert_close(product, (x.float() @ weight.T).to(torch.bfloat16), rtol=2 ** -7, atol=1e-3)
    assert torch.equal(layer.silu_and_mul(x), KERNELS.silu_and_mul(product))


@pytest.mark.parametrize("rows", [INT4_GEMV_UP_TO_ROWS + 1, 32, PROMPT_FROM_ROWS - 1])
def test_an_int4_gate_up_layers_decode_batches_fuse_silu_with_the_same_bits(rows):
    """Between the few-row kernel and prompts, the AMX int4 kernel gives SiLU-and-mul from its
    tiles; the plain product keeps gate-then-up order and the bits of an unfused layer."""
    torch.manual_seed(1)
    linear = nn.Linear(64, 128, bias=False).to(torch.bfloat16)
    fused, plain = Int4Linear(linear, gate_up=True), Int4Linear(linear)
    x = torch.randn(rows, 64, dtype=torch.bfloat16)
    assert torch.equal(fused(x), plain(x))
    assert torch.equal(fused.silu_and_mul(x), KERNELS.silu_and_mul(plain(x)))
    assert fused.silu_and_mul(x[:INT4_GEMV_UP_TO_ROWS]) is None  # the few-row kernel: no fusion
