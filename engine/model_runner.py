"""Turns a SchedulerOutput into flat batch tensors, runs the model once, and samples.

The runner keeps its own copy of each request's tokens and block ids, updated from the
scheduler's diffs and its own samples; it never reaches back into the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine import cpu_kernels
from engine.attention import (AttentionMetadata, KVCacheLayer, PrefillSpan, PromptBatch,
                              reads_past_context)
from engine.sampler import Sampler, SamplingBatch, takes_argmax, top_logprobs
from engine.sampling_params import SamplingParams
from engine.step import ModelRunnerOutput, NewRequestData, SchedulerOutput, TokenLogprobs


@dataclass(slots=True)
class RequestState:
    req_id: str
    token_ids: list[int]
    num_prompt_tokens: int
    block_ids: list[int]
    num_computed_tokens: int
    params: SamplingParams
    generator: torch.Generator | None
    argmax_only: bool  # sampler.takes_argmax(params)


@dataclass(slots=True)
class _Batch:
    input_ids: torch.Tensor  # [num_tokens]
    positions: torch.Tensor  # [num_tokens]
    meta: AttentionMetadata
    order: list[RequestState]  # decodes first, then prefill chunks, as laid out in the batch
    row_starts: list[int]
    sample_rows: list[int]  # flat row of each sampling request's last token
    samplers: list[RequestState]


class ModelRunner:
    def __init__(self, model, kv_caches: list[KVCacheLayer], block_size: int,
                 eos_token_id: int | None, seed: int) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.kv_caches = kv_caches
        self._zero_fresh_blocks = any(reads_past_context(cache) for cache in kv_caches)
        self.block_size = block_size
        self.eos_token_id = eos_token_id
        self.sliding_window = model.args.sliding_window
        self.sampler = Sampler(seed, cpu_kernels.load() if self.device.type == "cpu" else None)
        self.requests: dict[str, RequestState] = {}
        # Outlive preemption: a resumed request keeps its random stream, and does not send
        # prompt logprobs for positions it already sent.
        self._generators: dict[str, torch.Generator] = {}
        self._num_prompt_logprobs_sent: dict[str, int] = {}

    @torch.inference_mode()
    def execute(self, sched: SchedulerOutput) -> ModelRunnerOutput:
        self._update_states(sched)
        if not sched.num_scheduled_tokens:
            return ModelRunnerOutput({})
        batch = self._prepare(sched)
        hidden = self.model(batch.input_ids, batch.positions, self.kv_caches, batch.meta)
        out = ModelRunnerOutput({})
        if batch.samplers:
            self._sample(hidden, batch, out)
        self._prompt_logprobs(hidden, batch, sched, out)
        for state in batch.order:
            state.num_computed_tokens += sched.num_scheduled_tokens[state.req_id]
        return out

    # -- request states ---------------------------------------------------------------------

    def _update_states(self, sched: SchedulerOutput) -> None:
        for req_id in sched.finished_req_ids:
            self.requests.pop(req_id, None)
            self._generators.pop(req_id, None)
            self._num_prompt_logprobs_sent.pop(req_id, None)
        for req_id in sched.preempted_req_ids:
            self.requests.pop(req_id, None)
        fresh_blocks: list[int] = []
        for new in sched.new_reqs:
            self.requests[new.req_id] = self._new_state(new)
            fresh_blocks += new.block_ids[new.num_computed_tokens // self.block_size:]
        for diff in sched.cached_reqs:
            state = self.requests[diff.req_id]
            state.block_ids.extend(diff.new_block_ids)
            state.num_computed_tokens = diff.num_computed_tokens
            fresh_blocks += diff.new_block_ids
        if fresh_blocks and self._zero_fresh_blocks:
            self._zero_blocks(fresh_blocks)

    def _zero_blocks(self, block_ids: list[int]) -> None:
        """The gather + SDPA decode reads whole blocks, masked past each context's end. A masked
        slot still multiplies its value by a zero weight, and stale memory there may hold NaN
        (NaN * 0 is NaN), so on that path blocks start zeroed."""
        ids = torch.tensor(block_ids, device=self.device)
        for cache in self.kv_caches:
            raw = cache.kv.view(torch.uint8) if cache.is_fp8 else cache.kv
            raw.view(2, -1, self.block_size, *raw.shape[2:]).index_fill_(1, ids, 0)

    def _new_state(self, new: NewRequestData) -> RequestState:
        generator = self._generators.get(new.req_id)
        if generator is None and new.params.seed is not None:
            generator = self._generators[new.req_id] = torch.Generator().manual_seed(new.params.seed)
        return RequestState(new.req_id, list(new.token_ids), new.num_prompt_tokens,
                            list(new.block_ids), new.num_computed_tokens, new.params, generator,
                            takes_argmax(new.params))

    # -- batch layout -------------------------------------------------------------------------

    def _prepare(self, sched: SchedulerOutput) -> _Batch:
        counts = sched.num_scheduled_tokens
        states = [self.requests[r] for r in counts]
        decodes = [s for s in states if counts[s.req_id] == 1]
        prefills = [s for s in states if counts[s.req_id] > 1]
        ids, pos, starts = [], [], []
        for s in decodes + prefills:
            starts.append(len(ids))
            n, c = counts[s.req_id], s.num_computed_tokens
            ids.extend(s.token_ids[c:c + n])
            pos.extend(range(c, c + n))
        positions = torch.tensor(pos, dtype=torch.long)
        meta = self._attention_metadata(decodes, prefills, counts, starts, positions)
        order = decodes + prefills
        samplers, rows = [], []
        for s, start in zip(order, starts):
            n = counts[s.req_id]
            if s.num_computed_tokens + n == len(s.token_ids):
                samplers.append(s)
                rows.append(start + n - 1)
        if self.device.type != "cpu":
            positions, meta = positions.to(self.device), meta.to(self.device)
        return _Batch(torch.tensor(ids, dtype=torch.long, device=self.device), positions, meta,
                      order, starts, rows, samplers)

    def _slots(self, block_table: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        bs = self.block_size
        return block_table.gather(-1, positions // bs) * bs + positions % bs

    def _attention_metadata(self, decodes, prefills, counts, starts, positions) -> AttentionMetadata:
        slot_mapping = torch.empty_like(positions)
        table = decode_mask = None
        if decodes:
            ctx = torch.tensor([s.num_computed_tokens + 1 for s in decodes])  # [num_decodes]
            max_blocks = max(len(s.block_ids) for s in decodes)
            table = torch.tensor([s.block_ids + [0] * (max_blocks - len(s.block_ids)) for s in decodes])
            j = torch.arange(max_blocks * self.block_size)
            valid = j[None, :] < ctx[:, None]
            if self.sliding_window:
                valid &= j[None, :] >= (ctx - self.sliding_window)[:, None]
            decode_mask = valid[:, None, None, :]
            last = ctx - 1
            slot_mapping[:len(decodes)] = table.gather(1, (last // self.block_size)[:, None])[:, 0] \
                * self.block_size + last % self.block_size
        spans = []
        for s, start in zip(prefills, starts[len(decodes):]):
            n, c = counts[s.req_id], s.num_computed_tokens
            kv_slots = self._slots(torch.tensor(s.block_ids), torch.arange(c + n))
            slot_mapping[start:start + n] = kv_slots[c:]
            spans.append(PrefillSpan(start, start + n, kv_slots, self._prefill_mask(c, n)))
        return AttentionMetadata(slot_mapping, len(decodes), table, decode_mask, spans,
                                 ctx if decodes else None,
                                 PromptBatch.of(spans) if spans and self.device.type == "cpu" else None)

    def _prefill_mask(self, num_cached: int, num_new: int) -> torch.Tensor | None:
        if num_cached == 0 and not self.sliding_window:
            return None
        q = torch.arange(num_cached, num_cached + num_new)[:, None]
        k = torch.arange(num_cached + num_new)[None, :]
        mask = k <= q
        if self.sliding_window:
            mask &= k > q - self.sliding_window
        return mask  # [num_new, num_cached + num_new]

    # -- sampling -----------------------------------------------------------------------------

    def _sample(self, hidden: torch.Tensor, batch: _Batch, out: ModelRunnerOutput) -> None:
        logits = self.model.compute_logits(hidden[batch.sample_rows]).cpu()  # [rows, vocab]
        if all(s.argmax_only for s in batch.samplers):
            # the common case needs no SamplingBatch: building one took ~0.2 ms a step at 32 rows
            tokens, logprobs = self.sampler.argmax(logits), [None] * len(batch.samplers)
        else:
            tokens, logprobs = self.sampler(logits, self._sampling_batch(batch.samplers))
        for state, token, lps in zip(batch.samplers, tokens.tolist(), logprobs):
            state.token_ids.append(token)
            out.sampled_token_ids[state.req_id] = [token]
            if lps is not None:
                out.logprobs[state.req_id] = [lps]

    def _sampling_batch(self, states: list[RequestState]) -> SamplingBatch:
        params = [s.params for s in states]

        def column(name: str, off, dtype=torch.float32):
            values = [getattr(p, name) for p in params]
            return None if all(v == off for v in values) else torch.tensor(values, dtype=dtype)

        vocab = self.model.args.vocab_size
        top_k = [p.top_k if p.top_k > 0 else vocab for p in params]
        return SamplingBatch(
            temperature=torch.tensor([0.0 if p.is_greedy else p.temperature for p in params]),
            top_k=None if all(k == vocab for k in top_k) else torch.tensor(top_k),
            top_p=column("top_p", 1.0), min_p=column("min_p", 0.0),
            presence_penalty=column("presence_penalty", 0.0),
            frequency_penalty=column("frequency_penalty", 0.0),
            repetition_penalty=column("repetition_penalty", 1.0),
            prompt_token_ids=[s.token_ids[:s.num_prompt_tokens] for s in states],
            output_token_ids=[s.token_ids[s.num_prompt_tokens:] for s in states],
            logit_bias=[p.logit_bias for p in params],
            banned_token_ids=[self._banned(s) for s in states],
            generators=[s.generator for s in states],
            num_logprobs=[p.logprobs for p in params])

    def _banned(self, s: RequestState) -> list[int]:
        """min_tokens: the tokens that would stop a request are banned until it has enough."""
        if len(s.token_ids) - s.num_prompt_tokens >= s.params.min_tokens:
            return []
        stops = list(s.params.stop_token_ids)
        if self.eos_token_id is not None and not s.params.ignore_eos:
            stops.append(self.eos_token_id)
        return stops

    def _prompt_logprobs(self, hidden, batch: _Batch, sched: SchedulerOutput,
                         out: ModelRunnerOutput) -> None:
        """Logprobs of each prompt token given the ones before it, chunk by chunk."""
        for state, start in zip(batch.order, batch.row_starts):
            k = state.params.prompt_logprobs
            if k is None:
                continue
            c = state.num_computed_tokens
            # Rows c .. end-1 predict prompt tokens c+1 .. end; skip those sent before a preemption.
            first = max(c, self._num_prompt_logprobs_sent.get(state.req_id, 0))
            end = min(c + sched.num_scheduled_tokens[state.req_id], state.num_prompt_tokens - 1)
            if first >= end and c >= state.num_prompt_tokens:
                continue
            entries: list[TokenLogprobs] = []
            if end > first:
                rows = hidden[start + first - c:start + end - c]
                logits = self.model.compute_logits(rows).float().cpu()
                targets = torch.tensor(state.token_ids[first + 1:end + 1])
                entries = top_logprobs(logits.log_softmax(-1), targets, [k] * (end - first))
                self._num_prompt_logprobs_sent[state.req_id] = end
            out.prompt_logprobs[state.req_id] = entries
