"""Datasets, length distributions and arrival processes: exact where they can be, statistical
with stated tolerances where they are random (seeded, so repeatable)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from loadgen.arrivals import LoadPoint, LoadShapeError, arrival_offsets
from loadgen.datasets import Conversation, DatasetConfig, DatasetError, iter_workload
from loadgen.lengths import LengthDist, LengthSpecError
from loadgen.tokens import TokenCounter

WORDS = TokenCounter()


def take(cfg: DatasetConfig, n: int):
    return list(itertools.islice(iter_workload(cfg, WORDS), n))


def test_random_prompts_have_the_asked_lengths_and_real_text():
    items = take(DatasetConfig(input_len="uniform:50,150", output_len="fixed:7", seed=1), 50)
    for spec in items:
        assert WORDS.count_text(spec.prompt) == spec.input_tokens
        assert 50 <= spec.input_tokens <= 150 and spec.output_tokens == 7
    assert len({s.prompt for s in items}) == 50  # random offsets: no two prompts alike
    assert "the" in items[0].prompt.split()


def test_a_seed_makes_the_workload_repeatable():
    cfg = DatasetConfig(input_len="normal:100,20", output_len="lognormal:64,0.5", seed=7)
    assert [s.prompt for s in take(cfg, 5)] == [s.prompt for s in take(cfg, 5)]


def test_prompts_longer_than_the_corpus_wrap_around():
    (spec,) = take(DatasetConfig(input_len="10000"), 1)
    assert WORDS.count_text(spec.prompt) == 10000


def test_prefix_groups_share_their_prefix():
    items = take(DatasetConfig(name="prefix", prefix_groups=3, prefix_len=40, input_len="10"), 9)
    heads = [" ".join(s.prompt.split()[:40]) for s in items]
    assert len(set(heads)) == 3 and heads[0] == heads[3] == heads[6]
    assert all(s.input_tokens == 50 for s in items)


@pytest.mark.parametrize("spec,mean,tol", [
    ("fixed:64", 64, 0), ("uniform:100,200", 150, 3), ("normal:500,50", 500, 5),
    ("lognormal:100,0.3", 100 * math.exp(0.045), 2), ("hist:10=0.25,100=0.75", 77.5, 2.5)])
def test_length_distributions(spec, mean, tol):
    dist = LengthDist.parse(spec)
    samples = dist.sample(np.random.default_rng(0), 5000)
    assert dist.mean == pytest.approx(mean)
    assert abs(np.mean(samples) - mean) <= tol + 0.5  # +0.5: samples are floored to integers
    assert min(samples) >= 1


def test_bad_length_spec():
    with pytest.raises(LengthSpecError, match="kind must be one of"):
        LengthDist.parse("zipf:3")


def test_jsonl_and_sharegpt_files(tmp_path):
    jl = tmp_path / "p.jsonl"
    jl.write_text(json.dumps({"prompt": "one two three", "output_len": 5}) + "\n" + json.dumps({"prompt": "x"}) + "\n")
    a, b, c = take(DatasetConfig(name="jsonl", path=str(jl), output_len="9"), 3)
    assert (a.prompt, a.input_tokens, a.output_tokens) == ("one two three", 3, 5)
    assert b.output_tokens == 9 and c.prompt == a.prompt  # cycles
    sg = tmp_path / "sg.json"
    conv = {"conversations": [{"from": "human", "value": "please tell me a story now"},
                              {"from": "gpt", "value": "once upon a time there was"}]}
    sg.write_text(json.dumps([conv, {"conversations": [{"from": "human", "value": "hi"}]}]))
    (s,) = take(DatasetConfig(name="sharegpt", path=str(sg)), 1)
    assert s.input_tokens == 6 and s.output_tokens == 6


def test_bad_files_fail_before_any_load(tmp_path):
    with pytest.raises(DatasetError, match="needs --dataset-path"):
        iter_workload(DatasetConfig(name="jsonl"), WORDS)
    with pytest.raises(DatasetError, match="no such file|No such file"):
        iter_workload(DatasetConfig(name="sharegpt", path=str(tmp_path / "missing.json")), WORDS)
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"timestamp": 0}\n')
    with pytest.raises(DatasetError, match="timestamp, input_len, output_len"):
        iter_workload(DatasetConfig(name="trace", path=str(bad)), WORDS)


def test_trace_replays_its_own_clock(tmp_path):
    trace = tmp_path / "t.jsonl"
    rows = [(10.5, 30, 4), (10.0, 20, 3), (11.25, 10, 2)]
    trace.write_text("".join(json.dumps({"timestamp": t, "input_len": i, "output_len": o}) + "\n" for t, i, o in rows))
    items = list(iter_workload(DatasetConfig(name="trace", path=str(trace)), WORDS))
    assert [(s.arrival_s, s.input_tokens, s.output_tokens) for s in items] == [(0.0, 20, 3), (0.5, 30, 4), (1.25, 10, 2)]


def test_multiturn_conversations():
    (conv,) = take(DatasetConfig(name="multiturn", num_turns=4, input_len="5", output_len="3"), 1)
    assert isinstance(conv, Conversation) and len(conv.turns) == 4
    assert all(t.input_tokens == 5 for t in conv.turns)


def test_constant_arrivals_are_exact():
    offsets = list(itertools.islice(arrival_offsets(LoadPoint(rate=4.0, arrival="constant"), None), 5))
    assert offsets == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


@pytest.mark.parametrize("burstiness", [1.0, 0.25, 4.0])
def test_poisson_and_gamma_keep_the_mean_rate_and_set_the_spread(burstiness):
    point = LoadPoint(rate=10.0, burstiness=burstiness)
    offsets = np.array(list(itertools.islice(arrival_offsets(point, np.random.default_rng(0)), 20001)))
    gaps = np.diff(offsets)
    assert gaps.mean() == pytest.approx(0.1, rel=0.03)
    # Gamma(k, 1/(rate k)): coefficient of variation 1/sqrt(k); Poisson (k=1) has CV 1.
    assert gaps.std() / gaps.mean() == pytest.approx(1 / math.sqrt(burstiness), rel=0.05)


def test_infinite_rate_sends_everything_at_once():
    assert list(itertools.islice(arrival_offsets(LoadPoint(rate=math.inf), None), 3)) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("kw,match", [({"rate": 0.0}, "must be > 0"), ({"concurrency": 0}, "at least 1"),
                                      ({}, "either"), ({"rate": 1.0, "burstiness": 0.0}, "burstiness")])
def test_bad_load_shapes(kw, match):
    with pytest.raises(LoadShapeError, match=match):
        LoadPoint(**kw)
