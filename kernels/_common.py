"""Helpers shared by the kernel modules: launcher checks and sizes, and one jit matmul."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
# Whether triton.jit made interpreter functions: decided once, when the kernel modules import.
INTERPRETED = bool(triton.knobs.runtime.interpret)
# A window wider than any context: the kernels take one integer, never a branch on "no window".
NO_WINDOW = 1 << 30


def interpreted() -> bool:
    """True when the kernels run in Triton's interpreter (TRITON_INTERPRET=1 before import)."""
    return INTERPRETED


def next_pow2(n: int, at_least: int = 1) -> int:
    return max(at_least, 1 << max(0, n - 1).bit_length())


def dot_mode(dtype: torch.dtype) -> dict:
    """Constexprs for `mm`: fp32 inputs multiply in full fp32 ("ieee"), not TF32. Triton's
    interpreter multiplies bf16 tiles wrongly, so there they are upcast to fp32 first."""
    upcast = dtype == torch.bfloat16 and INTERPRETED
    return dict(PRECISION="ieee" if dtype == torch.float32 or upcast else "tf32", UPCAST=upcast)


@triton.jit
def load_kv_tile(k_cache_ptr, v_cache_ptr, table_ptr, pos, valid, d, seq, kv_head, k_scale, v_scale,
                 stride_table, stride_c_slot, stride_c_head, dtype: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                 HEAD_DIM: tl.constexpr, IS_FP8: tl.constexpr):
    """Keys and values at positions `pos` of one sequence, found through its block table;
    positions not `valid` read as 0 (never loaded). fp8 caches come back dequantized to dtype."""
    block = tl.load(table_ptr + seq * stride_table + pos // BLOCK_SIZE, mask=valid, other=0)
    slot = block.to(tl.int64) * BLOCK_SIZE + pos % BLOCK_SIZE
    offs = slot[:, None] * stride_c_slot + kv_head * stride_c_head + d[None, :]
    kv_mask = valid[:, None] & (d[None, :] < HEAD_DIM)
    k = tl.load(k_cache_ptr + offs, mask=kv_mask, other=0.0)  # [TILE, DIM_PAD]
    v = tl.load(v_cache_ptr + offs, mask=kv_mask, other=0.0)
    if IS_FP8:
        k = (k.to(tl.float32) * k_scale).to(dtype)
        v = (v.to(tl.float32) * v_scale).to(dtype)
    return k, v


@triton.jit
def mm(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b with an fp32 result."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION)


def check_kv_cache(kv_cache: torch.Tensor, block_size: int) -> tuple[int, int, int]:
    """kv_cache: [2, num_slots, num_kv_heads, head_dim]; returns those last three sizes."""
    assert kv_cache.dim() == 4 and kv_cache.shape[0] == 2, "kv_cache must be [2, slots, kv_heads, dim]"
    assert kv_cache.dtype in FLOAT_DTYPES + FP8_DTYPES, f"unsupported kv_cache dtype {kv_cache.dtype}"
    assert kv_cache.stride(-1) == 1, "kv_cache's head_dim must be contiguous"
    assert kv_cache.shape[1] % block_size == 0, "kv_cache slots must be whole blocks"
    return kv_cache.shape[1], kv_cache.shape[2], kv_cache.shape[3]


def window_or_none(sliding_window: int | None) -> int:
    return sliding_window if sliding_window else NO_WINDOW


def gather_slots(cache: torch.Tensor, slots: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """cache[slots] in `dtype`, dequantized if fp8 (CPU index ops have no fp8 kernels: gather bytes)."""
    if cache.dtype not in FP8_DTYPES:
        return cache[slots]
    return cache.view(torch.uint8)[slots].view(cache.dtype).to(dtype) * scale
