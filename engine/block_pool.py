"""Every KV block, the free queue, and the hash -> block map of the prefix cache.

Free-queue order decides what the prefix cache keeps: blocks without a hash go to the front
(reused first), hashed blocks to the back (least recently freed evicted first).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

BlockHash = int


def hash_block(parent: BlockHash | None, token_ids: tuple[int, ...]) -> BlockHash:
    """A block's hash covers its parent's, so equal hashes mean equal whole prefixes."""
    return hash((parent, token_ids))


@dataclass(slots=True, eq=False)
class KVCacheBlock:
    block_id: int
    ref_cnt: int = 0
    block_hash: BlockHash | None = None


class BlockPool:
    def __init__(self, num_blocks: int, enable_caching: bool) -> None:
        if num_blocks < 2:
            raise ValueError(f"the KV cache needs at least 2 blocks, got {num_blocks}")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.blocks = [KVCacheBlock(i) for i in range(num_blocks)]
        # Block 0 is a placeholder that padding slots point at; it is never handed out.
        self.null_block = self.blocks[0]
        self.null_block.ref_cnt = 1
        self._free: OrderedDict[int, KVCacheBlock] = OrderedDict(
            (b.block_id, b) for b in self.blocks[1:])
        self._cached: dict[BlockHash, KVCacheBlock] = {}

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_cached_free_blocks(self) -> int:
        """Free blocks that still hold a cached prefix (reusable until evicted)."""
        return sum(1 for b in self._cached.values() if b.ref_cnt == 0)

    @property
    def usage(self) -> float:
        """Share of usable blocks held by running requests (cached free blocks count as free)."""
        return 1.0 - self.num_free_blocks / (self.num_blocks - 1)

    def free_block_ids(self) -> list[int]:
        """Free queue order, front (next to be reused) first."""
        return list(self._free)

    def get_cached_block(self, block_hash: BlockHash) -> KVCacheBlock | None:
        return self._cached.get(block_hash)

    def take_new_blocks(self, num_blocks: int) -> list[KVCacheBlock]:
        if num_blocks > len(self._free):
            raise ValueError(f"asked for {num_blocks} blocks, {len(self._free)} free")
        blocks = []
        for _ in range(num_blocks):
            _, block = self._free.popitem(last=False)
            self._evict(block)
            block.ref_cnt = 1
            blocks.append(block)
        return blocks

    def touch(self, blocks: list[KVCacheBlock]) -> None:
        """Take a reference on prefix-cache hits, pulling free ones out of the free queue."""
        for block in blocks:
            if block.ref_cnt == 0:
                del self._free[block.block_id]
            block.ref_cnt += 1

    def cache_block(self, block: KVCacheBlock, block_hash: BlockHash) -> None:
        if not self.enable_caching or block.block_hash is not None:
            return
        if block_hash in self._cached:  # same prefix already cached by another request
            return
        block.block_hash = block_hash
        self._cached[block_hash] = block

    def free_blocks(self, ordered_blocks: list[KVCacheBlock]) -> None:
        """Drop one reference each; callers pass the blocks tail first so evictions start at the tail."""
        for block in ordered_blocks:
            block.ref_cnt -= 1
            if block.ref_cnt > 0:
                continue
            self._free[block.block_id] = block
            if block.block_hash is None:
                self._free.move_to_end(block.block_id, last=False)

    def reset_prefix_cache(self) -> bool:
        """Forget every cached prefix; refused (False) while any request still holds blocks."""
        if self.num_free_blocks != self.num_blocks - 1:
            return False
        for block in self._cached.values():
            block.block_hash = None
        self._cached.clear()
        return True

    def _evict(self, block: KVCacheBlock) -> None:
        if block.block_hash is not None:
            if self._cached.get(block.block_hash) is block:
                del self._cached[block.block_hash]
            block.block_hash = None
