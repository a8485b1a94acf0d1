"""The plain data that crosses the scheduler / model-runner boundary once per step."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.sampling_params import SamplingParams

# token id -> (logprob, rank in the vocabulary, 1 = most likely)
TokenLogprobs = dict[int, tuple[float, int]]


@dataclass(slots=True)
class NewRequestData:
    """A request the runner has not seen, or one resumed after preemption (sent in full again)."""

    req_id: str
    token_ids: list[int]
    num_prompt_tokens: int
    block_ids: list[int]
    num_computed_tokens: int
    params: SamplingParams


@dataclass(slots=True)
class CachedRequestData:
    """A request the runner already holds: only what changed."""

    req_id: str
    new_block_ids: list[int]
    num_computed_tokens: int


@dataclass
class SchedulerOutput:
    new_reqs: list[NewRequestData]
    cached_reqs: list[CachedRequestData]
    num_scheduled_tokens: dict[str, int]
    # Requests the runner must drop since the last step: ended ones for good, preempted ones
    # until they come back as new requests.
    finished_req_ids: set[str] = field(default_factory=set)
    preempted_req_ids: set[str] = field(default_factory=set)

    @property
    def total_num_scheduled_tokens(self) -> int:
        return sum(self.num_scheduled_tokens.values())


@dataclass
class ModelRunnerOutput:
    # Requests whose scheduled tokens reached their end get one sampled token; prefill chunks none.
    sampled_token_ids: dict[str, list[int]]
    logprobs: dict[str, list[TokenLogprobs]] = field(default_factory=dict)
    # For each prompt position after the first: the logprobs of the prompt token there.
    prompt_logprobs: dict[str, list[TokenLogprobs]] = field(default_factory=dict)


@dataclass(slots=True)
class EngineCoreOutput:
    req_id: str
    new_token_ids: list[int]
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_reason: int | str | None = None
    new_logprobs: list[TokenLogprobs] | None = None
    new_prompt_logprobs: list[TokenLogprobs] | None = None
    num_cached_tokens: int = 0
    num_prompt_tokens: int = 0  # set on a request's first output only, for the prompt counter
    first_scheduled_time: float | None = None
