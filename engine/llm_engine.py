"""The synchronous engine: requests in, one step at a time, RequestOutputs out."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import torch

from engine.args import EngineArgs
from engine.kv_cache_manager import KVCacheManager
from engine.model_runner import ModelRunner
from engine.output_processor import OutputKind, OutputProcessor
from engine.outputs import RequestOutput
from engine.request import Request, RequestStatus
from engine.sampling_params import SamplingParams
from engine.scheduler import Scheduler, SchedulerConfig
from engine.setup import EngineInfo, build_engine_parts, prompt_batch_tokens

logger = logging.getLogger(__name__)

Prompt = str | list[int] | dict


@dataclass
class ProcessedRequest:
    """A validated, tokenized request, ready to enter the engine (made off the engine thread)."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    kind: OutputKind
    arrival_time: float


@dataclass
class EngineStats:
    num_running: int
    num_waiting: int
    kv_cache_usage: float
    num_free_blocks: int
    prefix_cache_queries: int
    prefix_cache_hits: int
    num_preemptions: int
    num_prompt_tokens: int
    num_generation_tokens: int
    num_total_blocks: int = 0
    num_cached_free_blocks: int = 0


class LLMEngine:
    def __init__(self, args: EngineArgs) -> None:
        parts = build_engine_parts(args.validate())
        self.args = args
        self.info: EngineInfo = parts.info
        self.tokenizer = parts.tokenizer
        self.kv_cache = KVCacheManager(parts.info.num_blocks, args.block_size, args.enable_prefix_caching)
        self.scheduler = Scheduler(SchedulerConfig(
            max_num_seqs=args.max_num_seqs, max_num_batched_tokens=parts.info.max_num_batched_tokens,
            max_model_len=parts.info.max_model_len, enable_chunked_prefill=args.enable_chunked_prefill,
            delay_factor=args.scheduler_delay_factor,
            prompt_batch_tokens=prompt_batch_tokens(args)), self.kv_cache)
        self.runner = ModelRunner(parts.model, parts.kv_caches, args.block_size,
                                  parts.info.eos_token_id, args.seed)
        self.outputs = OutputProcessor(self.tokenizer)
        self.num_prompt_tokens = 0
        self.num_generation_tokens = 0
        self._last_log = (time.monotonic(), 0, 0)  # time, prompt and generation tokens then

    # -- requests --------------------------------------------------------------------------

    def process_request(self, request_id: str, prompt: Prompt, params: SamplingParams | None = None,
                        kind: OutputKind = OutputKind.FINAL_ONLY) -> ProcessedRequest:
        """Tokenize and validate; raises ValueError with a message fit for the user."""
        params = params or SamplingParams()
        text, token_ids = self._tokenize(prompt)
        self._validate(token_ids, params)
        return ProcessedRequest(request_id, text, token_ids, params, kind, time.monotonic())

    def add_processed(self, req: ProcessedRequest) -> None:
        if self.outputs.has_request(req.request_id):
            raise ValueError(f"request id {req.request_id!r} is already running")
        child_ids = self.outputs.add_request(req.request_id, req.prompt, req.prompt_token_ids,
                                             req.params, req.kind, req.arrival_time)
        for i, child_id in enumerate(child_ids):
            params = req.params
            if params.seed is not None and i > 0:
                params = dataclasses.replace(params, seed=params.seed + i)
            self.scheduler.add_request(Request(child_id, req.prompt_token_ids, params,
                                               self.info.eos_token_id, req.arrival_time))

    def add_request(self, request_id: str, prompt: Prompt, params: SamplingParams | None = None,
                    kind: OutputKind = OutputKind.FINAL_ONLY) -> None:
        self.add_processed(self.process_request(request_id, prompt, params, kind))

    def abort_request(self, request_ids: list[str]) -> list[RequestOutput]:
        finals = []
        for request_id in request_ids:
            self.scheduler.finish_requests(self.outputs.child_ids(request_id), RequestStatus.FINISHED_ABORTED)
            final = self.outputs.abort(request_id, time.monotonic())
            if final is not None:
                finals.append(final)
        return finals

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests()

    # -- one step ---------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        sched = self.scheduler.schedule()
        result = self.runner.execute(sched)
        core_outputs = self.scheduler.update_from_output(sched, result)
        outputs, stopped = self.outputs.process(core_outputs, time.monotonic())
        self.scheduler.finish_requests(stopped, RequestStatus.FINISHED_STOPPED)
        self.num_prompt_tokens += sum(o.num_prompt_tokens for o in core_outputs)
        self.num_generation_tokens += sum(len(o.new_token_ids) for o in core_outputs)
        if not self.args.disable_log_stats:
            self._maybe_log_stats()
        return outputs

    def _maybe_log_stats(self, interval: float = 5.0) -> None:
        now = time.monotonic()
        then, prompt_then, gen_then = self._last_log
        if now - then < interval:
            return
        self._last_log = (now, self.num_prompt_tokens, self.num_generation_tokens)
        s = self.stats()
        hit = s.prefix_cache_hits / s.prefix_cache_queries if s.prefix_cache_queries else 0.0
        logger.info("prompt %.1f tok/s, generation %.1f tok/s, running %d, waiting %d, "
                    "KV cache %.1f%% used, prefix cache hit rate %.1f%%, preemptions %d",
                    (self.num_prompt_tokens - prompt_then) / (now - then),
                    (self.num_generation_tokens - gen_then) / (now - then),
                    s.num_running, s.num_waiting, 100 * s.kv_cache_usage, 100 * hit, s.num_preemptions)

    def stats(self) -> EngineStats:
        s, kv = self.scheduler, self.kv_cache
        return EngineStats(len(s.running), len(s.waiting), kv.usage, kv.num_free_blocks,
                           kv.stats.num_queried_tokens, kv.stats.num_hit_tokens, s.num_preemptions,
                           self.num_prompt_tokens, self.num_generation_tokens,
                           kv.num_usable_blocks, kv.num_cached_free_blocks)

    def reset_prefix_cache(self) -> bool:
        return self.kv_cache.reset_prefix_cache()

    # -- input checks ---------------------------------------------------------------------------

    def _tokenize(self, prompt: Prompt) -> tuple[str | None, list[int]]:
        if isinstance(prompt, dict):
            if "prompt_token_ids" in prompt:
                return prompt.get("prompt"), [int(t) for t in prompt["prompt_token_ids"]]
            prompt = prompt.get("prompt")
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return None, list(prompt)
        if not isinstance(prompt, str):
            raise ValueError("a prompt is a string, a list of token ids, or a dict with 'prompt' "
                             "or 'prompt_token_ids'")
        if self.tokenizer is None:
            raise ValueError("--skip-tokenizer-init is set: pass prompts as token ids")
        return prompt, self.tokenizer.encode(prompt)

    def _validate(self, token_ids: list[int], params: SamplingParams) -> None:
        info = self.info
        if not token_ids:
            raise ValueError("the prompt is empty: give at least one token")
        if len(token_ids) >= info.max_model_len:
            raise ValueError(f"the prompt has {len(token_ids)} tokens, but the context length "
                             f"(--max-model-len) is {info.max_model_len}, leaving no room for output: "
                             "shorten the prompt or raise --max-model-len")
        bad = [t for t in token_ids if not 0 <= t < info.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary (0..{info.vocab_size - 1})")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(params, name)
            if value is not None and value > self.args.max_logprobs:
                raise ValueError(f"{name}={value} exceeds the server's --max-logprobs "
                                 f"({self.args.max_logprobs})")
        if params.stop_strings and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer, but --skip-tokenizer-init is set")
        if params.logit_bias and any(not 0 <= t < info.vocab_size for t in params.logit_bias):
            raise ValueError("logit_bias names a token id outside the vocabulary")
