"""Weight-only quantized linear layers (--quantization int8 | int4), for the CPU.

A decode step at a few dozen sequences reads every weight once and does little arithmetic on
it, so its time is the weights' bytes over memory bandwidth: int8 halves them and int4 quarters
them. All linears of the default model, ms, in one run (engine/csrc's kernels; torch's):

    rows          1      4      8     32    128    256    512
    bf16        11.7   11.7   11.9   12.8   27.1   46.4   69.6
    AMX int8     5.7    6.3    6.4    9.0   22.3   47.7   96.4
    AMX int4     7.0    6.8    6.8    7.2   21.0   36.7   70.4
    VNNI int4    2.8    4.4
    torch int4   4.1    7.2   12.2   41.2  155.4

Another run, torch's plain bf16 matmul of the dequantized weight against the AMX kernels:

    rows             256    512   1024
    bf16 (torch)    46.8   60.6  118.6
    AMX int8        38.8   67.0  139.8
    AMX int4        30.1   57.5  120.2

With AMX, an int4 layer takes engine/csrc/gemv.cpp's kernel for batches of one to
INT4_GEMV_UP_TO_ROWS rows (one to a few sequences decoding: it reads the weights at memory
speed, all int4 linears of the default model from a cold cache in 3.7 ms against torch's
5.3-5.5; it quantizes those rows to 15 bits and sums in integers); both methods take the AMX
kernels below amx_below_rows (int8 on AMX-INT8 with its rows quantized the same way: the
lm_head in 1.4-1.5 ms at 1 to 32 rows against 1.9-2.5 converting its weights to bf16), and from
there (prompts) the dequantized weight in bf16 through engine/models/prompt_linear.py's kernel:
the same weights at bf16's speed, at the cost of holding both copies.

On a CPU with AVX-512 VNNI but no AMX (AMD Zen 4/5), where bf16 matmuls are bound by arithmetic
from a few dozen rows, int4 and int8 layers keep no bf16 copy: every batch takes
engine/csrc/vnni_linear.cpp's kernels, which multiply bytes (rows quantized per group of 32):
on two Zen 5 cores 1.3-2x oneDNN's bf16 matmul from 32 rows to 2048, and ahead of torch's and
the few-row kernel at one to four. An int4 + fp8 decode step at 32 sequences 23.7 -> 21.1 ms, a
2048-token prompt step 813 -> 736. Elsewhere without AMX, batches of DENSE_FROM_ROWS rows or
more take the bf16 copy (packed for oneDNN) and smaller ones torch's kernels.

int8: one symmetric scale per output channel. int4: asymmetric, one scale and zero point per
group of 32 input channels, as torch's int4 CPU kernel takes them. Activations stay in the
model dtype (the integer kernels quantize their rows: the AMX-INT8 and few-row kernels to 15
bits, finer than bf16 for all but tiny values; the VNNI kernels to bytes per group of 32);
a quantized model runs in bf16.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.models import amx_layout
from engine.models.decode_stack import KernelSpec
from engine.models.packed_linear import PackedLinear, can_pack
from engine.models.prompt_linear import PROMPT_FROM_ROWS, PromptLinear

METHODS = ("int8", "int4")
INT4_GROUP = 32
# without AMX, int4 decode steps in the engine: ahead at 6 rows (22.0 vs 22.7 ms), behind at 8
DENSE_FROM_ROWS = 8
# With AMX, int4 batches of up to this many rows take the few-row kernel (all linears of the
# default model from a cold cache at 4 rows: 5.2 ms against the AMX kernel's 6-7). int8 has no
# such kernel: AMX-INT8 reads the weights as they are, at 1 to 4 rows as fast as VNNI did.
INT4_GEMV_UP_TO_ROWS = 4
# int8 batches below this many rows take AMX-INT8 (from 512 rows it falls behind the bf16 copy
# through torch; table above); int4 ones go on to prompt_linear.PROMPT_FROM_ROWS.
INT8_AMX_BELOW_ROWS = 256
VNNI_BELOW_ROWS = 1 << 30  # the VNNI kernels take batches of every size
_INNER_K_TILES = 2  # the int4 packing's K tiling; 2 is what the CPU kernel is tuned for


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight [N, K], per-channel scale [N]) with weight ≈ q * scale."""
    w = weight.float()
    scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def quantize_int4(weight: torch.Tensor, group: int = INT4_GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes 0..15 as int32 [N, K], scales_and_zeros [K // group, N, 2]) with
    weight ≈ (code - 8) * scale + zero, per group of `group` input channels."""
    n, k = weight.shape
    w = weight.float().reshape(n, k // group, group)
    low, high = w.amin(dim=-1), w.amax(dim=-1)
    scale = ((high - low) / 15).clamp(min=1e-8)
    zero = low + 8 * scale
    codes = torch.round((w - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32)
    scales_and_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()
    return codes.reshape(n, k), scales_and_zeros


def dequantize_int4(codes: torch.Tensor, scales_and_zeros: torch.Tensor,
                    group: int = INT4_GROUP) -> torch.Tensor:
    """The float weight the int4 kernel computes with (for tests and agreement checks)."""
    n, k = codes.shape
    scale, zero = scales_and_zeros.transpose(0, 1).unbind(-1)  # [N, K // group] each
    w = (codes.reshape(n, k // group, group).float() - 8) * scale[..., None] + zero[..., None]
    return w.reshape(n, k)


class _DenseCopy(nn.Linear):
    """A quantized layer's dequantized bf16 weight as a plain linear. Its own type, so that
    packed_linear.pack_linears (which swaps every nn.Linear of the model) leaves it be: it had
    given each one a third copy of the weights, in tile order, that nothing read."""


class _WeightOnlyLinear(nn.Module):
    """Shared by both methods: the kernels take 2-D activations; torch's get the bias added after."""

    gemv_up_to_rows = 0
    amx_below_rows: int | None = None  # None: PROMPT_FROM_ROWS

    def __init__(self, linear: nn.Linear, dequantized: torch.Tensor, gate_up: bool = False,
                 vnni=None) -> None:
        super().__init__()
        self._amx = amx_layout.kernels_for(dequantized)
        self._vnni = vnni  # without AMX: VNNI kernels for every batch, and no bf16 copy
        self.bias = linear.bias
        self.out_features = linear.out_features
        if self._amx is not None:  # prompts take the bf16 copy in tile order
            self.dense = PromptLinear(dequantized, linear.bias, self._amx, gate_up)
            return
        if vnni is not None:
            self.dense = None
            return
        # skip_init: the random init its weight would get first took ~0.4 s of a load
        dense = torch.nn.utils.skip_init(_DenseCopy, linear.in_features, linear.out_features,
                                         bias=linear.bias is not None, device=dequantized.device)
        dense.weight = nn.Parameter(dequantized.to(torch.bfloat16), requires_grad=False)
        dense.bias = linear.bias
        # Without AMX the dense copy takes small batches too, where packing it wins.
        packable = can_pack(torch.bfloat16, dense.weight.device)
        self.dense = PackedLinear(dense, keep_weight=False) if packable else dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:  # the engine passes [tokens, features]; others may not
            return self.forward(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)
        rows = x.shape[0]
        if self._vnni is not None:
            return self._vnni_matmul(x)
        if self._amx is None:
            if rows >= DENSE_FROM_ROWS:
                return self.dense(x)
            out = self._matmul(x)
            return out if self.bias is None else out + self.bias
        if rows <= self.gemv_up_to_rows:
            return self._gemv(x)
        if rows < self.amx_rows:
            return self._amx_matmul(x)
        return self.dense(x)

    @property
    def amx_rows(self) -> int:
        """With AMX, batches below this many rows take the AMX kernels."""
        return self.amx_below_rows or PROMPT_FROM_ROWS

    def silu_and_mul(self, x: torch.Tensor) -> torch.Tensor | None:
        """SiLU(gate) * up straight from a gate/up layer's prompt kernel; None for batches (or
        layers) it does not take."""
        if (self._amx is None or not self.dense.gate_up or x.dim() != 2 or x.shape[0] < self.amx_rows):
            return None
        return self.dense.silu_and_mul(x)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _gemv(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _amx_matmul(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _vnni_matmul(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Int8Linear(_WeightOnlyLinear):
    amx_below_rows = INT8_AMX_BELOW_ROWS

    def __init__(self, linear: nn.Linear, gate_up: bool = False) -> None:
        q, scale = quantize_int8(linear.weight.detach())
        scale = scale.to(torch.bfloat16)
        super().__init__(linear, q.float() * scale.float()[:, None], gate_up,
                         amx_layout.vnni_kernels_for(linear.weight))
        if self._vnni is not None:
            self.register_buffer("qweight", amx_layout.pack_int8_vnni(q))
            self.register_buffer("scale", scale.float())
        elif self._amx is not None:  # then torch's int8 kernel is never called
            self.register_buffer("qweight", amx_layout.pack_int8(q))
            self.register_buffer("scale", scale.float())
        else:
            self.register_buffer("qweight", q)
            self.register_buffer("scale", scale)

    def _amx_matmul(self, x: torch.Tensor) -> torch.Tensor:
        return self._amx.amx_int8_linear(x, self.qweight, self.scale, self.bias)

    def _vnni_matmul(self, x: torch.Tensor) -> torch.Tensor:
        return self._vnni.vnni_int8_linear(x, self.qweight, self.scale, self.bias)

    def kernel_spec(self) -> KernelSpec | None:
        if self._vnni is not None:
            return KernelSpec("int8_vnni", self.qweight, self.scale, self.out_features, self.bias, VNNI_BELOW_ROWS)
        if self._amx is None:
            return None
        return KernelSpec("int8", self.qweight, self.scale, self.scale.numel(), self.bias, self.amx_rows)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x, self.qweight, self.scale)


class Int4Linear(_WeightOnlyLinear):
    gemv_up_to_rows = INT4_GEMV_UP_TO_ROWS
    silu_fused = False  # set in __init__ for a gate/up layer on AMX or VNNI

    def __init__(self, linear: nn.Linear, gate_up: bool = False) -> None:
        codes, scales_and_zeros = quantize_int4(linear.weight.detach())
        scales_and_zeros = scales_and_zeros.to(torch.bfloat16)
        super().__init__(linear, dequantize_int4(codes, scales_and_zeros.float()), gate_up,
                         amx_layout.vnni_kernels_for(linear.weight))
        if self._vnni is not None:
            # VNNI takes every batch, the few-row kernel none (all int4 linears of the default
            # model from a cold cache at one row 1.64 vs 1.77 ms on it, at four 2.29 vs 2.78),
            # and a gate/up layer's codes interleaved give SiLU-and-mul on the way out, as on AMX.
            self.silu_fused = gate_up and self.bias is None
            for name, t in zip(("vnni_codes", "vnni_params"), self._interleaved_if_fused(codes, scales_and_zeros)):
                self.register_buffer(name, t)
        elif self._amx is None:
            self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(
                codes, _INNER_K_TILES))
            self.register_buffer("scales_and_zeros", scales_and_zeros)
        else:  # then torch's int4 kernel is never called
            # A gate/up layer without bias (one bias order would not serve both kernels) keeps
            # its AMX codes interleaved too: its decode batches then give SiLU-and-mul straight
            # from the tiles (the few-row kernel's codes stay in plain order).
            self.silu_fused = gate_up and self.bias is None
            interleaved = self._interleaved_if_fused(codes, scales_and_zeros, amx_layout.pack_int4)
            for name, t in zip(("gemv_codes", "gemv_params", "amx_codes", "amx_params"),
                               amx_layout.pack_int4_gemv(codes, scales_and_zeros) + interleaved):
                self.register_buffer(name, t)

    def _interleaved_if_fused(self, codes, scales_and_zeros, pack=amx_layout.pack_int4_gemv):
        if self.silu_fused:
            codes = amx_layout.interleave_gate_up(codes)
            scales_and_zeros = amx_layout.interleave_gate_up(scales_and_zeros.transpose(0, 1)).transpose(0, 1)
        return pack(codes, scales_and_zeros)

    def _gemv(self, x: torch.Tensor) -> torch.Tensor:
        return self._amx.int4_gemv(x, self.gemv_codes, self.gemv_params, self.bias)

    def _vnni_matmul(self, x: torch.Tensor) -> torch.Tensor:
        out = self._vnni.vnni_int4_linear(x, self.vnni_codes, self.vnni_params, self.bias, False)
        return amx_layout.deinterleave_gate_up(out) if self.silu_fused else out

    def _amx_matmul(self, x: torch.Tensor) -> torch.Tensor:
        out = self._amx.amx_int4_linear(x, self.amx_codes, self.amx_params, self.bias, False)
        return amx_layout.deinterleave_gate_up(out) if self.silu_fused else out

    def silu_and_mul(self, x: torch.Tensor) -> torch.Tensor | None:
        if self._vnni is not None and self.silu_fused and x.dim() == 2:
            return self._vnni.vnni_int4_linear(x, self.vnni_codes, self.vnni_params, None, True)
        if self.silu_fused and x.dim() == 2 and self.gemv_up_to_rows < x.shape[0] < self.amx_rows:
            return self._amx.amx_int4_linear(x, self.amx_codes, self.amx_params, None, True)
        return super().silu_and_mul(x)

    def kernel_spec(self) -> KernelSpec | None:
        if self._vnni is not None:
            return KernelSpec("int4_vnni", self.vnni_codes, self.vnni_params, self.out_features, self.bias,
                              VNNI_BELOW_ROWS, silu_fused=self.silu_fused)
        if self._amx is None:
            return None
        return KernelSpec("int4", self.amx_codes, self.amx_params, self.out_features, self.bias,
                          self.amx_rows, self.gemv_codes, self.gemv_params, self.gemv_up_to_rows,
                          self.silu_fused)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.packed, INT4_GROUP,
                                                         self.scales_and_zeros)


def can_quantize(linear: nn.Linear, method: str) -> bool:
    """int4 needs whole groups of input channels; a layer that has none stays in bf16."""
    return method == "int8" or linear.in_features % INT4_GROUP == 0


def quantize_linears(model: nn.Module, method: str) -> int:
    """Swap the model's nn.Linear layers for quantized ones in place; returns how many.

    Under int4 the output projection (lm_head) takes int8: it alone decides the next token,
    and int4 there costs most of the agreement with fp32 (as llama.cpp keeps its output
    tensor at higher precision)."""
    kind = {"int8": Int8Linear, "int4": Int4Linear}[method]
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear or not can_quantize(child, method):
                continue
            layer = Int8Linear(child) if name == "lm_head" else kind(child, gate_up=name == "gate_up_proj")
            setattr(parent, name, layer)
            swapped += 1
    return swapped
