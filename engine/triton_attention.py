"""The Triton attention backend (the GPU path): TorchAttention's interface over kernels/.

New keys and values go into the paged cache first (one launch); then the decodes attend in one
launch, each reading its own block table, and all prefill chunks in another. The per-step
inputs the kernels need beyond AttentionMetadata (decode lengths, the prefills' block tables and
row offsets) are derived once per step and shared by every layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.attention import AttentionMetadata, KVCacheLayer
from kernels import interpreted, paged_decode_attention, paged_prefill_attention, write_kv


@dataclass(slots=True)
class _StepPlan:
    decode_seq_lens: torch.Tensor | None  # [num_decodes]
    block_table: torch.Tensor | None  # [num_prefills, max_blocks], padded with block 0
    query_start: torch.Tensor | None  # [num_prefills + 1], rows relative to the first prefill
    seq_lens: torch.Tensor | None  # [num_prefills] context lengths, new tokens included
    max_query_len: int


_last_plan: tuple[AttentionMetadata, _StepPlan] | None = None


def _plan(meta: AttentionMetadata, block_size: int) -> _StepPlan:
    global _last_plan
    if _last_plan is not None and _last_plan[0] is meta:
        return _last_plan[1]
    plan = _StepPlan(None, None, None, None, 0)
    if meta.num_decodes:
        mask = meta.decode_mask.flatten(1)  # [num_decodes, max_blocks * block_size]
        positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
        plan.decode_seq_lens = torch.where(mask, positions, 0).amax(1)  # last attended + 1
    if meta.prefills:
        first = meta.prefills[0].start
        tables = [span.kv_slots[::block_size] // block_size for span in meta.prefills]
        plan.block_table = torch.nn.utils.rnn.pad_sequence(tables, batch_first=True)
        device = meta.slot_mapping.device
        starts = [span.start - first for span in meta.prefills] + [meta.prefills[-1].end - first]
        plan.query_start = torch.tensor(starts, dtype=torch.int32, device=device)
        plan.seq_lens = torch.tensor([span.kv_slots.shape[0] for span in meta.prefills],
                                     dtype=torch.int32, device=device)
        plan.max_query_len = max(span.end - span.start for span in meta.prefills)
    _last_plan = (meta, plan)
    return plan


class TritonAttention:
    """Paged attention in Triton kernels; same forward as TorchAttention."""

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float,
                 sliding_window: int | None = None) -> None:
        if torch.get_default_device().type != "cuda" and not interpreted():
            raise ValueError("the Triton attention backend runs on CUDA, or on the CPU only in "
                             "Triton's interpreter: set TRITON_INTERPRET=1, or use "
                             "DYNO_ATTENTION_BACKEND=torch")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = scale
        self.sliding_window = sliding_window

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: KVCacheLayer,
                meta: AttentionMetadata) -> torch.Tensor:
        """q: [num_tokens, num_heads, head_dim]; k, v: [num_tokens, num_kv_heads, head_dim]."""
        bs = cache.block_size
        plan = _plan(meta, bs)
        write_kv(k, v, cache.kv, meta.slot_mapping, cache.k_scale, cache.v_scale)
        out = torch.empty_like(q)
        nd = meta.num_decodes
        if nd:
            paged_decode_attention(q[:nd], cache.kv, meta.decode_block_table, plan.decode_seq_lens,
                                   self.scale, bs, cache.k_scale, cache.v_scale,
                                   self.sliding_window, out=out[:nd])
        if meta.prefills:
            paged_prefill_attention(q[nd:], cache.kv, plan.block_table, plan.query_start,
                                    plan.seq_lens, plan.max_query_len, self.scale, bs,
                                    cache.k_scale, cache.v_scale, self.sliding_window,
                                    out=out[nd:])
        return out.view(q.shape[0], self.num_heads * self.head_dim)
