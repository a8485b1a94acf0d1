"""Decides, each step, which requests run and how many tokens each one computes.

Every request catches its computed tokens up toward its total (prompt plus outputs so far).
A fresh prompt, a prompt chunk, a prefix-cache hit and a decode are all the same move, so
decodes ride along with prefills in one batch: continuous batching.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from engine.kv_cache_manager import KVCacheBlocks, KVCacheManager
from engine.request import Request, RequestStatus
from engine.step import (CachedRequestData, EngineCoreOutput, ModelRunnerOutput,
                         NewRequestData, SchedulerOutput)


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    enable_chunked_prefill: bool = False
    delay_factor: float = 0.0
    # New prompts of one step stop at this many tokens, though the first always goes: a wave
    # of arrivals then gets first tokens in turns, not all after one long step (None: the
    # budget alone decides).
    prompt_batch_tokens: int | None = None


class Scheduler:
    def __init__(self, config: SchedulerConfig, kv_cache: KVCacheManager) -> None:
        self.config = config
        self.kv_cache = kv_cache
        self.requests: dict[str, Request] = {}
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0
        self._finished_ids: set[str] = set()
        self._preempted_ids: set[str] = set()
        self._sent_to_runner: set[str] = set()
        self._last_step_time = 0.0
        self._last_step_had_prompt = False
        self._last_prompt_latency = 0.0

    # -- requests in and out --------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        self.requests[request.request_id] = request
        self.waiting.append(request)

    def finish_requests(self, request_ids: list[str], status: RequestStatus) -> None:
        """End requests from outside the step (abort, a stop string found by the detokenizer)."""
        for req_id in request_ids:
            request = self.requests.get(req_id)
            if request is None or request.is_finished:
                continue
            if request.status == RequestStatus.RUNNING:
                self.running.remove(request)
            else:
                self.waiting.remove(request)
            request.status = status
            self._free(request)

    def has_unfinished_requests(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def num_unfinished(self) -> int:
        return len(self.waiting) + len(self.running)

    # -- one step ---------------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        budget = self.config.max_num_batched_tokens
        num_scheduled: dict[str, int] = {}
        new_reqs: list[NewRequestData] = []
        cached_reqs: list[CachedRequestData] = []
        budget, preempted = self._schedule_running(budget, num_scheduled, new_reqs, cached_reqs)
        if not preempted and self._passed_delay():
            self._schedule_waiting(budget, num_scheduled, new_reqs)
        self._last_step_had_prompt = bool(new_reqs)
        out = SchedulerOutput(new_reqs, cached_reqs, num_scheduled,
                              self._finished_ids, self._preempted_ids - self._finished_ids)
        self._finished_ids, self._preempted_ids = set(), set()
        return out

    def _schedule_running(self, budget, num_scheduled, new_reqs, cached_reqs) -> tuple[int, bool]:
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            request = self.running[i]
            num_new = min(request.num_tokens - request.num_computed_tokens, budget)
            blocks = self.kv_cache.allocate_slots(request, num_new)
            while blocks is None:
                victim = self.running.pop()  # the latest admitted yields first
                self._preempt(victim)
                preempted = True
                if victim is request:
                    break
                blocks = self.kv_cache.allocate_slots(request, num_new)
            if blocks is None:
                break
            self._record(request, num_new, blocks, num_scheduled, new_reqs, cached_reqs)
            budget -= num_new
            i += 1
        return budget, preempted

    def _schedule_waiting(self, budget, num_scheduled, new_reqs) -> None:
        cap, prompt_tokens = self.config.prompt_batch_tokens, 0
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            request = self.waiting[0]
            computed, num_hit = self.kv_cache.get_computed_blocks(request)
            num_new = request.num_tokens - num_hit
            if num_new > budget:
                if not self.config.enable_chunked_prefill:
                    break
                num_new = budget
            if cap is not None and prompt_tokens and prompt_tokens + num_new > cap:
                break
            blocks = self.kv_cache.allocate_slots(request, num_new, computed)
            if blocks is None:
                break
            self.waiting.popleft()
            request.num_computed_tokens = num_hit
            if request.status == RequestStatus.WAITING:
                request.num_cached_tokens = num_hit
                request.first_scheduled_time = time.monotonic()
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            self._record(request, num_new, blocks, num_scheduled, new_reqs, [])
            budget -= num_new
            prompt_tokens += num_new

    def _record(self, request: Request, num_new: int, blocks: KVCacheBlocks,
                num_scheduled, new_reqs, cached_reqs) -> None:
        num_scheduled[request.request_id] = num_new
        if request.request_id in self._sent_to_runner:
            cached_reqs.append(CachedRequestData(
                request.request_id, blocks.get_block_ids(), request.num_computed_tokens))
            return
        self._sent_to_runner.add(request.request_id)
        new_reqs.append(NewRequestData(
            request.request_id, list(request.all_token_ids), request.num_prompt_tokens,
            self.kv_cache.get_block_ids(request.request_id), request.num_computed_tokens,
            request.params))

    def _preempt(self, request: Request) -> None:
        """Recompute-style preemption: drop the blocks, go back to the front of the queue."""
        self.kv_cache.free(request)
        request.status = RequestStatus.PREEMPTED
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.num_preemptions += 1
        self._sent_to_runner.discard(request.request_id)
        self._preempted_ids.add(request.request_id)
        self.waiting.appendleft(request)

    def _passed_delay(self) -> bool:
        """--scheduler-delay-factor: hold new prompts back a while so they batch together."""
        now = time.monotonic()
        if self._last_step_had_prompt:
            self._last_prompt_latency = now - self._last_step_time
        self._last_step_time = now
        if self.config.delay_factor <= 0 or not self.waiting or not self.running:
            return True
        oldest = min(r.arrival_time for r in self.waiting)
        return now - oldest > self.config.delay_factor * self._last_prompt_latency

    # -- applying the runner's results ----------------------------------------------------------

    def update_from_output(self, sched: SchedulerOutput,
                           result: ModelRunnerOutput) -> list[EngineCoreOutput]:
        outputs = []
        for req_id, num_new in sched.num_scheduled_tokens.items():
            request = self.requests.get(req_id)
            if request is None or request.is_finished:
                continue
            request.num_computed_tokens += num_new
            new_tokens = self._append_until_stop(request, result.sampled_token_ids.get(req_id, []))
            prompt_lps = result.prompt_logprobs.get(req_id)
            if not new_tokens and prompt_lps is None and not request.is_finished:
                continue
            lps = result.logprobs.get(req_id)
            outputs.append(EngineCoreOutput(
                req_id, new_tokens, request.status.value if request.is_finished else None,
                request.stop_reason, lps[:len(new_tokens)] if lps is not None else None,
                prompt_lps, request.num_cached_tokens,
                request.num_prompt_tokens if request.num_output_tokens == len(new_tokens) else 0,
                request.first_scheduled_time))
            if request.is_finished:
                self.running.remove(request)
                self._free(request)
        return outputs

    def _append_until_stop(self, request: Request, token_ids: list[int]) -> list[int]:
        appended = []
        for token_id in token_ids:
            request.append_token(token_id)
            appended.append(token_id)
            status = self._check_stop(request, token_id)
            if status is not None:
                request.status = status
                break
        return appended

    def _check_stop(self, request: Request, token_id: int) -> RequestStatus | None:
        params = request.params
        if request.num_output_tokens >= params.min_tokens:
            if token_id == request.eos_token_id and not params.ignore_eos:
                return RequestStatus.FINISHED_STOPPED
            if token_id in params.stop_token_ids:
                request.stop_reason = token_id
                return RequestStatus.FINISHED_STOPPED
        if params.max_tokens is not None and request.num_output_tokens >= params.max_tokens:
            return RequestStatus.FINISHED_LENGTH
        if request.num_tokens >= self.config.max_model_len:
            return RequestStatus.FINISHED_LENGTH
        return None

    def _free(self, request: Request) -> None:
        self.kv_cache.free(request)
        self._sent_to_runner.discard(request.request_id)
        self._finished_ids.add(request.request_id)
        del self.requests[request.request_id]
