"""The search space: which `dyno serve` flags a study varies, and over what values.

Derived from engine.args.FLAGS (the single source of truth for flags), so a user space in
YAML is checked against the same names, kinds, choices and rules the server enforces.

YAML form, one entry per flag (either spelling, `max-num-seqs` or `--max-num-seqs`):

    max-num-seqs: {int: [8, 256], log: true}
    max-num-batched-tokens: {int: [512, 8192], step: 256}
    gpu-memory-utilization: {float: [0.5, 0.95]}
    block-size: {choices: [8, 16, 32]}
    enable-prefix-caching: {choices: [true, false]}
    max-model-len: 2048             # a plain value (or {fixed: 2048}): the same in every trial
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from engine.args import FLAGS, ArgsError, Flag

FLAG_BY_NAME: dict[str, Flag] = {f.name: f for f in FLAGS}

# The flags the issue names as the default space: they change speed, never the outputs' meaning.
DEFAULT_FLAGS = ("block_size", "max_num_batched_tokens", "max_num_seqs", "gpu_memory_utilization",
                 "enable_chunked_prefill", "enable_prefix_caching", "kv_cache_dtype",
                 "scheduler_delay_factor")


class SpaceError(ValueError):
    """A bad search space: names the flag and says how to fix it."""


@dataclass(frozen=True)
class Param:
    """One searched flag. kind: categorical | int | float."""

    name: str
    kind: str
    choices: tuple = ()
    low: float = 0
    high: float = 0
    log: bool = False
    step: float | None = None

    @property
    def option(self) -> str:
        return FLAG_BY_NAME[self.name].option

    def distribution(self) -> optuna.distributions.BaseDistribution:
        if self.kind == "categorical":
            return optuna.distributions.CategoricalDistribution(self.choices)
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log,
                                                        step=int(self.step or 1))
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, self.choices)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        value = trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        # Stepped floats come back as 0.21000000000000002; launch commands should say 0.21.
        return round(value, 10) if self.step else value

    def contains(self, value: Any) -> bool:
        if value is None:
            return False
        if self.kind == "categorical":
            return value in self.choices
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Space:
    """The searched params plus the flags fixed for every trial (server flags given by the user)."""

    params: tuple[Param, ...]
    fixed: dict[str, Any] = field(default_factory=dict)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's flags: fixed ones, then one suggestion per param."""
        return {**self.fixed, **{p.name: p.suggest(trial) for p in self.params}}

    def baseline(self) -> dict[str, Any]:
        """The params whose server default lies in the space: enqueued as the baseline trial.
        Params whose default is outside it (None = "engine decides") are left to the engine."""
        out = {}
        for p in self.params:
            default = FLAG_BY_NAME[p.name].default
            if p.contains(default):
                out[p.name] = default
        return out

    def describe(self) -> list[str]:
        lines = []
        for p in self.params:
            if p.kind == "categorical":
                lines.append(f"{p.option}: one of {', '.join(map(str, p.choices))}")
            else:
                lines.append(f"{p.option}: {p.kind} in [{p.low:g}, {p.high:g}]" + (" log" if p.log else ""))
        lines += [f"{FLAG_BY_NAME[k].option} = {v} (fixed)" for k, v in self.fixed.items()]
        return lines

    def to_dict(self) -> dict[str, Any]:
        """The space in its YAML form (stored on the study, so export knows the fixed flags)."""
        out: dict[str, Any] = {}
        for p in self.params:
            key = p.option[2:]
            if p.kind == "categorical":
                out[key] = {"choices": list(p.choices)}
            else:
                out[key] = {p.kind: [p.low, p.high], "log": p.log}
                if p.step is not None:
                    out[key]["step"] = p.step
        out.update({FLAG_BY_NAME[k].option[2:]: {"fixed": v} for k, v in self.fixed.items()})
        return out


def flag_of(key: str) -> Flag:
    """The flag for a YAML key or a command-line option; a clear error when there is none."""
    name = key.strip().lstrip("-").replace("-", "_")
    flag = FLAG_BY_NAME.get(name)
    if flag is None:
        raise SpaceError(f"search space: unknown flag {key!r}; see `dyno serve --help` for the names")
    if flag.is_refused:
        raise SpaceError(f"search space: {flag.option} is refused by dyno (not built yet); remove it")
    return flag


def _checked(flag: Flag, value: Any) -> Any:
    """value with the flag's type, or SpaceError saying why not."""
    if flag.kind is bool and not isinstance(value, bool):
        raise SpaceError(f"search space: {flag.option} is on/off; use true or false (got {value!r})")
    if flag.kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise SpaceError(f"search space: {flag.option} takes a number (got {value!r})")
    if flag.kind is int and not float(value).is_integer():
        raise SpaceError(f"search space: {flag.option} takes whole numbers (got {value!r})")
    value = flag.kind(value) if flag.kind in (int, float) else value
    try:
        flag.check(value)
    except ArgsError as e:
        raise SpaceError(f"search space: {e}") from None
    return value


def parse_entry(key: str, spec: Any) -> Param | tuple[str, Any]:
    """One YAML entry -> a Param, or (name, value) for a fixed flag."""
    flag = flag_of(key)
    if not isinstance(spec, dict):
        return flag.name, _checked(flag, spec)
    kinds = [k for k in ("choices", "int", "float", "fixed") if k in spec]
    unknown = set(spec) - {"choices", "int", "float", "fixed", "log", "step"}
    if len(kinds) != 1 or unknown:
        raise SpaceError(f"search space: {flag.option} needs exactly one of choices, int, float, fixed "
                         f"(plus optional log, step); got {sorted(spec)}")
    kind = kinds[0]
    if kind == "fixed":
        return flag.name, _checked(flag, spec["fixed"])
    if kind == "choices":
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"search space: {flag.option} choices must be a non-empty list")
        return Param(flag.name, "categorical", tuple(_checked(flag, c) for c in choices))
    return _range_param(flag, kind, spec)


def _range_param(flag: Flag, kind: str, spec: dict) -> Param:
    bounds = spec[kind]
    if flag.kind not in (int, float) or (kind == "int" and flag.kind is not int):
        raise SpaceError(f"search space: {flag.option} is {flag.kind.__name__}; an {kind} range does "
                         f"not fit it (use choices)")
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise SpaceError(f"search space: {flag.option} {kind} range must be [low, high]")
    low, high = (_checked(flag, b) for b in bounds)
    if low > high:
        raise SpaceError(f"search space: {flag.option} range [{low}, {high}] has low above high")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise SpaceError(f"search space: {flag.option} log scale needs low > 0 (got {low})")
    step = spec.get("step")
    if step is not None and (log or step <= 0):
        raise SpaceError(f"search space: {flag.option} step must be > 0 and not combined with log")
    return Param(flag.name, "int" if kind == "int" else "float", (), low, high, log, step)


def space_from_dict(data: dict[str, Any], fixed: dict[str, Any] | None = None) -> Space:
    if not isinstance(data, dict) or not data:
        raise SpaceError("search space: expected a mapping of flag -> spec, e.g. `max-num-seqs: {int: [8, 256]}`")
    params, fixed_out = [], dict(fixed or {})
    for key, spec in data.items():
        entry = parse_entry(str(key), spec)
        if isinstance(entry, Param):
            params.append(entry)
        else:
            fixed_out[entry[0]] = entry[1]
    # A flag the user fixed on the command line wins over the same flag in the space.
    params = [p for p in params if p.name not in (fixed or {})]
    return Space(tuple(params), fixed_out)


def load_space(path: str | Path, fixed: dict[str, Any] | None = None) -> Space:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise SpaceError(f"search space: no file {path}") from None
    except yaml.YAMLError as e:
        raise SpaceError(f"search space: {path} is not valid YAML ({e})") from None
    return space_from_dict(data, fixed)


def default_space(fixed: dict[str, Any] | None = None, cuda: bool | None = None) -> Space:
    """The issue's eight flags, with ranges valid for the model and the machine.

    Flags fixed by the user are left out. The token budget starts at the context length (or
    2048 when the engine picks it) so every combination passes the engine's budget checks.
    """
    fixed = dict(fixed or {})
    if cuda is None:
        import torch  # only here: the tuner itself needs no torch
        cuda = torch.cuda.is_available()
    context = fixed.get("max_model_len") or 2048
    budget_low = max(context, 256)
    # On the CPU the memory share is of system RAM, shared with everything else: keep it small.
    mem = (0.5, 0.95) if cuda else (0.05, 0.3)
    kv = ("auto", "fp8") if cuda else ("auto",)  # fp8 KV on the CPU saves memory, never time
    candidates = (
        Param("block_size", "categorical", FLAG_BY_NAME["block_size"].choices),
        Param("max_num_batched_tokens", "int", (), budget_low, max(4 * budget_low, 8192), log=True),
        Param("max_num_seqs", "int", (), 4, 256, log=True),
        Param("gpu_memory_utilization", "float", (), *mem, step=0.01),
        Param("enable_chunked_prefill", "categorical", (False, True)),
        Param("enable_prefix_caching", "categorical", (False, True)),
        Param("kv_cache_dtype", "categorical", kv),
        Param("scheduler_delay_factor", "float", (), 0.0, 0.5, step=0.05),
    )
    assert tuple(p.name for p in candidates) == DEFAULT_FLAGS
    # A flag with a single choice is no search: leave it to the engine.
    return Space(tuple(p for p in candidates if p.name not in fixed and p.choices != ("auto",)), fixed)
