"""engine/scheduler.py without a model: schedule, hand-build the runner's output, apply it."""

from __future__ import annotations

import types
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine import LLM
from engine.request import RequestStatus
from engine.scheduler import Scheduler
from engine.step import (CachedRequestData, ModelRunnerOutput, NewRequestData, SchedulerOutput)
from tests.engine.factories import (BLOCK_SIZE, EOS_TOKEN_ID, chain_hashes, create_requests,
                                    create_scheduler, make_runner_output, ref_counts, step)


def add(scheduler: Scheduler, requests) -> None:
    for request in requests:
        scheduler.add_request(request)


# -- admission and budgets --------------------------------------------------------------------

def test_new_requests_then_decodes():
    scheduler = create_scheduler()
    requests = create_requests(3, 10)
    add(scheduler, requests)

    sched = scheduler.schedule()
    assert sched.new_reqs == [
        NewRequestData(str(i), [100 + i] * 10, 10, [i + 1], 0, requests[i].params) for i in range(3)]
    assert sched.cached_reqs == []
    assert sched.num_scheduled_tokens == {"0": 10, "1": 10, "2": 10}
    assert sched.total_num_scheduled_tokens == 30
    assert sched.finished_req_ids == set() and sched.preempted_req_ids == set()
    assert [r.status for r in requests] == [RequestStatus.RUNNING] * 3
    assert scheduler.running == requests and not scheduler.waiting

    outputs = scheduler.update_from_output(sched, ModelRunnerOutput({"0": [7], "1": [8], "2": [9]}))
    assert [(o.req_id, o.new_token_ids, o.finish_reason, o.num_prompt_tokens) for o in outputs] == [
        ("0", [7], None, 10), ("1", [8], None, 10), ("2", [9], None, 10)]
    assert [r.num_computed_tokens for r in requests] == [10, 10, 10]
    assert requests[1].all_token_ids == [101] * 10 + [8]

    sched = scheduler.schedule()
    assert sched.new_reqs == []
    assert sched.cached_reqs == [CachedRequestData(str(i), [], 10) for i in range(3)]
    assert sched.num_scheduled_tokens == {"0": 1, "1": 1, "2": 1}
    outputs = scheduler.update_from_output(sched, ModelRunnerOutput({"0": [5], "1": [5], "2": [5]}))
    assert [o.num_prompt_tokens for o in outputs] == [0, 0, 0]  # only on the first output
    assert scheduler.kv_cache.num_free_blocks == 97


def test_token_budget_split_with_chunked_prefill():
    scheduler = create_scheduler(max_num_batched_tokens=32, enable_chunked_prefill=True)
    requests = create_requests(3, 20)
    add(scheduler, requests)

    sched, outputs = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 20, "1": 12}
    assert [n.block_ids for n in sched.new_reqs] == [[1, 2], [3]]
    assert list(outputs) == ["0"]  # request 1's chunk stops short of its end: nothing sampled
    assert [r.num_computed_tokens for r in requests] == [20, 12, 0]
    assert requests[2].status == RequestStatus.WAITING

    sched, outputs = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 1, "1": 8, "2": 20}
    assert sched.cached_reqs == [CachedRequestData("0", [], 20), CachedRequestData("1", [4], 12)]
    assert [(n.req_id, n.block_ids) for n in sched.new_reqs] == [("2", [5, 6])]
    assert list(outputs) == ["0", "1", "2"]


def test_without_chunking_a_prompt_waits_for_room_in_the_budget():
    scheduler = create_scheduler(max_num_batched_tokens=32)
    requests = create_requests(3, 20)
    add(scheduler, requests)

    sched, _ = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 20}  # 20 > 12 left: request 1 waits, and 2 behind it
    assert [r.status for r in requests] == [RequestStatus.RUNNING, RequestStatus.WAITING,
                                            RequestStatus.WAITING]
    sched, _ = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 1, "1": 20}
    sched, _ = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 1, "1": 1, "2": 20}


def test_a_wave_of_prompts_is_admitted_in_turns_under_the_prompt_batch_cap():
    scheduler = create_scheduler(max_num_batched_tokens=1024, prompt_batch_tokens=48)
    requests = create_requests(5, 20)
    add(scheduler, requests)
    sched, _ = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 20, "1": 20}  # a third would make 60 > 48
    sched, _ = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 1, "1": 1, "2": 20, "3": 20}
    sched, _ = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 1, "1": 1, "2": 1, "3": 1, "4": 20}


def test_a_prompt_over_the_prompt_batch_cap_still_goes_first_and_alone():
    scheduler = create_scheduler(max_num_batched_tokens=1024, prompt_batch_tokens=48)
    add(scheduler, create_requests(1, 100) + create_requests(1, 10, start=1))
    sched, _ = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 100}
    sched, _ = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 1, "1": 10}


def test_without_chunking_a_prompt_over_the_budget_is_never_split():
    scheduler = create_scheduler(max_num_batched_tokens=32)
    (long,) = create_requests(1, 40)
    (short,) = create_requests(1, 5, start=1)
    add(scheduler, [long, short])
    sched = scheduler.schedule()
    assert sched.num_scheduled_tokens == {}
    assert long.status == short.status == RequestStatus.WAITING
    assert long.num_computed_tokens == 0
    assert scheduler.kv_cache.num_free_blocks == 100


def test_max_num_seqs_caps_the_running_set():
    scheduler = create_scheduler(max_num_seqs=2)
    requests = create_requests(3, 10, max_tokens=2)
    add(scheduler, requests)

    sched, _ = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 10, "1": 10}
    assert requests[2].status == RequestStatus.WAITING
    sched, outputs = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 1, "1": 1}
    assert [outputs[r].finish_reason for r in ("0", "1")] == ["length", "length"]
    sched, _ = step(scheduler)
    assert sched.finished_req_ids == {"0", "1"}
    assert sched.num_scheduled_tokens == {"2": 10}
    # Freed unhashed blocks go to the front: request 1's block was freed last.
    assert sched.new_reqs[0].block_ids == [2]


def test_chunked_prefill_over_several_steps_with_decodes_riding_along():
    scheduler = create_scheduler(max_num_batched_tokens=16, enable_chunked_prefill=True)
    (short,) = create_requests(1, 5)
    (long,) = create_requests(1, 40, start=1)
    add(scheduler, [short, long])

    sched, outputs = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 5, "1": 11}
    assert [(n.req_id, n.block_ids, n.num_computed_tokens) for n in sched.new_reqs] == [
        ("0", [1], 0), ("1", [2], 0)]
    assert list(outputs) == ["0"]

    sched, outputs = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 1, "1": 15}
    assert sched.cached_reqs == [CachedRequestData("0", [], 5), CachedRequestData("1", [3], 11)]
    assert list(outputs) == ["0"]

    sched, outputs = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 1, "1": 14}
    assert sched.cached_reqs == [CachedRequestData("0", [], 6), CachedRequestData("1", [4], 26)]
    assert list(outputs) == ["0", "1"]
    assert outputs["1"].num_prompt_tokens == 40
    assert long.num_computed_tokens == 40 and long.num_tokens == 41
    assert scheduler.kv_cache.get_block_ids("1") == [2, 3, 4]
    hashes = chain_hashes(long.all_token_ids)
    assert [scheduler.kv_cache.pool.blocks[i].block_hash for i in (2, 3, 4)] == [
        hashes[0], hashes[1], None]

    sched, _ = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 1, "1": 1}


def test_a_request_added_mid_flight_joins_the_decodes():
    scheduler = create_scheduler()
    (first,) = create_requests(1, 10)
    add(scheduler, [first])
    step(scheduler)
    add(scheduler, create_requests(1, 20, start=1))
    sched, outputs = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 1, "1": 20}
    assert [c.req_id for c in sched.cached_reqs] == ["0"]
    assert [(n.req_id, n.block_ids) for n in sched.new_reqs] == [("1", [2, 3])]
    assert list(outputs) == ["0", "1"]


# -- prefix caching through the scheduler ------------------------------------------------------

def test_prefix_hit_in_a_later_step():
    scheduler = create_scheduler()
    req0, req1 = create_requests(2, 40, same_prompt=True)
    add(scheduler, [req0])
    sched, outputs = step(scheduler)
    assert sched.new_reqs[0].block_ids == [1, 2, 3]
    assert outputs["0"].num_cached_tokens == 0

    add(scheduler, [req1])
    sched, outputs = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 1, "1": 8}
    assert [(n.req_id, n.block_ids, n.num_computed_tokens) for n in sched.new_reqs] == [
        ("1", [1, 2, 4], 32)]
    assert outputs["1"].num_cached_tokens == 32
    assert outputs["1"].num_prompt_tokens == 40
    assert ref_counts(scheduler.kv_cache.pool)[:6] == [1, 2, 2, 1, 1, 0]
    stats = scheduler.kv_cache.stats
    assert (stats.num_queried_tokens, stats.num_hit_tokens) == (80, 32)


def test_prefix_hit_in_the_same_step():
    # Blocks are registered when allocated, so a later request in the same batch shares them
    # (the model writes each layer's KV for the whole batch before attending).
    scheduler = create_scheduler()
    req0, req1 = create_requests(2, 40, same_prompt=True)
    add(scheduler, [req0, req1])
    sched = scheduler.schedule()
    assert sched.num_scheduled_tokens == {"0": 40, "1": 8}
    assert [(n.block_ids, n.num_computed_tokens) for n in sched.new_reqs] == [
        ([1, 2, 3], 0), ([1, 2, 4], 32)]


def test_full_prompt_hit_computes_the_last_token():
    scheduler = create_scheduler()
    req0, req1 = create_requests(2, 32, same_prompt=True)
    add(scheduler, [req0])
    step(scheduler)
    add(scheduler, [req1])
    sched, outputs = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 1, "1": 16}
    assert [(n.block_ids, n.num_computed_tokens) for n in sched.new_reqs] == [([1, 4], 16)]
    assert outputs["1"].new_token_ids == [7]
    assert outputs["1"].num_cached_tokens == 16


# -- preemption ---------------------------------------------------------------------------------

def test_preempt_the_last_admitted_when_blocks_run_out():
    scheduler = create_scheduler(num_blocks=7, enable_prefix_caching=False)  # 6 usable blocks
    (req0,) = create_requests(1, 32, max_tokens=3)
    (req1,) = create_requests(1, 20, start=1)
    (req2,) = create_requests(1, 32, start=2)
    add(scheduler, [req0, req1, req2])

    sched, _ = step(scheduler)
    assert [n.block_ids for n in sched.new_reqs] == [[1, 2], [3, 4], [5, 6]]
    assert scheduler.kv_cache.pool.free_block_ids() == []

    # Request 0 needs a third block; request 2, the last admitted, gives its blocks up.
    sched, _ = step(scheduler)
    assert sched.preempted_req_ids == {"2"}
    assert sched.num_scheduled_tokens == {"0": 1, "1": 1}
    assert sched.cached_reqs == [CachedRequestData("0", [5], 32), CachedRequestData("1", [], 20)]
    assert req2.status == RequestStatus.PREEMPTED
    assert req2.num_computed_tokens == 0
    assert req2.all_token_ids == [102] * 32 + [7]
    assert req2.num_preemptions == 1 and scheduler.num_preemptions == 1
    assert list(scheduler.waiting) == [req2] and scheduler.running == [req0, req1]
    assert scheduler.kv_cache.get_block_ids("2") == []
    assert scheduler.kv_cache.pool.free_block_ids() == [6]

    # 33 tokens need 3 blocks, 1 is free: request 2 waits; request 0 finishes this step.
    sched, outputs = step(scheduler)
    assert sched.preempted_req_ids == set()
    assert sched.num_scheduled_tokens == {"0": 1, "1": 1}
    assert outputs["0"].finish_reason == "length"
    assert scheduler.kv_cache.pool.free_block_ids() == [1, 2, 5, 6]

    sched, outputs = step(scheduler)
    assert sched.finished_req_ids == {"0"}
    assert sched.num_scheduled_tokens == {"1": 1, "2": 33}
    assert sched.new_reqs == [NewRequestData("2", [102] * 32 + [7], 32, [1, 2, 5], 0, req2.params)]
    assert req2.status == RequestStatus.RUNNING
    assert outputs["2"].new_token_ids == [7]
    assert outputs["2"].num_prompt_tokens == 0  # its first output was before the preemption
    assert req2.output_token_ids == [7, 7]


def test_a_request_that_runs_out_preempts_itself_when_last():
    scheduler = create_scheduler(num_blocks=5, enable_prefix_caching=False)
    (req0,) = create_requests(1, 20)
    (req1,) = create_requests(1, 32, start=1)
    add(scheduler, [req0, req1])
    step(scheduler)
    sched, _ = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 1}
    assert sched.preempted_req_ids == {"1"}
    assert scheduler.running == [req0] and list(scheduler.waiting) == [req1]
    assert scheduler.kv_cache.pool.free_block_ids() == [3, 4]
    sched, _ = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 1}  # 33 tokens need 3 blocks; 2 are free


def test_preempted_request_resumes_from_its_cached_head():
    scheduler = create_scheduler(num_blocks=5)  # 4 usable blocks
    (req0,) = create_requests(1, 32, max_tokens=3)
    (req1,) = create_requests(1, 32, start=1)
    add(scheduler, [req0, req1])
    step(scheduler)

    sched, _ = step(scheduler)
    assert sched.preempted_req_ids == {"1"}
    # Request 1's hashed blocks went to the back tail first, so its tail block 4 is reused first.
    assert sched.cached_reqs == [CachedRequestData("0", [4], 32)]
    assert scheduler.kv_cache.pool.free_block_ids() == [3]

    sched, _ = step(scheduler)  # request 0 finishes; request 1 still does not fit
    assert sched.num_scheduled_tokens == {"0": 1}
    assert scheduler.kv_cache.pool.free_block_ids() == [4, 3, 2, 1]

    sched, _ = step(scheduler)
    assert sched.finished_req_ids == {"0"}
    assert sched.num_scheduled_tokens == {"1": 17}
    assert [(n.req_id, n.block_ids, n.num_computed_tokens) for n in sched.new_reqs] == [
        ("1", [3, 4, 2], 16)]


# -- finishing ----------------------------------------------------------------------------------

def test_finished_request_is_freed_and_reported_next_step():
    scheduler = create_scheduler()
    (req,) = create_requests(1, 10, max_tokens=1)
    add(scheduler, [req])
    sched, outputs = step(scheduler)
    assert outputs["0"].finish_reason == "length"
    assert req.status == RequestStatus.FINISHED_LENGTH
    assert scheduler.running == [] and "0" not in scheduler.requests
    assert scheduler.kv_cache.num_free_blocks == 100
    assert not scheduler.has_unfinished_requests()
    sched = scheduler.schedule()
    assert sched.finished_req_ids == {"0"}
    assert sched.num_scheduled_tokens == {}
    assert scheduler.schedule().finished_req_ids == set()


def run_one(scheduler: Scheduler, request, sampled: list[int]):
    """Run one request to its end on the given sampled tokens; its outputs in order."""
    add(scheduler, [request])
    outputs = []
    for token in sampled:
        _, step_outputs = step(scheduler, {request.request_id: token})
        outputs.append(step_outputs[request.request_id])
        if request.is_finished:
            break
    return outputs


@pytest.mark.parametrize(("params", "sampled", "expected", "reason", "stop_reason"), [
    pytest.param({}, [7, EOS_TOKEN_ID, 7], [7, EOS_TOKEN_ID], "stop", None, id="eos"),
    pytest.param({"ignore_eos": True, "max_tokens": 3}, [EOS_TOKEN_ID] * 4, [EOS_TOKEN_ID] * 3,
                 "length", None, id="ignore_eos"),
    pytest.param({"stop_token_ids": [42]}, [7, 42, 7], [7, 42], "stop", 42, id="stop_token_ids"),
    pytest.param({"max_tokens": 3}, [7] * 5, [7, 7, 7], "length", None, id="max_tokens"),
    pytest.param({"min_tokens": 3, "stop_token_ids": [42]}, [EOS_TOKEN_ID, 42, 7, EOS_TOKEN_ID, 7],
                 [EOS_TOKEN_ID, 42, 7, EOS_TOKEN_ID], "stop", None, id="min_tokens"),
    pytest.param({"min_tokens": 2, "stop_token_ids": [42]}, [42, 42, 7], [42, 42], "stop", 42,
                 id="min_tokens_boundary"),
    # A stop token on the last allowed token reports "stop" (vLLM V0's order of checks).
    pytest.param({"max_tokens": 2}, [7, EOS_TOKEN_ID], [7, EOS_TOKEN_ID], "stop", None,
                 id="eos_at_max_tokens"),
])
def test_stop_conditions(params, sampled, expected, reason, stop_reason):
    scheduler = create_scheduler()
    (req,) = create_requests(1, 10, **params)
    outputs = run_one(scheduler, req, sampled)
    assert [t for o in outputs for t in o.new_token_ids] == expected
    assert [o.finish_reason for o in outputs] == [None] * (len(expected) - 1) + [reason]
    assert outputs[-1].stop_reason == stop_reason
    assert req.output_token_ids == expected
    assert req.is_finished and scheduler.kv_cache.num_free_blocks == 100


def test_max_model_len_stops_with_length():
    scheduler = create_scheduler(max_model_len=12)
    (req,) = create_requests(1, 10)
    outputs = run_one(scheduler, req, [7] * 5)
    assert [o.new_token_ids for o in outputs] == [[7], [7]]
    assert outputs[-1].finish_reason == "length"
    assert req.status == RequestStatus.FINISHED_LENGTH


def test_finish_requests_aborts_running_and_waiting():
    scheduler = create_scheduler(max_num_seqs=1)
    req0, req1 = create_requests(2, 10)
    add(scheduler, [req0, req1])
    step(scheduler)
    assert scheduler.kv_cache.num_free_blocks == 99
    scheduler.finish_requests(["0", "1", "unknown"], RequestStatus.FINISHED_ABORTED)
    assert req0.status == req1.status == RequestStatus.FINISHED_ABORTED
    assert scheduler.running == [] and not scheduler.waiting
    assert scheduler.kv_cache.num_free_blocks == 100
    assert not scheduler.has_unfinished_requests()
    scheduler.finish_requests(["0"], RequestStatus.FINISHED_ABORTED)  # twice: a no-op
    sched = scheduler.schedule()
    assert sched.finished_req_ids == {"0", "1"}
    assert sched.num_scheduled_tokens == {}


def test_abort_between_schedule_and_update():
    scheduler = create_scheduler()
    req0, req1 = create_requests(2, 10)
    add(scheduler, [req0, req1])
    sched = scheduler.schedule()
    result = make_runner_output(scheduler, sched)
    scheduler.finish_requests(["0"], RequestStatus.FINISHED_ABORTED)
    outputs = scheduler.update_from_output(sched, result)
    assert [o.req_id for o in outputs] == ["1"]
    assert req0.all_token_ids == [100] * 10 and req0.num_computed_tokens == 0
    assert scheduler.running == [req1]
    assert scheduler.schedule().finished_req_ids == {"0"}


def test_delay_factor_holds_new_prompts_back(monkeypatch):
    clock = [10.0]
    monkeypatch.setattr("engine.scheduler.time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    scheduler = create_scheduler(delay_factor=0.5)
    req0, req1 = create_requests(2, 10)
    add(scheduler, [req0])
    sched, _ = step(scheduler)  # nothing running: no delay
    assert sched.num_scheduled_tokens == {"0": 10}

    req1.arrival_time = 11.0
    add(scheduler, [req1])
    clock[0] = 12.0  # the last prompt step took 2 s: wait 0.5 * 2 = 1 s past the arrival
    sched, _ = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 1}
    clock[0] = 12.5
    sched, _ = step(scheduler)
    assert sched.num_scheduled_tokens == {"0": 1, "1": 10}


# -- property: no leaks, no wrong sharing -----------------------------------------------------

@dataclass
class _RunnerState:
    token_ids: list[int]
    block_ids: list[int]
    num_computed: int


@dataclass
class FakeRunner:
    """Keeps what engine/model_runner.py keeps, from SchedulerOutputs alone, and "computes" KV:
    a slot holds what a real one depends on, the whole prefix up to its token. Every step reads
    back each scheduled request's context through its block table, so a block shared, cached or
    reused wrongly shows up."""

    states: dict[str, _RunnerState] = field(default_factory=dict)
    kv: dict[int, list[tuple[int, ...] | None]] = field(default_factory=dict)

    def execute(self, sched: SchedulerOutput, tokens: list[int]) -> ModelRunnerOutput:
        for req_id in sched.finished_req_ids | sched.preempted_req_ids:
            self.states.pop(req_id, None)
        for new in sched.new_reqs:
            assert new.req_id not in self.states
            self.states[new.req_id] = _RunnerState(list(new.token_ids), list(new.block_ids),
                                                   new.num_computed_tokens)
        for diff in sched.cached_reqs:
            state = self.states[diff.req_id]
            assert diff.num_computed_tokens == state.num_computed
            state.block_ids.extend(diff.new_block_ids)
        assert set(sched.num_scheduled_tokens) == (
            {n.req_id for n in sched.new_reqs} | {c.req_id for c in sched.cached_reqs})
        for req_id, n in sched.num_scheduled_tokens.items():  # write this step's KV
            state = self.states[req_id]
            assert n >= 1 and state.num_computed + n <= len(state.token_ids)
            assert 0 not in state.block_ids
            assert len(state.block_ids) * BLOCK_SIZE >= state.num_computed + n
            for pos in range(state.num_computed, state.num_computed + n):
                self.kv.setdefault(state.block_ids[pos // BLOCK_SIZE], [None] * BLOCK_SIZE)[
                    pos % BLOCK_SIZE] = tuple(state.token_ids[:pos + 1])
        sampled = {}
        for i, (req_id, n) in enumerate(sched.num_scheduled_tokens.items()):  # attend, sample
            state = self.states[req_id]
            state.num_computed += n
            context = [self.kv[state.block_ids[p // BLOCK_SIZE]][p % BLOCK_SIZE]
                       for p in range(state.num_computed)]
            assert context == [tuple(state.token_ids[:p + 1]) for p in range(state.num_computed)], \
                f"request {req_id} read wrong KV"
            if state.num_computed == len(state.token_ids):
                token = tokens[i % len(tokens)]
                state.token_ids.append(token)
                sampled[req_id] = [token]
        return ModelRunnerOutput(sampled)


def check_invariants(scheduler: Scheduler) -> None:
    kv = scheduler.kv_cache
    pool = kv.pool
    assert len(scheduler.running) <= scheduler.config.max_num_seqs
    assert {r.request_id for r in scheduler.running} | {r.request_id for r in scheduler.waiting} \
        == set(scheduler.requests)
    holders: Counter[int] = Counter()
    for req_id, request in scheduler.requests.items():
        block_ids = kv.get_block_ids(req_id)
        assert len(block_ids) == len(set(block_ids)) and 0 not in block_ids
        if request.status == RequestStatus.RUNNING:
            assert len(block_ids) * BLOCK_SIZE >= request.num_computed_tokens
        else:
            assert block_ids == [] and request.num_computed_tokens == 0
        hashes = chain_hashes(request.all_token_ids)
        for i, block_id in enumerate(block_ids):
            block_hash = pool.blocks[block_id].block_hash
            assert block_hash is None or (i < len(hashes) and block_hash == hashes[i])
        holders.update(block_ids)
    assert pool.blocks[0].ref_cnt == 1
    for block in pool.blocks[1:]:
        assert block.ref_cnt == holders[block.block_id]
        if block.ref_cnt > 1:  # only prefix blocks are shared
            assert block.block_hash is not None
            event("a block shared by two requests")
        if block.block_hash is not None:
            assert pool.get_cached_block(block.block_hash) is block
    assert sorted(pool.free_block_ids()) == [b.block_id for b in pool.blocks[1:] if b.ref_cnt == 0]


BASE_PROMPTS = [[20] * 48, list(range(30, 78)), list(range(30, 46)) + [90] * 32]
PROMPT_LEN = st.one_of(st.integers(1, 48), st.sampled_from([17, 20, 32, 33, 40, 48]))
ADD = st.tuples(st.just("add"), st.integers(0, 2), PROMPT_LEN, st.sampled_from([1, 3, 16, 24, 40]),
                st.booleans())
STEP = st.tuples(st.just("step"), st.lists(st.sampled_from([EOS_TOKEN_ID] + [5, 6] * 4),
                                           min_size=1, max_size=4))
ABORT = st.tuples(st.just("abort"), st.integers(0, 99))
OPS = st.lists(st.one_of(ADD, ADD, STEP, STEP, STEP, ABORT), min_size=8, max_size=40)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, num_blocks=st.integers(5, 9), max_num_seqs=st.integers(1, 4),
       chunked=st.booleans(), caching=st.booleans(), chunk_budget=st.sampled_from([8, 16, 32]),
       abort_at_end=st.booleans())
def test_random_traffic_never_leaks_blocks(ops, num_blocks, max_num_seqs, chunked, caching,
                                          chunk_budget, abort_at_end):
    max_model_len = 64  # 4 blocks: one request always fits in the smallest pool
    scheduler = create_scheduler(num_blocks=num_blocks, max_num_seqs=max_num_seqs,
                                 max_num_batched_tokens=chunk_budget if chunked else max_model_len,
                                 max_model_len=max_model_len, enable_prefix_caching=caching,
                                 enable_chunked_prefill=chunked)
    runner = FakeRunner()
    added: list[str] = []

    def run_step(tokens: list[int]) -> None:
        sched = scheduler.schedule()
        assert sched.total_num_scheduled_tokens <= scheduler.config.max_num_batched_tokens
        for new in sched.new_reqs:
            request = scheduler.requests[new.req_id]
            assert new.token_ids == request.all_token_ids
            assert new.block_ids == scheduler.kv_cache.get_block_ids(new.req_id)
            if not chunked:
                assert sched.num_scheduled_tokens[new.req_id] == request.num_tokens - new.num_computed_tokens
        result = runner.execute(sched, tokens)
        for req_id in sched.num_scheduled_tokens:
            assert runner.states[req_id].block_ids == scheduler.kv_cache.get_block_ids(req_id)
        scheduler.update_from_output(sched, result)
        for req_id, state in runner.states.items():
            if req_id in scheduler.requests:
                assert state.token_ids == scheduler.requests[req_id].all_token_ids
        check_invariants(scheduler)

    for op in ops:
        if op[0] == "add":
            _, base, length, max_tokens, ignore_eos = op
            req_id = str(len(added))
            (request,) = create_requests(1, prompt=BASE_PROMPTS[base][:length], start=len(added),
                                         max_tokens=max_tokens, ignore_eos=ignore_eos)
            scheduler.add_request(request)
            added.append(req_id)
        elif op[0] == "step":
            run_step(op[1])
        elif added:
            scheduler.finish_requests([added[op[1] % len(added)]], RequestStatus.FINISHED_ABORTED)
            check_invariants(scheduler)

    event(f"requests added: {min(len(added), 5)}{'+' if len(added) >= 5 else ''}")
    for _ in range(3 if abort_at_end else 0):
        run_step([5, 6])
    if abort_at_end:
        scheduler.finish_requests(added, RequestStatus.FINISHED_ABORTED)
    for _ in range(100 * len(added) + 10):  # generous: each request ends within 64 tokens
        if not scheduler.has_unfinished_requests():
            break
        run_step([5])
    assert not scheduler.has_unfinished_requests()
    event(f"preempted: {scheduler.num_preemptions > 0}")
    event(f"prefix hits: {scheduler.kv_cache.stats.num_hit_tokens > 0}")

    pool = scheduler.kv_cache.pool
    assert pool.num_free_blocks == num_blocks - 1
    assert ref_counts(pool) == [1] + [0] * (num_blocks - 1)
    assert scheduler.requests == {}
    assert scheduler.kv_cache.get_block_ids("0") == []
    assert scheduler.kv_cache._req_blocks == {} and scheduler.kv_cache._req_hashes == {}
    assert scheduler.kv_cache._req_num_cached == {}
    assert scheduler.kv_cache.reset_prefix_cache() is True


@pytest.mark.parametrize("flags, cap", [
    ({}, 2048),  # the budget is dyno's to choose: prompts batch 2048 tokens a step
    ({"max_num_batched_tokens": 256}, None),  # the user's budget is the only limit
    ({"enable_chunked_prefill": True}, None),
])
def test_new_prompts_are_capped_only_when_dyno_derives_the_budget(tiny_models, flags, cap):
    path, _ = tiny_models["llama"]
    llm = LLM(str(path), skip_tokenizer_init=True, max_model_len=256, **flags)
    assert llm.engine.scheduler.config.prompt_batch_tokens == cap
