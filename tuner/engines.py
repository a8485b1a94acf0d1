"""Engine adapters: how a trial's flags become a server command line.

dyno's own server by default; vLLM and llama.cpp's server as external engines through a
command template and a flag mapping. One small base class, like Optuna's BaseSampler.
"""

from __future__ import annotations

import json
import shlex
import sys
from abc import ABC, abstractmethod
from typing import Any

from engine.args import FLAGS

_DEFAULTS = {f.name: f.default for f in FLAGS}


def flag_argv(flags: dict[str, Any]) -> list[str]:
    """`dyno serve`/`vllm serve` style arguments for the flags that differ from the defaults."""
    argv: list[str] = []
    for name, value in flags.items():
        option = "--" + name.replace("_", "-")
        default = _DEFAULTS.get(name)
        if value is None or value == default and name in _DEFAULTS:
            continue
        if isinstance(value, bool):
            argv.append(option if value else "--no-" + option[2:])
        elif isinstance(value, list):
            argv += [option, *map(str, value)]
        elif isinstance(value, dict):
            argv += [option, json.dumps(value)]
        else:
            argv += [option, str(value)]
    return argv


class Engine(ABC):
    """A server the tuner can launch: a command line and the path that says it is ready."""

    name: str
    health_path = "/health"

    @abstractmethod
    def command(self, flags: dict[str, Any], host: str, port: int) -> list[str]:
        """The argv that starts the server with these flags on host:port."""

    def shell(self, flags: dict[str, Any], host: str = "127.0.0.1", port: int = 8000) -> str:
        return shlex.join(self.command(flags, host, port))


class DynoEngine(Engine):
    name = "dyno"

    def __init__(self, python: str | None = None, program: list[str] | None = None) -> None:
        # Trials run `python -m dyno` from this interpreter; exports say `dyno serve`.
        self.program = program or [python or sys.executable, "-m", "dyno"]

    def command(self, flags: dict[str, Any], host: str, port: int) -> list[str]:
        return [*self.program, "serve", "--host", host, "--port", str(port), *flag_argv(flags)]


class VllmEngine(Engine):
    """vLLM takes dyno's flag names as they are (dyno's flags were specified from vLLM's)."""

    name = "vllm"
    # dyno-only flags with no vLLM meaning
    SKIP = frozenset({"device"})

    def command(self, flags: dict[str, Any], host: str, port: int) -> list[str]:
        flags = dict(flags)
        model = flags.pop("model", None) or "HuggingFaceTB/SmolLM2-135M-Instruct"
        rest = {k: v for k, v in flags.items() if k not in self.SKIP}
        return ["vllm", "serve", model, "--host", host, "--port", str(port), *flag_argv(rest)]


class LlamaCppEngine(Engine):
    """llama.cpp's llama-server: only the flags with a counterpart are mapped."""

    name = "llamacpp"
    # dyno flag -> llama-server option
    MAPPING = {"max_model_len": "--ctx-size", "max_num_seqs": "--parallel",
               "max_num_batched_tokens": "--batch-size", "seed": "--seed"}

    def command(self, flags: dict[str, Any], host: str, port: int) -> list[str]:
        argv = ["llama-server", "--host", host, "--port", str(port)]
        if flags.get("model"):
            argv += ["-m", str(flags["model"])]
        for name, option in self.MAPPING.items():
            if flags.get(name) is not None:
                argv += [option, str(flags[name])]
        if flags.get("enable_prefix_caching") is False:
            argv.append("--no-cache-prompt")
        return argv


ENGINES: dict[str, type[Engine]] = {"dyno": DynoEngine, "vllm": VllmEngine, "llamacpp": LlamaCppEngine}


def make_engine(name: str) -> Engine:
    if name not in ENGINES:
        raise ValueError(f"--engine {name}: expected one of {', '.join(ENGINES)}")
    return ENGINES[name]()
