"""Contract: the torch and Triton attention backends agree on the same step, cache included.

Steps are laid out as the model runner lays them out: one-token decodes first, then prefill
chunks (fresh, or after a cached prefix), each request on its own scattered blocks.
"""

from __future__ import annotations

import pytest
import torch

from engine.attention import AttentionMetadata, KVCacheLayer, PrefillSpan, TorchAttention
from engine.triton_attention import TritonAttention
from tests.kernels.conftest import DEVICE, TOLERANCES


def _step(decode_lens, prefills, block_size, num_blocks, window=None):
    """decode_lens: context lengths of decodes (new token included); prefills: (cached, new)."""
    free = (torch.randperm(num_blocks - 1) + 1).tolist()
    tables = []
    for n in decode_lens + [c + q for c, q in prefills]:
        tables.append(torch.tensor([free.pop() for _ in range(-(-n // block_size))]))

    def slots_of(table, positions):
        return table[positions // block_size] * block_size + positions % block_size

    slot_mapping, spans, row = [], [], len(decode_lens)
    for n, table in zip(decode_lens, tables):
        slot_mapping.append(slots_of(table, torch.tensor([n - 1])))
    decode_table = decode_mask = ctx = None
    if decode_lens:
        max_blocks = max(len(t) for t in tables[:len(decode_lens)])
        decode_table = torch.stack([torch.cat([t, t.new_zeros(max_blocks - len(t))])
                                    for t in tables[:len(decode_lens)]])
        j = torch.arange(max_blocks * block_size)
        ctx = torch.tensor(decode_lens)
        valid = j[None, :] < ctx[:, None]
        if window:
            valid &= j[None, :] >= (ctx - window)[:, None]
        decode_mask = valid[:, None, None, :]
    for (c, q), table in zip(prefills, tables[len(decode_lens):]):
        kv_slots = slots_of(table, torch.arange(c + q))
        slot_mapping.append(kv_slots[c:])
        qpos, kpos = torch.arange(c, c + q)[:, None], torch.arange(c + q)[None, :]
        mask = kpos <= qpos
        if window:
            mask &= kpos > qpos - window
        spans.append(PrefillSpan(row, row + q, kv_slots, None if c == 0 and not window else mask))
        row += q
    meta = AttentionMetadata(torch.cat(slot_mapping), len(decode_lens), decode_table, decode_mask,
                             spans, ctx)
    return meta.to(torch.device(DEVICE)), row


@pytest.mark.parametrize("block_size", [8, 16, 32])
@pytest.mark.parametrize("heads", [(4, 4), (8, 2), (5, 1)])
@pytest.mark.parametrize("window", [None, 10])
def test_backends_agree_on_a_mixed_step(block_size, heads, window):
    _compare([1, 9, 17, 40], [(0, 7), (16, 5), (3, 20), (0, 1)], block_size, heads,
             torch.float32, torch.float32, window)


@pytest.mark.parametrize("cache_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_backends_agree_with_fp8_cache(cache_dtype):
    _compare([5, 33], [(8, 9)], 16, (8, 2), torch.float32, cache_dtype, None, scale=0.05)


def test_backends_agree_on_decodes_only_and_prefills_only():
    _compare([2, 3, 64], [], 8, (4, 2), torch.float32, torch.float32, None)
    _compare([], [(0, 30), (24, 8)], 8, (4, 2), torch.float32, torch.float32, None)


def _compare(decode_lens, prefills, block_size, heads, dtype, cache_dtype, window, scale=1.0):
    num_heads, num_kv_heads = heads
    head_dim, num_blocks = 16, 40
    meta, num_tokens = _step(decode_lens, prefills, block_size, num_blocks, window)
    caches = []
    base = torch.randn(2, num_blocks * block_size, num_kv_heads, head_dim, device=DEVICE) / scale
    for _ in range(2):
        kv = base.to(cache_dtype)
        caches.append(KVCacheLayer(kv.clone(), block_size, k_scale=scale, v_scale=scale))
    q = torch.randn(num_tokens, num_heads, head_dim, device=DEVICE).to(dtype)
    k = torch.randn(num_tokens, num_kv_heads, head_dim, device=DEVICE).to(dtype)
    v = torch.randn(num_tokens, num_kv_heads, head_dim, device=DEVICE).to(dtype)
    args = (num_heads, num_kv_heads, head_dim, head_dim ** -0.5)
    torch_attention = TorchAttention(*args, sliding_window=window)
    want = torch_attention.forward(q, k, v, caches[0], meta)
    if torch_attention.kernels is not None:  # the C++ decode kernel against gather + SDPA
        torch_attention.kernels = None
        plain = torch_attention.forward(q, k, v, KVCacheLayer(
            caches[0].kv.clone(), block_size, k_scale=scale, v_scale=scale), meta)
        torch.testing.assert_close(want, plain, **TOLERANCES[dtype])
    got = TritonAttention(*args, sliding_window=window).forward(q, k, v, caches[1], meta)
    raw = [c.kv.view(torch.uint8) if c.is_fp8 else c.kv for c in caches]
    assert torch.equal(raw[0], raw[1])
    torch.testing.assert_close(got, want, **TOLERANCES[dtype])
