"""Token counting: the target's tokenizer when one is given, else whitespace words.

Without a tokenizer the counts that matter still come from the server's `usage` fields;
words are only the fallback for prompt building and servers that report no usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class TokenizerError(ValueError):
    pass


class TokenCounter:
    """Counts, splits and joins tokens of one tokenizer (or of whitespace words)."""

    def __init__(self, tokenizer: Any | None = None) -> None:
        self.tokenizer = tokenizer

    @property
    def is_exact(self) -> bool:
        return self.tokenizer is not None

    def encode(self, text: str) -> list:
        if self.tokenizer is None:
            return text.split()
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, tokens: list) -> str:
        if self.tokenizer is None:
            return " ".join(tokens)
        return self.tokenizer.decode(tokens)

    def count_text(self, text: str) -> int:
        return len(self.encode(text))

    def count_chunks(self, texts: list[str]) -> list[int]:
        """Tokens in each streamed chunk (at least 1: a chunk with content carries a token)."""
        if self.tokenizer is None or not texts:
            return [1] * len(texts)
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [max(1, len(x)) for x in ids]


def load_counter(tokenizer: str | None) -> TokenCounter:
    """Load a tokenizer from a local directory (never from a hub at run time)."""
    if not tokenizer:
        return TokenCounter()
    if not Path(tokenizer).exists():
        raise TokenizerError(f"--tokenizer {tokenizer}: no such directory (give a local tokenizer path)")
    from transformers import AutoTokenizer  # slow import; only when asked for

    try:
        return TokenCounter(AutoTokenizer.from_pretrained(tokenizer, local_files_only=True))
    except (OSError, ValueError) as e:
        raise TokenizerError(f"--tokenizer {tokenizer}: cannot load a tokenizer there ({e})") from e
