"""Load the tokenizer for a model: a Hugging Face directory, a .gguf file or a hub id."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from engine.model_source import ModelSourceError, _looks_like_hub_id

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

TOKENIZER_MODES = ("auto", "slow")


def load_tokenizer(
    name_or_path: str | os.PathLike,
    *,
    mode: str = "auto",
    revision: str | None = None,
    trust_remote_code: bool = False,
    download_dir: str | os.PathLike | None = None,
) -> PreTrainedTokenizerBase:
    """The tokenizer of `name_or_path`; mode "slow" insists on a Python (non-Rust) tokenizer."""
    from transformers import AutoTokenizer

    if mode not in TOKENIZER_MODES:
        raise ModelSourceError(f"unsupported --tokenizer-mode {mode!r}: choose one of {', '.join(TOKENIZER_MODES)}")
    name = str(name_or_path)
    path = Path(name).expanduser()
    kwargs = {"trust_remote_code": trust_remote_code, "use_fast": mode != "slow"}
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelSourceError(f"tokenizer path '{name}' is a file but not a .gguf file: pass a directory")
        source, kwargs["gguf_file"] = path.parent, path.name
    elif path.is_dir():
        source = path
    elif _looks_like_hub_id(name):
        source = name
        kwargs.update(revision=revision, cache_dir=download_dir)
    else:
        raise ModelSourceError(
            f"tokenizer path '{name}' does not exist: pass a directory with tokenizer files, a .gguf file or a hub id"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        where = "the Hugging Face hub (offline?)" if source == name else f"'{name}'"
        raise ModelSourceError(
            f"cannot load a tokenizer from {where}: {_first_line(e)}; pass --tokenizer with a directory "
            "holding tokenizer.json or tokenizer_config.json"
        ) from e
    if mode == "slow" and tokenizer.is_fast:
        raise ModelSourceError(
            f"--tokenizer-mode slow: '{name}' has no slow (Python) tokenizer in this transformers; "
            "use --tokenizer-mode auto"
        )
    return tokenizer


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
