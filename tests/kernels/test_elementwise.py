"""Fused add + RMSNorm, rotary embedding and SiLU-and-mul against their torch references."""

from __future__ import annotations

import pytest
import torch

from kernels import (fused_add_rms_norm, fused_add_rms_norm_ref, rms_norm, rms_norm_ref,
                     rotary_embedding, rotary_embedding_ref, silu_and_mul, silu_and_mul_ref)
from tests.kernels.conftest import DEVICE, TOLERANCES

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ROWS = [1, 7, 33]


def _randn(*shape, dtype):
    return torch.randn(*shape, device=DEVICE).to(dtype)


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("hidden", [64, 100])
@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm(rows, hidden, dtype):
    x, w = _randn(rows, hidden, dtype=dtype), _randn(hidden, dtype=dtype)
    torch.testing.assert_close(rms_norm(x, w, 1e-6), rms_norm_ref(x, w, 1e-6), **TOLERANCES[dtype])


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("hidden", [64, 100])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_add_rms_norm(rows, hidden, dtype):
    x, r, w = _randn(rows, hidden, dtype=dtype), _randn(rows, hidden, dtype=dtype), _randn(hidden, dtype=dtype)
    out, residual = fused_add_rms_norm(x, r, w, 1e-5)
    want_out, want_residual = fused_add_rms_norm_ref(x, r, w, 1e-5)
    # One rounding of the sum: exact on the GPU; the interpreter truncates fp32 -> bf16 casts.
    exact = DEVICE == "cuda" or dtype != torch.bfloat16
    torch.testing.assert_close(residual, want_residual, **(dict(atol=0, rtol=0) if exact else TOLERANCES[dtype]))
    torch.testing.assert_close(out, want_out, **TOLERANCES[dtype])


@pytest.mark.parametrize("tokens", ROWS)
@pytest.mark.parametrize("heads", [(4, 4), (8, 2), (5, 1)])
@pytest.mark.parametrize("head_dim", [16, 24, 64])
@pytest.mark.parametrize("dtype", DTYPES)
def test_rotary_embedding(tokens, heads, head_dim, dtype):
    q = _randn(tokens, heads[0], head_dim, dtype=dtype)
    k = _randn(tokens, heads[1], head_dim, dtype=dtype)
    positions = torch.randint(0, 4096, (tokens,), device=DEVICE).float()
    inv_freq = 1.0 / 10000 ** (torch.arange(0, head_dim, 2, device=DEVICE).float() / head_dim)
    freqs = positions[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), -1)
    cos, sin = emb.cos().to(dtype)[:, None, :], emb.sin().to(dtype)[:, None, :]  # as the engine makes them
    got_q, got_k = rotary_embedding(q, k, cos, sin)
    want_q, want_k = rotary_embedding_ref(q, k, cos, sin)
    torch.testing.assert_close(got_q, want_q, **TOLERANCES[dtype])
    torch.testing.assert_close(got_k, want_k, **TOLERANCES[dtype])


def test_rotary_on_a_strided_qkv_split():
    """q and k as the model makes them: views into one fused QKV projection."""
    qkv = _randn(5, (4 + 2 + 2) * 16, dtype=torch.float32)
    q, k, _ = qkv.split([64, 32, 32], -1)
    q, k = q.view(5, 4, 16), k.view(5, 2, 16)
    cos, sin = _randn(5, 16, dtype=torch.float32), _randn(5, 16, dtype=torch.float32)
    cos, sin = torch.cat((cos[:, :8], cos[:, :8]), -1), torch.cat((sin[:, :8], sin[:, :8]), -1)
    for got, want in zip(rotary_embedding(q, k, cos, sin), rotary_embedding_ref(q, k, cos, sin)):
        torch.testing.assert_close(got, want, **TOLERANCES[torch.float32])


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("d", [8, 96, 1500])
@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_and_mul(rows, d, dtype):
    x = _randn(rows, 2 * d, dtype=dtype) * 3
    torch.testing.assert_close(silu_and_mul(x), silu_and_mul_ref(x), **TOLERANCES[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_large(dtype):
    x, r, w = _randn(4096, 4096, dtype=dtype), _randn(4096, 4096, dtype=dtype), _randn(4096, dtype=dtype)
    torch.testing.assert_close(fused_add_rms_norm(x, r, w, 1e-5)[0],
                               fused_add_rms_norm_ref(x, r, w, 1e-5)[0], **TOLERANCES[dtype])
    g = _randn(4096, 2 * 14336, dtype=dtype)
    torch.testing.assert_close(silu_and_mul(g), silu_and_mul_ref(g), **TOLERANCES[dtype])
