"""The capacity search finds the load the mock's pacing implies."""

from __future__ import annotations

import pytest

from loadgen import SLO, CapacitySearch, LoadPoint, find_capacity
from loadgen.capacity import CapacityAnswer, describe, Probe
from tests.loadgen.conftest import make_config


def test_capacity_by_concurrency_matches_the_mock(mock_factory):
    # Each token takes 10 ms + 5 ms per running stream: at C users TPOT is 10 + 5C ms, so a
    # 42.5 ms TPOT target holds for 6 users (40 ms) and breaks at 7 (45 ms).
    mock = mock_factory(ttft_ms=20, itl_ms=10, itl_per_seq_ms=5, output_len=8)
    config = make_config(mock, LoadPoint(concurrency=1), num_prompts=12)
    answer = find_capacity(config, CapacitySearch((SLO("tpot", 0.0425),), percentile=90))
    assert answer.load == 6
    loads = [p.load for p in answer.probes]
    assert loads == sorted(loads) and {1, 2, 4, 8, 6, 7} == set(loads)
    assert answer.sentence.startswith("holds 6 concurrent users: p90 TPOT 4")
    assert "at 7 concurrent users p90 TPOT 4" in answer.sentence and "broke first" in answer.sentence


def test_capacity_when_nothing_holds(mock_factory):
    mock = mock_factory(ttft_ms=20, itl_ms=10, itl_per_seq_ms=5, output_len=8)
    config = make_config(mock, LoadPoint(concurrency=1), num_prompts=4)
    answer = find_capacity(config, CapacitySearch((SLO("ttft", 0.005),)))
    assert answer.load is None
    assert answer.sentence.startswith("does not hold even 1 concurrent user: p90 TTFT")


def test_sentence_names_the_worst_broken_slo():
    search = CapacitySearch((SLO("ttft", 0.5), SLO("tpot", 0.05)))
    ok = Probe(12, True, {"ttft": 0.41, "tpot": 0.046}, {"output_throughput": 380.2})
    bad = Probe(13, False, {"ttft": 0.45, "tpot": 0.052}, {}, ["p90 TPOT 52 ms (limit 50 ms)"])
    text = describe(CapacityAnswer(search, 12, [ok, bad]), ok, bad)
    assert text == ("holds 12 concurrent users: p90 TTFT 410 ms, p90 TPOT 46 ms, 380 output tokens/s; "
                    "at 13 concurrent users p90 TPOT 52 ms (limit 50 ms) broke first")


@pytest.mark.slow
def test_capacity_by_rate_is_below_what_the_slots_allow(mock_factory):
    # 4 slots, each request holds one for 20 + 4 * 5 = 40 ms: at most 100 requests/s. Past it
    # the queue grows without bound and TTFT (which includes the wait for a slot) breaks.
    mock = mock_factory(ttft_ms=20, itl_ms=5, output_len=5, max_num_seqs=4)
    # Probes long enough (150 requests) that a few % of overload queues past the 50 ms target.
    config = make_config(mock, LoadPoint(rate=1.0), num_prompts=150)
    search = CapacitySearch((SLO("ttft", 0.05),), percentile=90, by="rate", start=64, arrival="constant")
    answer = find_capacity(config, search)
    assert answer.load is not None and 64 <= answer.load <= 100
    assert answer.sentence.startswith("holds ") and "requests/s" in answer.sentence
