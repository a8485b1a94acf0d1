"""Tokenizer loading and incremental detokenization, exact against tokenizer.decode."""

from __future__ import annotations

import json
import random

import pytest

from engine.detokenizer import IncrementalDetokenizer
from engine.model_source import ModelSourceError, resolve_model
from engine.tokenizer import load_tokenizer

TEXTS = [
    "Héllo wörld, naïve café, crème brûlée — Ångström ½ ™ ©",
    "日本語のテキストと中文字符，한국어 문장도 있습니다。",
    "Emoji: 🎉🦜👍🏽 👨‍👩‍👧‍👦 🇫🇷 and math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∀x∈ℝ: x² ≥ 0",
    "def f(x):\n    return {'a': [x ** 2, \"\\t\"]}  # comment\n\n\tindented\r\n",
    "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\nSure<|im_end|><|endoftext|>",
    "   leading spaces, trailing spaces   and  double  spaces  ",
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_model(None).path)


@pytest.fixture(scope="module")
def metaspace_tokenizer():
    """A Llama-2-style tokenizer: SentencePiece spaces, byte fallback, leading space stripped."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    raw.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    raw.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=list("abcdefghijklmnopqrstuvwxyz▁"))
    raw.train_from_iterator(["the quick brown fox jumps over the lazy dog " * 20, *TEXTS[:1]], trainer)
    spec = json.loads(raw.to_str())
    vocab = spec["model"]["vocab"]
    for token in byte_tokens:
        vocab.setdefault(token, len(vocab))
    raw = Tokenizer.from_str(json.dumps(spec))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    assert tok.convert_ids_to_tokens(tok("日").input_ids) == ["▁", "<0xE6>", "<0x97>", "<0xA5>"]
    return tok


def _random_ids(tok, rng: random.Random, *, any_ids: bool) -> list[int]:
    """Pieces of TEXTS, special tokens and (if any_ids) arbitrary ids, which may be invalid UTF-8."""
    ids: list[int] = []
    for _ in range(rng.randint(1, 4)):
        r = rng.random()
        if r < 0.6 or (r < 0.85 and not any_ids):
            text = rng.choice(TEXTS)
            ids += tok(text[rng.randrange(len(text)):], add_special_tokens=False).input_ids
        elif r < 0.85:
            ids += [rng.randrange(len(tok)) for _ in range(rng.randint(1, 6))]
        else:
            ids += [rng.choice(tok.all_special_ids)]
    return ids


def _stream(tok, ids, rng, **kwargs) -> tuple[list[str], IncrementalDetokenizer]:
    detok = IncrementalDetokenizer(tok, [1, 2, 3], **kwargs)
    deltas, i = [], 0
    while i < len(ids):
        n = rng.choice([1, 1, 1, 2, 3])
        deltas.append(detok.add(ids[i:i + n]))
        i += n
    deltas.append(detok.finish())
    return deltas, detok


# Byte-fallback decoding turns a whole run of byte tokens into U+FFFD when the run holds an
# invalid sequence, valid characters before it included, so arbitrary ids are exact only for
# the byte-level tokenizer; valid text is exact for both (see IncrementalDetokenizer).
@pytest.mark.parametrize("which,any_ids", [("tokenizer", True), ("tokenizer", False),
                                           ("metaspace_tokenizer", False)])
def test_deltas_concatenate_to_decode(which, any_ids, request):
    tok = request.getfixturevalue(which)
    rng = random.Random(1234)
    for _ in range(600):
        ids = _random_ids(tok, rng, any_ids=any_ids)
        skip = rng.random() < 0.5
        deltas, detok = _stream(tok, ids, rng, skip_special_tokens=skip)
        full = tok.decode(ids, skip_special_tokens=skip)
        assert "".join(deltas) == full == detok.text, ids
        if "\ufffd" not in full:
            assert not any("\ufffd" in d for d in deltas), ids


def test_tokenizers_that_clean_up_spaces_keep_their_clean_up():
    """A fast tokenizer set to clean up spaces before punctuation (WordPiece, as BERT's) is
    decoded through transformers, clean-up included; the others go straight to `tokenizers`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "hello": 1, ",": 2, "world": 3, ".": 4}
    raw = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.decoder = decoders.WordPiece(cleanup=False)  # the clean-up left to transformers
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", clean_up_tokenization_spaces=True)
    ids = tok("hello , world .", add_special_tokens=False).input_ids
    assert tok.backend_tokenizer.decode(ids) == "hello , world ."
    deltas, _ = _stream(tok, ids, random.Random(0))
    assert "".join(deltas) == tok.decode(ids) == "hello, world."


@pytest.mark.parametrize("which", ["tokenizer", "metaspace_tokenizer"])
def test_split_characters_are_held_back_not_garbled(which, request):
    tok = request.getfixturevalue(which)
    ids = tok("🦜 日本 café", add_special_tokens=False).input_ids
    detok = IncrementalDetokenizer(tok, [])
    seen = []
    for token_id in ids:
        delta = detok.add([token_id])
        assert "\ufffd" not in delta
        seen.append(delta)
    assert detok.finish() == ""
    assert "".join(seen) == tok.decode(ids) == "🦜 日本 café"
    assert "" in seen, "some token ended mid-character and had to wait"


def test_incomplete_character_at_the_end_is_flushed_as_decode_does(tokenizer):
    ids = tokenizer("🦜", add_special_tokens=False).input_ids[:-1]
    detok = IncrementalDetokenizer(tokenizer, [])
    assert detok.add(ids) == ""
    assert detok.finish() == tokenizer.decode(ids)
    assert detok.text.endswith("\ufffd")


def test_special_tokens_skipped_or_kept(tokenizer):
    ids = tokenizer("Hi<|im_end|> there", add_special_tokens=False).input_ids
    for skip, expected in ((True, "Hi there"), (False, "Hi<|im_end|> there")):
        detok = IncrementalDetokenizer(tokenizer, [], skip_special_tokens=skip)
        assert "".join(detok.add([t]) for t in ids) == expected == detok.text


def test_leading_space_rule_matches_decode(metaspace_tokenizer):
    tok = metaspace_tokenizer
    ids = tok("the fox", add_special_tokens=False).input_ids
    detok = IncrementalDetokenizer(tok, [])
    deltas = [detok.add([t]) for t in ids]
    assert "".join(deltas) == tok.decode(ids) == "the fox"
    assert tok.convert_ids_to_tokens(ids[0]).startswith("▁") and not deltas[0].startswith(" ")


def test_window_stays_short(tokenizer):
    """Per-token cost must not grow with the sequence: the decoded window stays a few tokens."""
    calls = []
    ids = tokenizer("Hello world! " * 200, add_special_tokens=False).input_ids
    detok = IncrementalDetokenizer(tokenizer, [])
    real = detok._decode
    detok._decode = lambda window: calls.append(len(window)) or real(window)
    for token_id in ids:
        detok.add([token_id])
    assert max(calls) <= 2 and detok.text == tokenizer.decode(ids)


# ---- load_tokenizer -------------------------------------------------------------------------


def test_default_tokenizer_has_chat_template_and_eos(tokenizer):
    assert tokenizer.eos_token == "<|im_end|>"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_tokenizer_from_gguf_file_matches_the_converted_dir(tokenizer):
    from engine import model_source

    gguf = model_source.default_gguf(model_source.cache_root())
    from_gguf = load_tokenizer(gguf)
    for text in TEXTS:
        assert from_gguf(text).input_ids == tokenizer(text).input_ids


def test_tokenizer_errors(tmp_path, monkeypatch, tokenizer):
    with pytest.raises(ModelSourceError, match=f"tokenizer path '{tmp_path / 'nope'}' does not exist"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(ModelSourceError, match=f"cannot load a tokenizer from '{tmp_path}'"):
        load_tokenizer(tmp_path)
    with pytest.raises(ModelSourceError, match="unsupported --tokenizer-mode 'mistral'"):
        load_tokenizer(tmp_path, mode="mistral")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelSourceError, match=r"hub \(offline\?\)"):
        load_tokenizer("someone/some-tokenizer", download_dir=tmp_path)


def test_slow_mode_without_a_slow_tokenizer_is_refused(tokenizer):
    path = resolve_model(None).path
    if not load_tokenizer(path).is_fast:
        pytest.skip("this transformers gives a slow tokenizer here")
    with pytest.raises(ModelSourceError, match="--tokenizer-mode slow: .* no slow"):
        load_tokenizer(path, mode="slow")
