"""Chat prompts: the tokenizer's own template, or one given by --chat-template (file or inline)."""

from __future__ import annotations

from pathlib import Path


def load_chat_template(value: str | None) -> str | None:
    """A path to a Jinja file, or the template itself (anything with a Jinja tag)."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_file():
        return path.read_text()
    if any(tag in value for tag in ("{{", "{%")):
        return value
    raise ValueError(f"--chat-template {value!r} is neither a file nor an inline Jinja template")


def render_chat(tokenizer, messages: list[dict], template: str | None = None,
                add_generation_prompt: bool = True) -> str:
    if template is None and not getattr(tokenizer, "chat_template", None):
        raise ValueError("this model's tokenizer has no chat template: pass --chat-template")
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)
