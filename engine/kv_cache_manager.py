"""Turns the scheduler's token counts into block ids; the only caller of the block pool."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.block_pool import BlockHash, BlockPool, KVCacheBlock, hash_block
from engine.request import Request


@dataclass
class KVCacheBlocks:
    """Opaque to the scheduler: it only asks for the ids."""

    blocks: list[KVCacheBlock] = field(default_factory=list)

    def get_block_ids(self) -> list[int]:
        return [b.block_id for b in self.blocks]


@dataclass
class PrefixCacheStats:
    num_queried_tokens: int = 0
    num_hit_tokens: int = 0

    @property
    def hit_rate(self) -> float:
        return self.num_hit_tokens / self.num_queried_tokens if self.num_queried_tokens else 0.0


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, enable_caching: bool) -> None:
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.pool = BlockPool(num_blocks, enable_caching)
        self.stats = PrefixCacheStats()
        self._req_blocks: dict[str, list[KVCacheBlock]] = {}
        self._req_hashes: dict[str, list[BlockHash]] = {}
        self._req_num_cached: dict[str, int] = {}  # leading blocks already registered

    @property
    def usage(self) -> float:
        return self.pool.usage

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks

    @property
    def num_cached_free_blocks(self) -> int:
        return self.pool.num_cached_free_blocks

    @property
    def num_usable_blocks(self) -> int:
        return self.pool.num_blocks - 1  # block 0 is the padding placeholder

    def get_computed_blocks(self, request: Request) -> tuple[KVCacheBlocks, int]:
        """The longest cached prefix of a request that has no blocks yet, and its token count."""
        # Prompt logprobs need every prompt position computed, so such requests skip the cache.
        if not self.enable_caching or request.params.prompt_logprobs is not None:
            return KVCacheBlocks(), 0
        hashes = self._block_hashes(request)
        # At least one token must be computed to produce logits, so a full hit drops its last block.
        max_hit_blocks = (request.num_tokens - 1) // self.block_size
        hits = []
        for block_hash in hashes[:max_hit_blocks]:
            block = self.pool.get_cached_block(block_hash)
            if block is None:
                break
            hits.append(block)
        return KVCacheBlocks(hits), len(hits) * self.block_size

    def allocate_slots(self, request: Request, num_new_tokens: int,
                       new_computed: KVCacheBlocks | None = None) -> KVCacheBlocks | None:
        """Blocks for `num_new_tokens` more tokens; None (and nothing changed) when they don't fit.

        `new_computed` are prefix-cache hits for a request getting its first blocks; its
        `num_computed_tokens` does not count them yet.
        """
        computed = new_computed.blocks if new_computed else []
        held = self._req_blocks.get(request.request_id, [])
        num_computed = request.num_computed_tokens + len(computed) * self.block_size
        num_needed = -(-(num_computed + num_new_tokens) // self.block_size) - len(held) - len(computed)
        num_evictable_hits = sum(1 for b in computed if b.ref_cnt == 0)
        if num_needed > self.pool.num_free_blocks - num_evictable_hits:
            return None
        if request.request_id not in self._req_blocks and self.enable_caching:
            self.stats.num_queried_tokens += request.num_tokens
            self.stats.num_hit_tokens += len(computed) * self.block_size
        self.pool.touch(computed)
        new_blocks = self.pool.take_new_blocks(max(num_needed, 0))
        blocks = self._req_blocks.setdefault(request.request_id, [])
        blocks.extend(computed)
        blocks.extend(new_blocks)
        self._cache_full_blocks(request, num_computed + num_new_tokens)
        return KVCacheBlocks(computed + new_blocks)

    def free(self, request: Request) -> None:
        blocks = self._req_blocks.pop(request.request_id, [])
        self._req_hashes.pop(request.request_id, None)
        self._req_num_cached.pop(request.request_id, None)
        self.pool.free_blocks(blocks[::-1])

    def get_block_ids(self, request_id: str) -> list[int]:
        return [b.block_id for b in self._req_blocks.get(request_id, [])]

    def reset_prefix_cache(self) -> bool:
        return self.pool.reset_prefix_cache()

    def _block_hashes(self, request: Request) -> list[BlockHash]:
        """Hashes of the request's full blocks, extended as its tokens grow."""
        hashes = self._req_hashes.setdefault(request.request_id, [])
        bs = self.block_size
        for i in range(len(hashes), request.num_tokens // bs):
            parent = hashes[-1] if hashes else None
            hashes.append(hash_block(parent, tuple(request.all_token_ids[i * bs:(i + 1) * bs])))
        return hashes

    def _cache_full_blocks(self, request: Request, num_tokens: int) -> None:
        """Register blocks that this step fills, so later requests can share them."""
        if not self.enable_caching:
            return
        hashes = self._block_hashes(request)
        blocks = self._req_blocks[request.request_id]
        start = self._req_num_cached.get(request.request_id, 0)
        end = min(num_tokens // self.block_size, len(hashes))
        for i in range(start, end):
            self.pool.cache_block(blocks[i], hashes[i])
        self._req_num_cached[request.request_id] = max(start, end)
