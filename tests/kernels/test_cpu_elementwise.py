"""dyno's C++ element-wise kernels (engine/csrc/elementwise.cpp) give what transformers' torch
code gives in bf16: the same bits for the residual add, RMSNorm and rotary; SiLU's output may differ by one bf16 step where
exp rounds differently in its last fp32 bit, so a product by at most 2 ** -6 of its size."""

from __future__ import annotations

import pytest
import torch

from engine import cpu_kernels
from engine.models.ops import CpuOps, TorchOps, make_ops
from engine.models.rope import RotaryEmbedding

KERNELS = cpu_kernels.load()
pytestmark = pytest.mark.skipif(KERNELS is None, reason="dyno's CPU kernels did not build here")


@pytest.fixture(params=[1, 7, 33])
def rows(request) -> int:
    torch.manual_seed(request.param)
    return request.param


def test_add_rms_norm_matches_torch_bit_for_bit(rows):
    x, residual = (torch.randn(rows, 576) * 3).bfloat16(), torch.randn(rows, 576).bfloat16()
    weight = (torch.rand(576) + 0.5).bfloat16()
    out, total = KERNELS.add_rms_norm(x, residual, weight, 1e-5)
    want_out, want_total = TorchOps.add_rms_norm(x, residual, weight, 1e-5)
    assert torch.equal(total, want_total) and torch.equal(out, want_out)
    assert torch.equal(KERNELS.add_rms_norm(x, None, weight, 1e-5)[0], TorchOps.rms_norm(x, weight, 1e-5))


def test_a_strided_residual_is_read_as_its_values(rows):
    x = torch.randn(rows, 576).bfloat16()
    residual = torch.randn(576, rows).bfloat16().T  # not contiguous
    weight = (torch.rand(576) + 0.5).bfloat16()
    out, total = KERNELS.add_rms_norm(x, residual, weight, 1e-5)
    want_out, want_total = TorchOps.add_rms_norm(x, residual, weight, 1e-5)
    assert torch.equal(total, want_total) and torch.equal(out, want_out)


def test_rotary_matches_torch_bit_for_bit_on_a_fused_qkv_view(rows):
    q, k, _ = torch.randn(rows, 576 + 2 * 192).bfloat16().split([576, 192, 192], dim=-1)
    q, k = q.view(rows, 9, 64), k.view(rows, 3, 64)  # strided views, as the model passes them

    class Config:
        rope_theta, rope_scaling = 100000.0, None

    cos, sin = RotaryEmbedding(Config(), 64).cos_sin(torch.arange(rows) + 100, torch.bfloat16)
    got, want = KERNELS.rotary(q, k, cos, sin), TorchOps.rotary(q, k, cos, sin)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_silu_and_mul_rarely_differs_from_torch_and_then_by_a_step(rows):
    x = (torch.randn(rows, 2 * 1536) * 2).bfloat16()
    got, want = KERNELS.silu_and_mul(x).float(), TorchOps.silu_and_mul(x).float()
    differ = got != want
    assert int(differ.sum()) <= max(1, got.numel() // 1000)
    assert bool(((got - want).abs() <= want.abs() * 2 ** -6)[differ].all())


def test_float32_keeps_torchs_ops():
    ops = make_ops()
    assert isinstance(ops, CpuOps)
    x, weight = torch.randn(3, 64), torch.rand(64)
    assert torch.equal(ops.rms_norm(x, weight, 1e-6), TorchOps.rms_norm(x, weight, 1e-6))
