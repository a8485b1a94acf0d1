"""Turns the engine core's new tokens into user-facing outputs: text, stop strings, logprobs.

A request with n > 1 runs as n child requests in the core; their outputs are gathered here
under the parent's id.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from engine.detokenizer import IncrementalDetokenizer
from engine.outputs import CompletionOutput, Logprob, RequestMetrics, RequestOutput
from engine.sampling_params import SamplingParams
from engine.step import EngineCoreOutput, TokenLogprobs


class OutputKind(enum.Enum):
    CUMULATIVE = "cumulative"  # every output carries everything so far
    DELTA = "delta"  # only what is new since the last output (for streaming)
    FINAL_ONLY = "final"  # one output when the request ends


def child_request_ids(request_id: str, n: int) -> list[str]:
    return [request_id] if n == 1 else [f"{i}_{request_id}" for i in range(n)]


@dataclass
class _Child:
    completion: CompletionOutput
    detokenizer: IncrementalDetokenizer | None
    num_sent_tokens: int = 0
    num_sent_chars: int = 0
    num_sent_logprobs: int = 0
    is_finish_sent: bool = False


@dataclass
class _Parent:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    kind: OutputKind
    children: dict[str, _Child]
    metrics: RequestMetrics
    prompt_logprobs: list | None = None
    num_cached_tokens: int = 0
    num_finished: int = 0
    sent_prompt_logprobs: bool = False
    aborted_children: list[str] = field(default_factory=list)


class OutputProcessor:
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._parents: dict[str, _Parent] = {}
        self._child_to_parent: dict[str, str] = {}

    def add_request(self, request_id: str, prompt: str | None, prompt_token_ids: list[int],
                    params: SamplingParams, kind: OutputKind, arrival_time: float) -> list[str]:
        children = {}
        for i, child_id in enumerate(child_request_ids(request_id, params.n)):
            detok = None
            if self.tokenizer is not None:
                detok = IncrementalDetokenizer(
                    self.tokenizer, prompt_token_ids, skip_special_tokens=params.skip_special_tokens,
                    spaces_between_special_tokens=params.spaces_between_special_tokens)
            children[child_id] = _Child(CompletionOutput(i, logprobs=[] if params.logprobs is not None else None,
                                                         cumulative_logprob=0.0 if params.logprobs is not None else None),
                                        detok)
            self._child_to_parent[child_id] = request_id
        self._parents[request_id] = _Parent(request_id, prompt, list(prompt_token_ids), params, kind,
                                            children, RequestMetrics(arrival_time))
        return list(children)

    def has_request(self, request_id: str) -> bool:
        return request_id in self._parents

    def child_ids(self, request_id: str) -> list[str]:
        parent = self._parents.get(request_id)
        return list(parent.children) if parent else []

    def process(self, core_outputs: list[EngineCoreOutput], now: float
                ) -> tuple[list[RequestOutput], list[str]]:
        """Apply one step's outputs; returns the user outputs and the child ids a stop string ended."""
        touched: dict[str, _Parent] = {}
        stopped: list[str] = []
        for co in core_outputs:
            parent = self._parents.get(self._child_to_parent.get(co.req_id, ""))
            if parent is None:
                continue
            if self._apply(parent, parent.children[co.req_id], co):
                stopped.append(co.req_id)
            if co.new_token_ids and parent.metrics.first_token_time is None:
                parent.metrics.first_token_time = now
            if parent.metrics.first_scheduled_time is None:
                parent.metrics.first_scheduled_time = co.first_scheduled_time
            touched[parent.request_id] = parent
        outputs = [out for p in touched.values() if (out := self._make_output(p, now)) is not None]
        return outputs, stopped

    def abort(self, request_id: str, now: float) -> RequestOutput | None:
        """Mark every unfinished child aborted; returns the final output for the parent."""
        parent = self._parents.get(request_id)
        if parent is None:
            return None
        for child in parent.children.values():
            if child.completion.finish_reason is None:
                child.completion.finish_reason = "abort"
                parent.num_finished += 1
        return self._make_output(parent, now)

    def _apply(self, parent: _Parent, child: _Child, co: EngineCoreOutput) -> bool:
        comp = child.completion
        if co.new_prompt_logprobs is not None:
            parent.prompt_logprobs = (parent.prompt_logprobs or [None]) + [self._logprobs(e) for e in co.new_prompt_logprobs]
        parent.num_cached_tokens = co.num_cached_tokens
        comp.token_ids.extend(co.new_token_ids)
        if co.new_logprobs:
            for token_id, entry in zip(co.new_token_ids, co.new_logprobs):
                comp.logprobs.append(self._logprobs(entry))
                comp.cumulative_logprob += entry[token_id][0]
        hit_stop = False
        if child.detokenizer is not None and co.new_token_ids:
            num_old_chars = len(comp.text)
            child.detokenizer.add(co.new_token_ids)
            comp.text = child.detokenizer.text
            hit_stop = self._check_stop_strings(comp, parent.params, num_old_chars)
        if not hit_stop and co.finish_reason is not None:
            comp.finish_reason, comp.stop_reason = co.finish_reason, co.stop_reason
            if child.detokenizer is not None:  # release a trailing partial character
                child.detokenizer.finish()
                comp.text = child.detokenizer.text
        if comp.finish_reason is not None:
            parent.num_finished += 1
        return hit_stop

    def _check_stop_strings(self, comp: CompletionOutput, params: SamplingParams,
                            num_old_chars: int) -> bool:
        """A stop string ending in the new text; older text was searched on earlier steps."""
        if not params.stop_strings or len(comp.token_ids) < params.min_tokens:
            return False
        for stop in params.stop_strings:
            at = comp.text.find(stop, max(0, num_old_chars - len(stop) + 1))
            if at >= 0:
                end = at + len(stop) if params.include_stop_str_in_output else at
                comp.text = comp.text[:end]
                comp.finish_reason, comp.stop_reason = "stop", stop
                return True
        return False

    def _logprobs(self, entry: TokenLogprobs) -> dict[int, Logprob]:
        decode = self.tokenizer.decode if self.tokenizer is not None else (lambda ids: None)
        return {tid: Logprob(lp, rank, decode([tid])) for tid, (lp, rank) in entry.items()}

    def _make_output(self, parent: _Parent, now: float) -> RequestOutput | None:
        finished = parent.num_finished == len(parent.children)
        if finished:
            parent.metrics.finished_time = now
            self._forget(parent)
        if parent.kind == OutputKind.FINAL_ONLY and not finished:
            return None
        completions = [self._view(parent, c, finished) for c in parent.children.values()]
        prompt_lps = parent.prompt_logprobs
        if parent.kind == OutputKind.DELTA:
            if parent.sent_prompt_logprobs:
                prompt_lps = None
            parent.sent_prompt_logprobs |= prompt_lps is not None
        return RequestOutput(parent.request_id, parent.prompt, parent.prompt_token_ids, completions,
                             finished, prompt_lps, parent.num_cached_tokens, parent.metrics)

    def _view(self, parent: _Parent, child: _Child, finished: bool) -> CompletionOutput:
        comp = child.completion
        if parent.kind != OutputKind.DELTA:
            return CompletionOutput(comp.index, comp.text, list(comp.token_ids), comp.cumulative_logprob,
                                    list(comp.logprobs) if comp.logprobs is not None else None,
                                    comp.finish_reason, comp.stop_reason)
        # Streaming holds back text that could still turn out to be the start of a stop string.
        hold = 0 if comp.finish_reason else max((len(s) - 1 for s in parent.params.stop_strings), default=0)
        text_end = max(child.num_sent_chars, len(comp.text) - hold)
        finish = None if child.is_finish_sent else comp.finish_reason  # report an end once
        child.is_finish_sent |= finish is not None
        delta = CompletionOutput(
            comp.index, comp.text[child.num_sent_chars:text_end], comp.token_ids[child.num_sent_tokens:],
            comp.cumulative_logprob,
            comp.logprobs[child.num_sent_logprobs:] if comp.logprobs is not None else None,
            finish, comp.stop_reason if finish else None)
        child.num_sent_chars, child.num_sent_tokens = text_end, len(comp.token_ids)
        child.num_sent_logprobs = len(comp.logprobs or [])
        return delta

    def _forget(self, parent: _Parent) -> None:
        self._parents.pop(parent.request_id, None)
        for child_id in parent.children:
            self._child_to_parent.pop(child_id, None)
