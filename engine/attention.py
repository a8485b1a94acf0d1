"""Paged attention behind one interface; this is the plain-torch backend (the CPU path).

The flat batch puts one-token decodes first, then prefill chunks. Decodes are attended in one
batched call over their gathered contexts; each prefill chunk is one call over its own context.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine import cpu_kernels


@dataclass(slots=True)
class PrefillSpan:
    start: int  # first row of this chunk in the flat batch
    end: int
    kv_slots: torch.Tensor  # [context_len] cache slots of its whole context, chunk included
    mask: torch.Tensor | None  # [q_len, context_len] bool; None: plain causal, no cached prefix


@dataclass(slots=True)
class PromptBatch:
    """The step's prompt chunks back to back, for one call of the C++ prompt kernel."""

    query_starts: torch.Tensor  # [chunks + 1] rows from the first chunk's first row
    slots: torch.Tensor  # every chunk's context slots (PrefillSpan.kv_slots), back to back
    context_starts: torch.Tensor  # [chunks + 1] offsets into slots

    @classmethod
    def of(cls, spans: list[PrefillSpan]) -> "PromptBatch":
        first = spans[0].start
        lengths = torch.tensor([0] + [s.kv_slots.shape[0] for s in spans])
        return cls(torch.tensor([s.start - first for s in spans] + [spans[-1].end - first]),
                   torch.cat([s.kv_slots for s in spans]), lengths.cumsum(0))


@dataclass(slots=True)
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [num_tokens] cache slot each new key/value is written to
    num_decodes: int
    # Decodes read whole blocks: one contiguous copy per block beats one per token.
    decode_block_table: torch.Tensor | None  # [num_decodes, max_blocks], padded with block 0
    decode_mask: torch.Tensor | None  # [num_decodes, 1, 1, max_blocks * block_size] bool, True = attend
    prefills: list[PrefillSpan]
    decode_context_lens: torch.Tensor | None = None  # [num_decodes] int64, the new token included
    prompts: PromptBatch | None = None  # the prefills again, for the C++ kernel on the CPU

    def to(self, device: torch.device) -> "AttentionMetadata":
        """A copy on `device` (the runner builds metadata on the CPU)."""
        def move(t):
            return None if t is None else t.to(device, non_blocking=True)
        spans = [PrefillSpan(s.start, s.end, move(s.kv_slots), move(s.mask)) for s in self.prefills]
        return AttentionMetadata(move(self.slot_mapping), self.num_decodes,
                                 move(self.decode_block_table), move(self.decode_mask), spans,
                                 move(self.decode_context_lens))  # prompts: read on the CPU only


@dataclass(slots=True)
class KVCacheLayer:
    """One layer's cache: keys and values by slot, with the scales an fp8 cache stores them under."""

    kv: torch.Tensor  # [2, num_slots, num_kv_heads, head_dim]
    block_size: int
    k_scale: float = 1.0
    v_scale: float = 1.0

    @property
    def is_fp8(self) -> bool:
        return self.kv.dtype in (torch.float8_e4m3fn, torch.float8_e5m2)


class TorchAttention:
    """Reads and writes the paged cache with index ops and attends with torch's SDPA; decodes
    go through dyno's C++ kernel (engine/csrc) where it built, which reads the blocks in place
    instead of gathering a copy (bf16 at 32 sequences: 0.70 vs 0.95-1.03 ms per layer; fp32
    0.76 vs 1.7-5 ms), and bf16 prompts through its AMX prompt kernel where the CPU has AMX."""

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float,
                 sliding_window: int | None = None) -> None:
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = scale
        self.window = sliding_window or 0
        self.kernels = cpu_kernels.load() if torch.get_default_device().type == "cpu" else None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: KVCacheLayer,
                meta: AttentionMetadata) -> torch.Tensor:
        """q: [num_tokens, num_heads, head_dim]; k, v: [num_tokens, num_kv_heads, head_dim]."""
        self._write(k, v, cache, meta.slot_mapping)
        if not meta.prefills:  # a decode-only step: no output to assemble
            return self._decode(q, cache, meta).reshape(q.shape[0], self.num_heads * self.head_dim)
        out = torch.empty_like(q)
        if meta.num_decodes:
            out[:meta.num_decodes] = self._decode(q[:meta.num_decodes], cache, meta)
        first = meta.prefills[0].start
        if meta.prompts is not None and self._prompts_in_kernel(q, cache):
            prompts = self.kernels.prefill_attention(
                q[first:], cache.kv, meta.prompts.query_starts, meta.prompts.slots,
                meta.prompts.context_starts, self.window, self.scale, cache.k_scale, cache.v_scale)
            if not meta.num_decodes:  # a prompts-only step: no output to assemble
                return prompts.view(q.shape[0], self.num_heads * self.head_dim)
            out[first:] = prompts
        else:
            for span in meta.prefills:
                out[span.start:span.end] = self._prefill(q[span.start:span.end], cache, span)
        return out.view(q.shape[0], self.num_heads * self.head_dim)

    def _prompts_in_kernel(self, q: torch.Tensor, cache: KVCacheLayer) -> bool:
        """dyno's prompt kernel takes bf16 queries with head_dim 64 over a bf16 or fp8 cache, on
        AMX or else AVX-512 BF16 (16 prompts of 128 tokens: 1.2 vs 3.0 ms a layer through SDPA
        on AMX, which reads a gathered copy per prompt; a 150-token prompt over an fp8 cache
        without AMX: 0.7 ms through the gather and SDPA)."""
        return (self._in_place(cache) and q.dtype == torch.bfloat16 and self.head_dim == 64
                and cache.kv.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2)
                and (self.kernels.amx_available() or self.kernels.vnni_available()))

    def _in_place(self, cache: KVCacheLayer) -> bool:
        return _kernels_read(self.kernels, cache)

    def _write(self, k, v, cache: KVCacheLayer, slots: torch.Tensor) -> None:
        kv = cache.kv
        if self._in_place(cache):
            if cache.is_fp8:
                self.kernels.kv_write_fp8(kv, k, v, slots, cache.k_scale, cache.v_scale)
            else:
                self.kernels.kv_write(kv, k, v, slots)
            return
        if cache.is_fp8:
            # CPU index ops have no fp8 kernels: move the bytes as uint8.
            k = (k / cache.k_scale).to(kv.dtype).view(torch.uint8)
            v = (v / cache.v_scale).to(kv.dtype).view(torch.uint8)
            kv = kv.view(torch.uint8)
        kv[0].index_copy_(0, slots, k)
        kv[1].index_copy_(0, slots, v)

    def _read(self, cache: KVCacheLayer, slots: torch.Tensor, dtype: torch.dtype):
        if not cache.is_fp8:
            return cache.kv[0][slots], cache.kv[1][slots]
        raw = cache.kv.view(torch.uint8)
        k = raw[0][slots].view(cache.kv.dtype).to(dtype) * cache.k_scale
        v = raw[1][slots].view(cache.kv.dtype).to(dtype) * cache.v_scale
        return k, v

    def _read_blocks(self, cache: KVCacheLayer, block_ids: torch.Tensor, dtype: torch.dtype):
        raw = cache.kv.view(torch.uint8) if cache.is_fp8 else cache.kv
        blocks = raw.view(2, -1, cache.block_size, self.num_kv_heads, self.head_dim)
        k, v = blocks[0].index_select(0, block_ids), blocks[1].index_select(0, block_ids)
        if cache.is_fp8:
            k = k.view(cache.kv.dtype).to(dtype) * cache.k_scale
            v = v.view(cache.kv.dtype).to(dtype) * cache.v_scale
        return k, v

    def _decode(self, q, cache: KVCacheLayer, meta: AttentionMetadata) -> torch.Tensor:
        if self._in_place(cache):
            return self.kernels.paged_decode(q, cache.kv, meta.decode_block_table,
                                             meta.decode_context_lens, cache.block_size,
                                             self.window, self.scale, cache.k_scale, cache.v_scale)
        num_decodes, max_blocks = meta.decode_block_table.shape
        k, v = self._read_blocks(cache, meta.decode_block_table.flatten(), q.dtype)
        k = k.view(num_decodes, -1, self.num_kv_heads, self.head_dim)  # [num_decodes, max_len, kv_heads, dim]
        v = v.view(num_decodes, -1, self.num_kv_heads, self.head_dim)
        out = F.scaled_dot_product_attention(
            q.unsqueeze(2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=meta.decode_mask,
            scale=self.scale, enable_gqa=True)  # [num_decodes, heads, 1, dim]
        return out.squeeze(2)

    def _prefill(self, q, cache: KVCacheLayer, span: PrefillSpan) -> torch.Tensor:
        k, v = self._read(cache, span.kv_slots, q.dtype)  # [context_len, kv_heads, dim]
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1).unsqueeze(0), k.transpose(0, 1).unsqueeze(0),
            v.transpose(0, 1).unsqueeze(0), attn_mask=span.mask, is_causal=span.mask is None,
            scale=self.scale, enable_gqa=True)  # [1, heads, q_len, dim]
        return out[0].transpose(0, 1)


def _kernels_read(kernels, cache: KVCacheLayer) -> bool:
    """Whether dyno's C++ kernels read and write this cache in place (any dtype)."""
    return kernels is not None and cache.kv.device.type == "cpu"


def reads_past_context(cache: KVCacheLayer) -> bool:
    """Whether decodes read this cache's slots past a context's end, weighing them by zero: the
    gather + SDPA path does (so stale NaN there would spread); dyno's C++ and Triton kernels
    stop at each context's end."""
    if backend_name() == "triton":
        return False
    kernels = cpu_kernels.load() if torch.get_default_device().type == "cpu" else None
    return not _kernels_read(kernels, cache)


_BACKENDS = ("auto", "torch", "triton")


def backend_name() -> str:
    """torch or triton, for the device the model is built on (torch's default device): Triton on
    CUDA, torch on the CPU; DYNO_ATTENTION_BACKEND=torch|triton overrides."""
    name = os.environ.get("DYNO_ATTENTION_BACKEND", "auto")
    if name not in _BACKENDS:
        raise ValueError(f"DYNO_ATTENTION_BACKEND={name!r} is not one of {', '.join(_BACKENDS)}")
    if name == "auto":
        name = "triton" if torch.get_default_device().type == "cuda" else "torch"
    return name


def make_attention(num_heads: int, num_kv_heads: int, head_dim: int, scale: float,
                   sliding_window: int | None = None):
    if backend_name() == "torch":
        return TorchAttention(num_heads, num_kv_heads, head_dim, scale, sliding_window)
    from engine.triton_attention import TritonAttention  # imports triton: only on this path

    return TritonAttention(num_heads, num_kv_heads, head_dim, scale, sliding_window)
