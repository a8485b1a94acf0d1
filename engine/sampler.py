"""Vectorized sampling over the rows of one step: penalties, bias, truncation, then a draw.

Greedy rows take the argmax. Random rows divide probabilities by exponential noise and take
the argmax (equivalent to a categorical draw, with no host sync); a row with its own seed draws
its noise from its own generator, so its tokens do not depend on what it was batched with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.sampling_params import SamplingParams
from engine.step import TokenLogprobs


@dataclass
class SamplingBatch:
    """Per-row settings for the rows that sample this step, built by the model runner."""

    temperature: torch.Tensor  # [rows] float, 0 for greedy rows
    top_k: torch.Tensor | None  # [rows] long, vocab size where off
    top_p: torch.Tensor | None  # [rows] float
    min_p: torch.Tensor | None  # [rows] float
    presence_penalty: torch.Tensor | None  # [rows]
    frequency_penalty: torch.Tensor | None  # [rows]
    repetition_penalty: torch.Tensor | None  # [rows]
    prompt_token_ids: list[list[int]]
    output_token_ids: list[list[int]]
    logit_bias: list[dict[int, float] | None]
    banned_token_ids: list[list[int]]  # eos and stop ids while a row is under min_tokens
    generators: list[torch.Generator | None]
    num_logprobs: list[int | None]

    @property
    def all_greedy(self) -> bool:
        return bool((self.temperature == 0).all())


def top_logprobs(logprobs: torch.Tensor, chosen: torch.Tensor, num: list[int | None]) -> list[TokenLogprobs | None]:
    """Per row: the chosen token and the `num` most likely, each with (logprob, rank)."""
    k = max((n for n in num if n), default=0)
    chosen_lp = logprobs.gather(1, chosen[:, None])  # [rows, 1]
    ranks = (logprobs > chosen_lp).sum(dim=1) + 1
    top_vals, top_ids = logprobs.topk(k, dim=1) if k else (None, None)
    out: list[TokenLogprobs | None] = []
    for i, n in enumerate(num):
        if n is None:
            out.append(None)
            continue
        entry = {int(chosen[i]): (float(chosen_lp[i, 0]), int(ranks[i]))}
        for r in range(n):
            entry.setdefault(int(top_ids[i, r]), (float(top_vals[i, r]), r + 1))
        out.append(entry)
    return out


def takes_argmax(params: SamplingParams) -> bool:
    """Greedy with nothing that changes the logits first (no bias, penalty, min_tokens ban) and
    no logprobs: the token is the logits' argmax, whatever the rest of the batch wants."""
    return (params.is_greedy and params.logprobs is None and not params.logit_bias and params.min_tokens == 0
            and params.repetition_penalty == 1.0 and params.presence_penalty == 0.0
            and params.frequency_penalty == 0.0)


class Sampler:
    def __init__(self, seed: int, kernels=None) -> None:
        """kernels: dyno's CPU kernels, whose argmax_rows takes plain greedy rows of bf16 logits."""
        self.generator = torch.Generator().manual_seed(seed)
        self.kernels = kernels

    def __call__(self, logits: torch.Tensor, batch: SamplingBatch
                 ) -> tuple[torch.Tensor, list[TokenLogprobs | None]]:
        """logits: [rows, vocab] on the CPU, fp32 or the model's dtype -> (token ids [rows],
        logprobs per row or None). Whatever the dtype, the work is done in fp32."""
        wants_logprobs = any(n is not None for n in batch.num_logprobs)
        adjusts = _adjusts(batch)
        if not wants_logprobs and not adjusts and batch.all_greedy:
            return self.argmax(logits), [None] * len(batch.num_logprobs)
        logits = logits.float()
        raw_logprobs = logits.log_softmax(-1) if wants_logprobs else None
        if adjusts:
            logits = self._adjust(logits, batch)
        if batch.all_greedy:
            tokens = self.argmax(logits)
        else:
            tokens = self._draw(logits, batch)
        lps = top_logprobs(raw_logprobs, tokens, batch.num_logprobs) if raw_logprobs is not None \
            else [None] * len(batch.num_logprobs)
        return tokens, lps

    def argmax(self, logits: torch.Tensor) -> torch.Tensor:
        """Each row's first largest logit: the tokens when every row takes_argmax."""
        if self.kernels is not None and logits.dtype == torch.bfloat16:
            # the argmax of the bf16 values is the argmax of their exact fp32 copies
            return self.kernels.argmax_rows(logits)
        # max's indices: argmax's tokens (the first of ties) in 40% of its time on the CPU
        return logits.float().max(dim=-1).indices

    def _adjust(self, logits: torch.Tensor, b: SamplingBatch) -> torch.Tensor:
        logits = logits.clone()
        for i, bias in enumerate(b.logit_bias):
            if bias:
                ids = torch.tensor(list(bias), dtype=torch.long)
                logits[i, ids] += torch.tensor(list(bias.values()), dtype=logits.dtype)
        for i, banned in enumerate(b.banned_token_ids):
            if banned:
                logits[i, banned] = float("-inf")
        if b.repetition_penalty is not None or b.presence_penalty is not None or b.frequency_penalty is not None:
            logits = _apply_penalties(logits, b)
        return logits

    def _draw(self, logits: torch.Tensor, b: SamplingBatch) -> torch.Tensor:
        greedy = b.temperature == 0
        temperature = torch.where(greedy, torch.ones_like(b.temperature), b.temperature)
        scaled = logits / temperature[:, None]
        scaled = _truncate(scaled, b)
        probs = scaled.softmax(dim=-1)
        noise = torch.empty_like(probs)
        noise.exponential_(generator=self.generator)
        for i, gen in enumerate(b.generators):
            if gen is not None:
                noise[i].exponential_(generator=gen)
        drawn = (probs / noise).max(dim=-1).indices
        return torch.where(greedy, logits.max(dim=-1).indices, drawn)


def _adjusts(b: SamplingBatch) -> bool:
    """Whether bias, bans or penalties change some row's logits before the draw."""
    return any(b.logit_bias) or any(b.banned_token_ids) or b.repetition_penalty is not None \
        or b.presence_penalty is not None or b.frequency_penalty is not None


def _apply_penalties(logits: torch.Tensor, b: SamplingBatch) -> torch.Tensor:
    rows, vocab = logits.shape
    counts = torch.zeros(rows, vocab, dtype=logits.dtype)
    for i, ids in enumerate(b.output_token_ids):
        if ids:
            counts[i].index_add_(0, torch.tensor(ids), torch.ones(len(ids), dtype=logits.dtype))
    if b.repetition_penalty is not None:
        seen = counts > 0
        for i, ids in enumerate(b.prompt_token_ids):
            seen[i, ids] = True
        p = b.repetition_penalty[:, None].expand_as(logits)
        penalized = torch.where(logits > 0, logits / p, logits * p)
        logits = torch.where(seen, penalized, logits)
    if b.frequency_penalty is not None:
        logits = logits - b.frequency_penalty[:, None] * counts
    if b.presence_penalty is not None:
        logits = logits - b.presence_penalty[:, None] * (counts > 0).to(logits.dtype)
    return logits


def _truncate(logits: torch.Tensor, b: SamplingBatch) -> torch.Tensor:
    """min_p, then top-k and top-p over one descending sort."""
    if b.min_p is not None:
        probs = logits.softmax(dim=-1)
        threshold = probs.max(dim=-1, keepdim=True).values * b.min_p[:, None]
        logits = logits.masked_fill(probs < threshold, float("-inf"))
    if b.top_k is None and b.top_p is None:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    drop = torch.zeros_like(sorted_logits, dtype=torch.bool)
    if b.top_k is not None:
        ranks = torch.arange(logits.shape[1])[None, :]
        drop |= ranks >= b.top_k[:, None]
    if b.top_p is not None:
        probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        drop |= mass_before >= b.top_p[:, None]
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, sorted_logits)
