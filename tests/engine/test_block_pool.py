"""engine/block_pool.py: the free queue's order, ref counts, and the hash -> block map."""

import pytest

from engine.block_pool import BlockPool, hash_block
from tests.engine.factories import ref_counts


def test_new_pool_holds_every_block_but_the_null_one():
    pool = BlockPool(6, enable_caching=True)
    assert pool.null_block is pool.blocks[0]
    assert ref_counts(pool) == [1, 0, 0, 0, 0, 0]
    assert pool.free_block_ids() == [1, 2, 3, 4, 5]
    assert pool.num_free_blocks == 5
    assert pool.usage == 0.0


def test_pool_needs_two_blocks():
    with pytest.raises(ValueError, match="at least 2 blocks"):
        BlockPool(1, enable_caching=True)


def test_take_new_blocks_from_the_front():
    pool = BlockPool(6, enable_caching=True)
    blocks = pool.take_new_blocks(2)
    assert [b.block_id for b in blocks] == [1, 2]
    assert ref_counts(pool) == [1, 1, 1, 0, 0, 0]
    assert pool.free_block_ids() == [3, 4, 5]
    assert pool.usage == pytest.approx(2 / 5)


def test_take_more_than_free_raises_and_changes_nothing():
    pool = BlockPool(4, enable_caching=True)
    with pytest.raises(ValueError, match="asked for 4 blocks, 3 free"):
        pool.take_new_blocks(4)
    assert pool.free_block_ids() == [1, 2, 3]
    assert ref_counts(pool) == [1, 0, 0, 0]


def test_hash_block_chains_parents():
    h0 = hash_block(None, (1, 2))
    assert hash_block(None, (1, 2)) == h0
    assert hash_block(h0, (1, 2)) != h0  # same tokens, different prefix
    assert hash_block(None, (2, 1)) != h0


def test_freed_unhashed_blocks_go_to_the_front():
    pool = BlockPool(8, enable_caching=True)
    b1, b2, b3 = pool.take_new_blocks(3)
    assert pool.free_block_ids() == [4, 5, 6, 7]
    pool.free_blocks([b3, b2, b1])  # tail first
    assert pool.free_block_ids() == [1, 2, 3, 4, 5, 6, 7]
    assert ref_counts(pool) == [1, 0, 0, 0, 0, 0, 0, 0]


def test_freed_hashed_blocks_go_to_the_back_tail_first():
    pool = BlockPool(8, enable_caching=True)
    b1, b2, b3 = pool.take_new_blocks(3)
    h1 = hash_block(None, (1,))
    h2 = hash_block(h1, (2,))
    pool.cache_block(b1, h1)
    pool.cache_block(b2, h2)
    pool.free_blocks([b3, b2, b1])
    # The unhashed tail block is reused first; of the hashed ones the tail is evicted first.
    assert pool.free_block_ids() == [3, 4, 5, 6, 7, 2, 1]
    assert pool.get_cached_block(h1) is b1
    assert pool.get_cached_block(h2) is b2
    assert pool.num_cached_free_blocks == 2  # b1 and b2 keep their prefixes until evicted
    pool.take_new_blocks(6)  # the five unhashed blocks, then b2 (evicted)
    assert pool.num_cached_free_blocks == 1


def test_shared_block_returns_to_the_queue_only_at_ref_cnt_zero():
    pool = BlockPool(4, enable_caching=True)
    (b1,) = pool.take_new_blocks(1)
    pool.cache_block(b1, 11)
    pool.touch([b1])
    assert b1.ref_cnt == 2
    pool.free_blocks([b1])
    assert b1.ref_cnt == 1
    assert pool.free_block_ids() == [2, 3]
    pool.free_blocks([b1])
    assert b1.ref_cnt == 0
    assert pool.free_block_ids() == [2, 3, 1]


def test_touch_pulls_a_free_cached_block_out_of_the_queue():
    pool = BlockPool(5, enable_caching=True)
    b1, b2 = pool.take_new_blocks(2)
    pool.cache_block(b1, 11)
    pool.free_blocks([b2, b1])
    assert pool.free_block_ids() == [2, 3, 4, 1]
    hit = pool.get_cached_block(11)
    assert hit is b1
    pool.touch([hit])
    assert b1.ref_cnt == 1
    assert pool.free_block_ids() == [2, 3, 4]
    assert pool.num_free_blocks == 3


def test_reusing_a_cached_block_evicts_its_hash():
    pool = BlockPool(3, enable_caching=True)
    b1, b2 = pool.take_new_blocks(2)
    pool.cache_block(b1, 11)
    pool.cache_block(b2, 22)
    pool.free_blocks([b2, b1])
    assert pool.free_block_ids() == [2, 1]
    (taken,) = pool.take_new_blocks(1)
    assert taken is b2
    assert b2.block_hash is None and b2.ref_cnt == 1
    assert pool.get_cached_block(22) is None
    assert pool.get_cached_block(11) is b1


def test_cache_block_keeps_the_first_block_of_a_hash():
    pool = BlockPool(4, enable_caching=True)
    b1, b2 = pool.take_new_blocks(2)
    pool.cache_block(b1, 11)
    pool.cache_block(b2, 11)
    assert pool.get_cached_block(11) is b1
    assert b2.block_hash is None
    pool.free_blocks([b2, b1])
    assert pool.free_block_ids() == [2, 3, 1]
    # Evicting the duplicate-free block must not drop the cached one.
    pool.take_new_blocks(1)
    assert pool.get_cached_block(11) is b1


def test_cache_block_is_a_no_op_without_caching():
    pool = BlockPool(4, enable_caching=False)
    b1, b2 = pool.take_new_blocks(2)
    pool.cache_block(b1, 11)
    assert b1.block_hash is None
    assert pool.get_cached_block(11) is None
    pool.free_blocks([b2, b1])
    assert pool.free_block_ids() == [1, 2, 3]


def test_reset_prefix_cache_refused_while_blocks_are_held():
    pool = BlockPool(4, enable_caching=True)
    b1, b2 = pool.take_new_blocks(2)
    pool.cache_block(b1, 11)
    pool.free_blocks([b1])
    assert pool.reset_prefix_cache() is False
    assert pool.get_cached_block(11) is b1
    assert b1.block_hash == 11
    pool.free_blocks([b2])
    assert pool.free_block_ids() == [2, 3, 1]
    assert pool.reset_prefix_cache() is True
    assert pool.get_cached_block(11) is None
    assert b1.block_hash is None
    assert pool.num_free_blocks == 3
    assert ref_counts(pool) == [1, 0, 0, 0]
