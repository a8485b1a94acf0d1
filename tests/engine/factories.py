"""Tiny engine-core configs for model-free tests (vLLM's tests/v1/core/utils.py, cut down).

Block size 16 and small budgets, so every block id, ref count and token count in a test can
be written out by hand.
"""

from __future__ import annotations

from engine.block_pool import BlockPool, hash_block
from engine.kv_cache_manager import KVCacheManager
from engine.request import Request
from engine.sampling_params import SamplingParams
from engine.scheduler import Scheduler, SchedulerConfig
from engine.step import ModelRunnerOutput, SchedulerOutput

BLOCK_SIZE = 16
EOS_TOKEN_ID = 2
SAMPLED_TOKEN_ID = 7  # what make_runner_output samples unless told otherwise


def create_scheduler(*, num_blocks: int = 101, max_num_seqs: int = 16,
                     max_num_batched_tokens: int = 8192, max_model_len: int = 1024,
                     enable_prefix_caching: bool = True, enable_chunked_prefill: bool = False,
                     delay_factor: float = 0.0, block_size: int = BLOCK_SIZE,
                     prompt_batch_tokens: int | None = None) -> Scheduler:
    config = SchedulerConfig(max_num_seqs=max_num_seqs,
                             max_num_batched_tokens=max_num_batched_tokens,
                             max_model_len=max_model_len,
                             enable_chunked_prefill=enable_chunked_prefill,
                             delay_factor=delay_factor,
                             prompt_batch_tokens=prompt_batch_tokens)
    return Scheduler(config, KVCacheManager(num_blocks, block_size, enable_prefix_caching))


def create_requests(num_requests: int, num_tokens: int = 10, *, same_prompt: bool = False,
                    prompt: list[int] | None = None, start: int = 0, eos_token_id: int = EOS_TOKEN_ID,
                    **params) -> list[Request]:
    """Requests "0", "1", ... (ids from `start`); prompt i is `[100 + i] * num_tokens` unless
    `same_prompt` (all `[100] * num_tokens`) or an explicit `prompt`; `params` go to SamplingParams."""
    params.setdefault("max_tokens", 16)
    requests = []
    for i in range(start, start + num_requests):
        tokens = prompt if prompt is not None else [100 + (0 if same_prompt else i)] * num_tokens
        requests.append(Request(str(i), tokens, SamplingParams(**params), eos_token_id,
                                arrival_time=0.0))
    return requests


def make_runner_output(scheduler: Scheduler, sched: SchedulerOutput,
                       tokens: dict[str, int] | None = None,
                       default: int = SAMPLED_TOKEN_ID) -> ModelRunnerOutput:
    """What the runner returns: one sampled token for each request whose scheduled tokens reach
    its end (`tokens[req_id]`, else `default`); prefill chunks that stop short get none."""
    tokens = tokens or {}
    sampled = {}
    for req_id, n in sched.num_scheduled_tokens.items():
        request = scheduler.requests.get(req_id)
        if request is not None and request.num_computed_tokens + n == request.num_tokens:
            sampled[req_id] = [tokens.get(req_id, default)]
    return ModelRunnerOutput(sampled)


def step(scheduler: Scheduler, tokens: dict[str, int] | None = None,
         default: int = SAMPLED_TOKEN_ID):
    """One engine step without a model: schedule, sample, apply. Returns (sched, outputs by id)."""
    sched = scheduler.schedule()
    outputs = scheduler.update_from_output(sched, make_runner_output(scheduler, sched, tokens, default))
    return sched, {o.req_id: o for o in outputs}


def chain_hashes(token_ids: list[int], block_size: int = BLOCK_SIZE) -> list[int]:
    """The prefix-cache hash of each full block of `token_ids`."""
    hashes: list[int] = []
    for i in range(len(token_ids) // block_size):
        hashes.append(hash_block(hashes[-1] if hashes else None,
                                 tuple(token_ids[i * block_size:(i + 1) * block_size])))
    return hashes


def ref_counts(pool: BlockPool) -> list[int]:
    return [b.ref_cnt for b in pool.blocks]
