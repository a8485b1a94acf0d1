"""The launch form's data side: which engine flags it shows, how each flag's text becomes a
value, and validation with engine.args' own rules (EngineArgs.validate) before launching.
The widgets live in screens/launch_form.py."""

from __future__ import annotations

import json
from typing import Any

from engine.args import FLAGS, GROUPS, ArgsError, EngineArgs, Flag

# Shown first, open: what people change most when launching for a look.
QUICK = ("model", "port", "max_num_seqs", "max_model_len", "max_num_batched_tokens",
         "block_size", "enable_prefix_caching", "dtype", "device", "seed")
# Chosen by the dashboard: a free port unless one is typed; the host stays local.
BLANK_DEFAULT = ("port",)


def form_flags() -> list[Flag]:
    """Every flag the form offers: refused ones (not built yet) are left out."""
    return [f for f in FLAGS if not f.is_refused]


def grouped() -> list[tuple[str, list[Flag]]]:
    flags = form_flags()
    quick = [f for name in QUICK for f in flags if f.name == name]
    groups = [("quick", quick)]
    for group, _ in GROUPS:
        rest = [f for f in flags if f.group == group and f.name not in QUICK]
        if rest:
            groups.append((group, rest))
    return groups


def default_text(flag: Flag) -> str:
    if flag.name in BLANK_DEFAULT or flag.default is None:
        return ""
    if flag.kind is list:
        return " ".join(map(str, flag.default))
    if flag.kind is dict:
        return json.dumps(flag.default)
    return str(flag.default)


def parse_value(flag: Flag, text: str) -> Any:
    """The text of one field as the flag's value (None when empty)."""
    text = text.strip()
    if text == "":
        return None
    try:
        if flag.parse is not None:
            return flag.parse(text)
        if flag.kind is list:
            return [flag.item(x) for x in text.replace(",", " ").split()]
        if flag.kind is dict:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError
            return value
        return flag.kind(text)
    except (ValueError, TypeError, json.JSONDecodeError):
        kind = "a JSON object" if flag.kind is dict else f"a {flag.item.__name__}"
        raise ArgsError(f"{flag.option}: {text!r} is not {kind}") from None


def collect(values: dict[str, Any]) -> dict[str, Any]:
    """Form values (text, or bool/choice from switches and selects) -> launch flags that
    differ from the defaults, validated by EngineArgs; raises ArgsError with one line."""
    by_name = {f.name: f for f in form_flags()}
    flags: dict[str, Any] = {}
    for name, raw in values.items():
        flag = by_name[name]
        value = parse_value(flag, raw) if isinstance(raw, str) else raw
        if value is None:
            continue  # an emptied field means "the default" (port: a free one)
        if value != flag.default:
            flag.check(value)
            flags[name] = value
    EngineArgs(**{k: v for k, v in flags.items()}).validate()
    return flags
