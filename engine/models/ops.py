"""The model's element-wise work (RMSNorm with the residual add, rotary, SiLU-and-mul): plain
torch written exactly as transformers computes it; in bf16 on the CPU, dyno's C++ kernels
(engine/csrc/elementwise.cpp, same roundings, one pass each); Triton kernels on the GPU path."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine import cpu_kernels
from engine.attention import backend_name


class TorchOps:
    @staticmethod
    def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        # Normalize in fp32 and cast back before the weight, as transformers does.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
        return weight * h.to(x.dtype)

    @classmethod
    def add_rms_norm(cls, x, residual, weight, eps) -> tuple[torch.Tensor, torch.Tensor]:
        """(rms_norm(x + residual), x + residual)."""
        total = x + residual
        return cls.rms_norm(total, weight, eps), total

    @staticmethod
    def rotary(q, k, cos, sin) -> tuple[torch.Tensor, torch.Tensor]:
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin

    @staticmethod
    def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
        gate, up = x.chunk(2, dim=-1)
        return F.silu(gate) * up


class CpuOps(TorchOps):
    """bf16 through the C++ kernels; fp32 (the exactness tests' dtype) keeps torch's ops."""

    def __init__(self, kernels) -> None:
        self.kernels = kernels

    def rms_norm(self, x, weight, eps):
        if x.dtype != torch.bfloat16:
            return TorchOps.rms_norm(x, weight, eps)
        return self.kernels.add_rms_norm(x, None, weight, eps)[0]

    def add_rms_norm(self, x, residual, weight, eps):
        if x.dtype != torch.bfloat16:
            return TorchOps.add_rms_norm(x, residual, weight, eps)
        return self.kernels.add_rms_norm(x, residual, weight, eps)

    def rotary(self, q, k, cos, sin):
        if q.dtype != torch.bfloat16:
            return TorchOps.rotary(q, k, cos, sin)
        return self.kernels.rotary(q, k, cos, sin)

    def silu_and_mul(self, x):
        if x.dtype != torch.bfloat16:
            return TorchOps.silu_and_mul(x)
        return self.kernels.silu_and_mul(x)


class TritonOps:
    def __init__(self) -> None:
        import kernels  # imports triton: only on this path

        self.rms_norm = kernels.rms_norm
        self.add_rms_norm = lambda x, residual, weight, eps: kernels.fused_add_rms_norm(x, residual, weight, eps)
        self.rotary = kernels.rotary_embedding
        self.silu_and_mul = kernels.silu_and_mul


def make_ops():
    if backend_name() != "torch":
        return TritonOps()
    kernels = cpu_kernels.load() if torch.get_default_device().type == "cpu" else None
    return TorchOps() if kernels is None else CpuOps(kernels)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
