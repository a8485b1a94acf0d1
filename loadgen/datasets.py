"""Workloads: what each request asks for (prompt, token counts), as an endless iterator.

Datasets (vLLM's --dataset-name where the concept is the same):
- random: prompts cut from real text (data/corpus.txt: Lincoln, the Declaration of
  Independence, the King James Bible, Austen, Dickens, Melville, Carroll, Shakespeare,
  Tolstoy; all public domain) with lengths from a distribution (lengths.py);
- prefix: N groups sharing a prefix of a given length, each prompt a unique suffix after it;
- sharegpt: a ShareGPT JSON file (first human turn is the prompt, the reply sets the length);
- jsonl: one {"prompt": ..., "output_len": ...} per line;
- trace: one {"timestamp": s, "input_len": n, "output_len": m} per line, replayed on its clock;
- multiturn: conversations whose turns carry the history (synthetic, or from a ShareGPT file).
File datasets cycle when a run asks for more requests than the file has.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from loadgen.lengths import LengthDist
from loadgen.tokens import TokenCounter

DATASETS = ("random", "prefix", "sharegpt", "jsonl", "trace", "multiturn")


class DatasetError(ValueError):
    pass


@dataclass(slots=True)
class RequestSpec:
    """One request to send. `input_tokens` is the dataset's count, used when the server
    reports no usage; `output_tokens` becomes max_tokens."""

    index: int
    prompt: str
    input_tokens: int
    output_tokens: int | None
    messages: list[dict[str, str]] | None = None
    arrival_s: float | None = None  # trace replay: when, from the start of the run


@dataclass(slots=True)
class Conversation:
    """A multi-turn session: turns go one after another, each with the history so far."""

    index: int
    session_id: str
    turns: list[RequestSpec] = field(default_factory=list)


WorkItem = RequestSpec | Conversation


@dataclass(frozen=True, slots=True)
class DatasetConfig:
    name: str = "random"
    path: str | None = None
    input_len: str = "1024"
    output_len: str = "128"
    prefix_groups: int = 4
    prefix_len: int = 256
    num_turns: int = 3
    seed: int = 0


def load_corpus() -> str:
    return resources.files("loadgen").joinpath("data/corpus.txt").read_text(encoding="utf-8")


class TextSource:
    """Prompts of an exact token count cut from the corpus at random offsets."""

    def __init__(self, counter: TokenCounter, rng: np.random.Generator) -> None:
        self.counter = counter
        self.rng = rng
        self.tokens = counter.encode(load_corpus())

    def take(self, n: int) -> str:
        start = int(self.rng.integers(len(self.tokens)))
        ids = list(itertools.islice(itertools.cycle(self.tokens), start, start + n))
        return self.counter.decode(ids)


def iter_workload(cfg: DatasetConfig, counter: TokenCounter) -> Iterator[WorkItem]:
    if cfg.name not in DATASETS:
        raise DatasetError(f"--dataset-name {cfg.name}: choose one of {', '.join(DATASETS)}")
    if cfg.name in ("sharegpt", "jsonl", "trace") and not cfg.path:
        raise DatasetError(f"--dataset-name {cfg.name} needs --dataset-path FILE")
    rng = np.random.default_rng(cfg.seed)
    make = {"random": _random, "prefix": _prefix, "sharegpt": _sharegpt, "jsonl": _jsonl,
            "trace": _trace, "multiturn": _multiturn}[cfg.name]
    items = make(cfg, counter, rng)
    first = next(items, None)  # runs the maker's setup now, so a bad file fails before the load
    if first is None:
        raise DatasetError(f"{cfg.path or cfg.name}: no requests in this dataset")
    return itertools.chain([first], items)


def _random(cfg: DatasetConfig, counter: TokenCounter, rng: np.random.Generator) -> Iterator[WorkItem]:
    source = TextSource(counter, rng)
    ins, outs = LengthDist.parse(cfg.input_len), LengthDist.parse(cfg.output_len)
    for i in itertools.count():
        n_in, n_out = ins.sample(rng, 1)[0], outs.sample(rng, 1)[0]
        yield RequestSpec(i, source.take(n_in), n_in, n_out)


def _prefix(cfg: DatasetConfig, counter: TokenCounter, rng: np.random.Generator) -> Iterator[WorkItem]:
    """Each prompt: its group's shared prefix, then a unique suffix of --random-input-len."""
    source = TextSource(counter, rng)
    prefixes = [source.take(cfg.prefix_len) for _ in range(max(cfg.prefix_groups, 1))]
    ins, outs = LengthDist.parse(cfg.input_len), LengthDist.parse(cfg.output_len)
    for i in itertools.count():
        n_in, n_out = ins.sample(rng, 1)[0], outs.sample(rng, 1)[0]
        prompt = prefixes[i % len(prefixes)] + " " + source.take(n_in)
        yield RequestSpec(i, prompt, counter.count_text(prompt), n_out)


def _read_lines(path: str) -> list[dict[str, Any]]:
    rows = []
    for num, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path} line {num}: not JSON ({e.msg})") from e
        if not isinstance(row, dict):
            raise DatasetError(f"{path} line {num}: expected a JSON object")
        rows.append(row)
    if not rows:
        raise DatasetError(f"{path}: no records")
    return rows


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise DatasetError(f"--dataset-path {path}: {e.strerror or e}") from e


def _jsonl(cfg: DatasetConfig, counter: TokenCounter, rng: np.random.Generator) -> Iterator[WorkItem]:
    rows = _read_lines(cfg.path or "")
    outs = LengthDist.parse(cfg.output_len)
    specs = []
    for num, row in enumerate(rows, 1):
        prompt = row.get("prompt", row.get("text"))
        if not isinstance(prompt, str):
            raise DatasetError(f"{cfg.path} line {num}: needs a string 'prompt'")
        n_out = row.get("output_len", row.get("max_tokens")) or outs.sample(rng, 1)[0]
        specs.append((prompt, counter.count_text(prompt), int(n_out)))
    for i, (prompt, n_in, n_out) in enumerate(itertools.cycle(specs)):
        yield RequestSpec(i, prompt, n_in, n_out)


def _trace(cfg: DatasetConfig, counter: TokenCounter, rng: np.random.Generator) -> Iterator[WorkItem]:
    """Finite: the trace's own clock decides when each request goes (shifted to start at 0)."""
    rows = _read_lines(cfg.path or "")
    source = TextSource(counter, rng)
    try:
        times = [float(r["timestamp"]) if "timestamp" in r else float(r["timestamp_ms"]) / 1000 for r in rows]
        lens = [(int(r.get("input_len", r.get("input_length"))), int(r.get("output_len", r.get("output_length"))))
                for r in rows]
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{cfg.path}: each line needs timestamp, input_len, output_len ({e})") from e
    t0 = min(times)
    for i, (t, (n_in, n_out)) in enumerate(sorted(zip(times, lens), key=lambda x: x[0])):
        yield RequestSpec(i, source.take(n_in), n_in, n_out, arrival_s=t - t0)


def _sharegpt_pairs(path: str) -> list[list[tuple[str, str]]]:
    """Conversations as lists of (human, reply) pairs."""
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not a ShareGPT JSON file ({e.msg} at line {e.lineno})") from e
    convs = []
    for entry in data if isinstance(data, list) else []:
        if not isinstance(entry, dict):
            continue
        turns = entry.get("conversations") or entry.get("conversation") or []
        texts = [t.get("value", "") for t in turns if isinstance(t, dict)]
        pairs = [(texts[k], texts[k + 1]) for k in range(0, len(texts) - 1, 2)]
        if pairs:
            convs.append(pairs)
    if not convs:
        raise DatasetError(f"{path}: no conversations with a human turn and a reply")
    return convs


def _sharegpt(cfg: DatasetConfig, counter: TokenCounter, rng: np.random.Generator) -> Iterator[WorkItem]:
    """First human turn and its reply, skipping very short ones as vLLM does."""
    pairs = []
    for conv in _sharegpt_pairs(cfg.path or ""):
        prompt, reply = conv[0]
        n_in, n_out = counter.count_text(prompt), counter.count_text(reply)
        if n_in >= 4 and n_out >= 4:
            pairs.append((prompt, n_in, n_out))
    if not pairs:
        raise DatasetError(f"{cfg.path}: every conversation is shorter than 4 tokens")
    order = rng.permutation(len(pairs))
    for i, k in enumerate(itertools.cycle(order)):
        prompt, n_in, n_out = pairs[k]
        yield RequestSpec(i, prompt, n_in, n_out)


def _multiturn(cfg: DatasetConfig, counter: TokenCounter, rng: np.random.Generator) -> Iterator[WorkItem]:
    if cfg.path:
        convs = [[(h, counter.count_text(r)) for h, r in conv] for conv in _sharegpt_pairs(cfg.path)]
        stream = itertools.cycle(convs)
    else:
        source = TextSource(counter, rng)
        ins, outs = LengthDist.parse(cfg.input_len), LengthDist.parse(cfg.output_len)

        def synthetic() -> Iterator[list[tuple[str, int]]]:
            while True:
                yield [(source.take(ins.sample(rng, 1)[0]), outs.sample(rng, 1)[0]) for _ in range(cfg.num_turns)]

        stream = synthetic()
    for i, conv in enumerate(stream):
        turns = [RequestSpec(i, text, counter.count_text(text), n_out) for text, n_out in conv]
        yield Conversation(i, f"session-{i}", turns)
