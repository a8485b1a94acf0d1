"""Sampling settings do what vLLM's users expect, on the default model."""

from __future__ import annotations

import pytest

from engine import SamplingParams

PROMPT = "Once upon a time, in a small village by the sea,"


def _gen(llm, prompts, **params):
    return llm.generate(prompts, SamplingParams(**params))


def test_seeded_sampling_repeats_exactly_whatever_the_batch(default_llm):
    alone = _gen(default_llm, PROMPT, temperature=1.0, seed=1234, max_tokens=24)[0]
    batched = _gen(default_llm, ["Hello there", PROMPT, "Numbers: 1, 2,"],
                   temperature=1.0, seed=1234, max_tokens=24)[1]
    assert alone.outputs[0].token_ids == batched.outputs[0].token_ids
    other = _gen(default_llm, PROMPT, temperature=1.0, seed=99, max_tokens=24)[0]
    assert other.outputs[0].token_ids != alone.outputs[0].token_ids


def test_top_k_1_is_greedy(default_llm):
    greedy = _gen(default_llm, PROMPT, temperature=0, max_tokens=16)[0]
    top1 = _gen(default_llm, PROMPT, temperature=0.8, top_k=1, seed=3, max_tokens=16)[0]
    assert top1.outputs[0].token_ids == greedy.outputs[0].token_ids


def test_n_returns_n_distinct_seeded_completions(default_llm):
    out = _gen(default_llm, PROMPT, n=3, temperature=1.0, seed=7, max_tokens=12)[0]
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert len({tuple(c.token_ids) for c in out.outputs}) == 3


def test_logit_bias_forces_a_token(default_llm):
    tok = default_llm.get_tokenizer()
    target = tok.encode(" banana")[0]
    out = _gen(default_llm, PROMPT, temperature=0, max_tokens=3, logit_bias={target: 100.0})[0]
    assert out.outputs[0].token_ids == [target] * 3


def test_a_biased_greedy_row_keeps_its_bias_among_plain_greedy_rows(default_llm):
    # plain greedy rows go straight to the argmax; one row with a bias sends the batch the long way
    tok = default_llm.get_tokenizer()
    target = tok.encode(" banana")[0]
    prompts = [PROMPT, "Hello there", "Numbers: 1, 2,"]
    plain = SamplingParams(temperature=0, max_tokens=4)
    alone = [o.outputs[0].token_ids for o in default_llm.generate(prompts, plain)]
    biased = SamplingParams(temperature=0, max_tokens=4, logit_bias={target: 100.0})
    mixed = default_llm.generate(prompts, [plain, biased, plain])
    assert [o.outputs[0].token_ids for o in mixed] == [alone[0], [target] * 4, alone[2]]


def test_stop_token_ids_and_min_tokens(default_llm):
    first = _gen(default_llm, PROMPT, temperature=0, max_tokens=8)[0].outputs[0].token_ids
    stopped = _gen(default_llm, PROMPT, temperature=0, max_tokens=8, stop_token_ids=[first[2]])[0].outputs[0]
    assert stopped.token_ids == first[:3]
    assert (stopped.finish_reason, stopped.stop_reason) == ("stop", first[2])
    eos = default_llm.engine.info.eos_token_id
    out = _gen(default_llm, "What is 2+2? Answer with one number.", temperature=0, max_tokens=40,
               min_tokens=30, logit_bias={eos: 50.0})[0].outputs[0]
    assert len(out.token_ids) == 31 and out.token_ids[-1] == eos  # eos banned until 30 tokens


def test_stop_strings_cut_the_text(default_llm):
    full = _gen(default_llm, PROMPT, temperature=0, max_tokens=30)[0].outputs[0].text
    word = full.split()[3]
    cut = _gen(default_llm, PROMPT, temperature=0, max_tokens=30, stop=[word])[0].outputs[0]
    assert cut.text == full[:full.index(word)]
    assert (cut.finish_reason, cut.stop_reason) == ("stop", word)
    kept = _gen(default_llm, PROMPT, temperature=0, max_tokens=30, stop=word,
                include_stop_str_in_output=True)[0].outputs[0]
    assert kept.text == full[:full.index(word) + len(word)]


def test_max_tokens_ends_with_length(default_llm):
    out = _gen(default_llm, PROMPT, temperature=0, max_tokens=5, ignore_eos=True)[0].outputs[0]
    assert len(out.token_ids) == 5 and out.finish_reason == "length"


def test_repetition_penalties_change_the_output(default_llm):
    prompt = "Repeat after me: the cat the cat the cat the cat"
    plain = _gen(default_llm, prompt, temperature=0, max_tokens=16)[0].outputs[0].token_ids
    for extra in ({"repetition_penalty": 1.8}, {"frequency_penalty": 2.0}, {"presence_penalty": 2.0}):
        assert _gen(default_llm, prompt, temperature=0, max_tokens=16, **extra)[0].outputs[0].token_ids != plain


def test_top_p_and_min_p_keep_only_likely_tokens(default_llm):
    greedy = _gen(default_llm, PROMPT, temperature=0, max_tokens=10)[0].outputs[0].token_ids
    # With a tiny nucleus or a min_p of 1 only the most likely token survives.
    assert _gen(default_llm, PROMPT, temperature=1.0, top_p=1e-6, seed=5, max_tokens=10)[0].outputs[0].token_ids == greedy
    assert _gen(default_llm, PROMPT, temperature=1.0, min_p=1.0, seed=5, max_tokens=10)[0].outputs[0].token_ids == greedy


@pytest.mark.parametrize("bad, message", [
    ({"temperature": -1}, "temperature must be >= 0"),
    ({"top_p": 0}, "top_p must be in (0, 1]"),
    ({"top_k": -5}, "top_k must be -1 (off) or >= 1"),
    ({"n": 0}, "n must be at least 1"),
    ({"max_tokens": 0}, "max_tokens must be at least 1"),
    ({"min_tokens": 5, "max_tokens": 2}, "min_tokens (5) must not exceed max_tokens (2)"),
    ({"repetition_penalty": 0}, "repetition_penalty must be in (0, 2]"),
    ({"stop": [""]}, "stop strings must not be empty"),
])
def test_invalid_sampling_values_are_refused(bad, message):
    with pytest.raises(ValueError) as e:
        SamplingParams(**bad)
    assert message in str(e.value)
