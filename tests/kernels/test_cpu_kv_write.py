"""dyno's C++ cache write (engine/csrc/kv_write.cpp) puts each token's key and value rows
where index_copy_ puts them, reading them in place from the fused QKV output."""

from __future__ import annotations

import pytest
import torch

from engine import cpu_kernels

KERNELS = cpu_kernels.load()
pytestmark = pytest.mark.skipif(KERNELS is None, reason="dyno's CPU kernels did not build here")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_land_in_their_slots_as_index_copy_puts_them(dtype):
    torch.manual_seed(0)
    kv = torch.randn(2, 64, 3, 8).to(dtype)
    _, k, v = torch.randn(5, 72 + 2 * 24).to(dtype).split([72, 24, 24], dim=-1)
    k, v = k.view(5, 3, 8), v.view(5, 3, 8)  # strided views of one fused row
    slots = torch.tensor([9, 0, 63, 17, 18])
    want = kv.clone()
    want[0].index_copy_(0, slots, k)
    want[1].index_copy_(0, slots, v)
    KERNELS.kv_write(kv, k, v, slots)
    assert torch.equal(kv, want)


def test_a_slot_outside_the_cache_is_refused():
    kv = torch.zeros(2, 4, 1, 8)
    with pytest.raises(RuntimeError, match="slot out of range"):
        KERNELS.kv_write(kv, torch.ones(1, 1, 8), torch.ones(1, 1, 8), torch.tensor([4]))
