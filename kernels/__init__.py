"""Triton kernels for the engine's GPU path, each beside a plain-torch reference of the same
signature (the `_ref` functions). Run on the CPU with TRITON_INTERPRET=1 set before import."""

from kernels._common import interpreted
from kernels.activation import silu_and_mul, silu_and_mul_ref
from kernels.decode_attention import paged_decode_attention, paged_decode_attention_ref
from kernels.kv_write import write_kv, write_kv_ref
from kernels.prefill_attention import paged_prefill_attention, paged_prefill_attention_ref
from kernels.rms_norm import fused_add_rms_norm, fused_add_rms_norm_ref, rms_norm, rms_norm_ref
from kernels.rotary import rotary_embedding, rotary_embedding_ref

__all__ = [
    "fused_add_rms_norm", "fused_add_rms_norm_ref", "interpreted", "paged_decode_attention",
    "paged_decode_attention_ref", "paged_prefill_attention", "paged_prefill_attention_ref",
    "rms_norm", "rms_norm_ref", "rotary_embedding", "rotary_embedding_ref", "silu_and_mul",
    "silu_and_mul_ref", "write_kv", "write_kv_ref",
]
