"""engine/kv_cache_manager.py: block ids per request, prefix-cache hits, eviction order, stats."""

import pytest

from engine.kv_cache_manager import KVCacheManager
from tests.engine.factories import BLOCK_SIZE, chain_hashes, create_requests, ref_counts


def make_manager(num_blocks: int = 11, enable_caching: bool = True) -> KVCacheManager:
    return KVCacheManager(num_blocks, BLOCK_SIZE, enable_caching)


def allocate_prompt(manager: KVCacheManager, request) -> list[int]:
    """Admit a request as the scheduler does: cache hits, then slots for the rest of the prompt."""
    computed, num_hit = manager.get_computed_blocks(request)
    blocks = manager.allocate_slots(request, request.num_tokens - num_hit, computed)
    assert blocks is not None
    request.num_computed_tokens = request.num_tokens
    return blocks.get_block_ids()


def test_allocate_a_prompt_and_hash_its_full_blocks():
    manager = make_manager()
    (req,) = create_requests(1, 40)
    computed, num_hit = manager.get_computed_blocks(req)
    assert computed.get_block_ids() == [] and num_hit == 0
    blocks = manager.allocate_slots(req, 40, computed)
    assert blocks.get_block_ids() == [1, 2, 3]
    assert manager.get_block_ids("0") == [1, 2, 3]
    pool = manager.pool
    hashes = chain_hashes(req.all_token_ids)
    assert [pool.blocks[i].block_hash for i in (1, 2, 3)] == [hashes[0], hashes[1], None]
    assert manager.num_free_blocks == 7
    assert pool.free_block_ids() == [4, 5, 6, 7, 8, 9, 10]


def test_decode_allocates_a_block_only_when_the_last_one_is_full():
    manager = make_manager()
    (req,) = create_requests(1, 15)
    assert allocate_prompt(manager, req) == [1]
    assert manager.pool.blocks[1].block_hash is None
    req.append_token(7)  # 16 tokens: this step fills block 1
    assert manager.allocate_slots(req, 1).get_block_ids() == []
    req.num_computed_tokens += 1
    assert manager.pool.blocks[1].block_hash == chain_hashes(req.all_token_ids)[0]
    req.append_token(7)  # 17 tokens: a second block
    assert manager.allocate_slots(req, 1).get_block_ids() == [2]
    assert manager.get_block_ids("0") == [1, 2]


def test_same_prefix_shares_block_ids():
    manager = make_manager()
    (req0,) = create_requests(1, prompt=[5] * 32 + [6] * 8)
    (req1,) = create_requests(1, prompt=[5] * 32 + [9] * 8, start=1)  # same 32-token prefix
    assert allocate_prompt(manager, req0) == [1, 2, 3]

    computed, num_hit = manager.get_computed_blocks(req1)
    assert computed.get_block_ids() == [1, 2]
    assert num_hit == 32
    blocks = manager.allocate_slots(req1, 40 - 32, computed)
    assert blocks.get_block_ids() == [1, 2, 4]
    assert manager.get_block_ids("1") == [1, 2, 4]
    assert ref_counts(manager.pool)[:5] == [1, 2, 2, 1, 1]
    assert manager.stats.num_queried_tokens == 80
    assert manager.stats.num_hit_tokens == 32
    assert manager.stats.hit_rate == pytest.approx(0.4)


def test_full_prompt_hit_still_computes_the_last_block():
    manager = make_manager()
    req0, req1 = create_requests(2, 32, same_prompt=True)
    assert allocate_prompt(manager, req0) == [1, 2]
    computed, num_hit = manager.get_computed_blocks(req1)
    # A hit on the whole prompt would leave no token to compute: the last block is dropped.
    assert computed.get_block_ids() == [1]
    assert num_hit == 16
    assert manager.allocate_slots(req1, 16, computed).get_block_ids() == [1, 3]
    # Block 3 holds the same tokens as block 2, which keeps the hash.
    assert manager.pool.blocks[3].block_hash is None
    assert manager.pool.get_cached_block(chain_hashes(req1.all_token_ids)[1]) is manager.pool.blocks[2]
    assert ref_counts(manager.pool)[:4] == [1, 2, 1, 1]


def test_one_token_past_a_cached_prompt_hits_every_block():
    manager = make_manager()
    (req0,) = create_requests(1, 32)
    (req1,) = create_requests(1, prompt=[100] * 32 + [8], start=1)
    allocate_prompt(manager, req0)
    computed, num_hit = manager.get_computed_blocks(req1)
    assert computed.get_block_ids() == [1, 2] and num_hit == 32
    assert manager.allocate_slots(req1, 1, computed).get_block_ids() == [1, 2, 3]


def test_hit_on_freed_blocks_takes_them_out_of_the_free_queue():
    manager = make_manager()
    req0, req1 = create_requests(2, 40, same_prompt=True)
    assert allocate_prompt(manager, req0) == [1, 2, 3]
    manager.free(req0)
    assert manager.pool.free_block_ids() == [3, 4, 5, 6, 7, 8, 9, 10, 2, 1]
    assert allocate_prompt(manager, req1) == [1, 2, 3]
    assert manager.pool.free_block_ids() == [4, 5, 6, 7, 8, 9, 10]
    assert ref_counts(manager.pool)[:5] == [1, 1, 1, 1, 0]
    assert manager.stats.num_queried_tokens == 80
    assert manager.stats.num_hit_tokens == 32


def test_freed_unhashed_blocks_are_reused_first():
    manager = make_manager()
    req0, req1 = create_requests(2, 20)
    assert allocate_prompt(manager, req0) == [1, 2]  # block 2 is partial, so unhashed
    manager.free(req0)
    assert manager.pool.free_block_ids() == [2, 3, 4, 5, 6, 7, 8, 9, 10, 1]
    assert allocate_prompt(manager, req1) == [2, 3]
    # Block 1 still holds req0's first block, ready for a hit.
    assert manager.pool.get_cached_block(chain_hashes(req0.all_token_ids)[0]) is manager.pool.blocks[1]


def test_eviction_is_lru_and_tail_first():
    manager = make_manager()  # 10 usable blocks
    req_a, req_b = create_requests(2, 48)
    assert allocate_prompt(manager, req_a) == [1, 2, 3]
    assert allocate_prompt(manager, req_b) == [4, 5, 6]
    manager.free(req_a)
    manager.free(req_b)
    assert manager.pool.free_block_ids() == [7, 8, 9, 10, 3, 2, 1, 6, 5, 4]

    (req_c,) = create_requests(1, 96, start=2)  # 6 blocks of new tokens
    assert allocate_prompt(manager, req_c) == [7, 8, 9, 10, 3, 2]
    assert manager.pool.free_block_ids() == [1, 6, 5, 4]
    # req_a's tail blocks went first; its head and all of req_b (freed later) are still cached.
    (req_a2,) = create_requests(1, prompt=list(req_a.prompt_token_ids), start=3)
    computed, num_hit = manager.get_computed_blocks(req_a2)
    assert computed.get_block_ids() == [1] and num_hit == 16
    (req_b2,) = create_requests(1, prompt=list(req_b.prompt_token_ids), start=4)
    computed, num_hit = manager.get_computed_blocks(req_b2)
    assert computed.get_block_ids() == [4, 5] and num_hit == 32  # 48 tokens: the last block recomputes


def test_allocate_returns_none_and_changes_nothing_when_blocks_run_out():
    manager = make_manager(num_blocks=5)  # 4 usable
    req0, req1 = create_requests(2, 48)
    assert allocate_prompt(manager, req0) == [1, 2, 3]
    computed, _ = manager.get_computed_blocks(req1)
    assert manager.allocate_slots(req1, 48, computed) is None
    assert manager.get_block_ids("1") == []
    assert manager.pool.free_block_ids() == [4]
    assert manager.stats.num_queried_tokens == 48  # only req0 was counted
    assert ref_counts(manager.pool) == [1, 1, 1, 1, 0]


def test_evictable_hits_do_not_count_as_free_blocks():
    manager = make_manager(num_blocks=5)  # 4 usable
    req0, req1 = create_requests(2, 48, same_prompt=True)
    allocate_prompt(manager, req0)
    manager.free(req0)
    assert manager.pool.free_block_ids() == [4, 3, 2, 1]
    computed, num_hit = manager.get_computed_blocks(req1)
    assert computed.get_block_ids() == [1, 2] and num_hit == 32
    # 48 + 32 more tokens = 5 blocks: 2 hits + 3 new, but only 2 free blocks besides the hits.
    assert manager.allocate_slots(req1, 48, computed) is None
    assert manager.pool.free_block_ids() == [4, 3, 2, 1]
    assert manager.allocate_slots(req1, 32, computed).get_block_ids() == [1, 2, 4, 3]
    assert manager.pool.free_block_ids() == []


def test_without_caching_nothing_is_hashed_or_hit():
    manager = make_manager(enable_caching=False)
    req0, req1 = create_requests(2, 40, same_prompt=True)
    assert allocate_prompt(manager, req0) == [1, 2, 3]
    assert [b.block_hash for b in manager.pool.blocks] == [None] * 11
    manager.free(req0)
    assert manager.pool.free_block_ids() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    computed, num_hit = manager.get_computed_blocks(req1)
    assert computed.get_block_ids() == [] and num_hit == 0
    assert manager.stats.num_queried_tokens == 0


def test_prompt_logprobs_skip_the_cache():
    manager = make_manager()
    (req0,) = create_requests(1, 40)
    (req1,) = create_requests(1, prompt=list(req0.prompt_token_ids), start=1, prompt_logprobs=1)
    allocate_prompt(manager, req0)
    computed, num_hit = manager.get_computed_blocks(req1)
    assert computed.get_block_ids() == [] and num_hit == 0


def test_free_releases_shared_blocks_once_per_holder():
    manager = make_manager()
    req0, req1 = create_requests(2, 40, same_prompt=True)
    allocate_prompt(manager, req0)
    assert allocate_prompt(manager, req1) == [1, 2, 4]
    manager.free(req0)
    assert ref_counts(manager.pool)[:5] == [1, 1, 1, 0, 1]
    assert manager.pool.free_block_ids() == [3, 5, 6, 7, 8, 9, 10]
    manager.free(req1)
    assert ref_counts(manager.pool) == [1] + [0] * 10
    assert manager.pool.free_block_ids() == [4, 3, 5, 6, 7, 8, 9, 10, 2, 1]
    assert manager.get_block_ids("0") == manager.get_block_ids("1") == []


def test_reset_prefix_cache_refused_while_blocks_are_held():
    manager = make_manager()
    req0, req1, req2 = create_requests(3, 40, same_prompt=True)
    allocate_prompt(manager, req0)
    assert manager.reset_prefix_cache() is False
    assert manager.get_computed_blocks(req1)[1] == 32
    manager.free(req0)
    assert manager.reset_prefix_cache() is True
    computed, num_hit = manager.get_computed_blocks(req2)
    assert computed.get_block_ids() == [] and num_hit == 0
    assert manager.num_free_blocks == 10
