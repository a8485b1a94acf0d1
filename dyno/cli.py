"""The `dyno` dispatcher: each subcommand lives in its own package as `main(argv) -> int`."""

from __future__ import annotations

import importlib
import os
import sys

# subcommand -> (module, function, one-line summary). Modules import lazily so that
# `dyno bench` never pays for torch.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("engine.cli", "serve_main", "run the OpenAI-compatible server"),
    "generate": ("engine.cli", "generate_main", "offline batch generation"),
    "bench": ("loadgen.cli", "main", "load an OpenAI-compatible endpoint and measure it"),
    "tune": ("tuner.cli", "tune_main", "Optuna study over server flags, each trial a real server"),
    "export": ("tuner.cli", "export_main", "a tuned config as a command, YAML, JSON, env, k8s, Helm"),
    "plan": ("tuner.cli", "plan_main", "replicas and cost for a target load within SLOs"),
    "report": ("reports.cli", "report_main", "plots and an HTML/Markdown/CSV report from runs and studies"),
    "tui": ("tui.cli", "main", "the operator dashboard: servers, live metrics, bench, tune, replay"),
}


# Commands that run dyno's engine in this process.
ENGINE_COMMANDS = ("serve", "generate")
# Any of these set leaves the OpenMP runtime's threads where the OS puts them: a placement is
# the user's, and a thread count says this process shares the machine (trials side by side on
# one node, say), where every process would bind its threads to the same first cores.
_THREAD_PLACEMENT_VARS = ("OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY", "KMP_AFFINITY",
                          "OMP_NUM_THREADS")


def bind_engine_threads(environ=os.environ) -> bool:
    """One OpenMP thread per core, each kept on its own core (as vLLM's CPU build binds its
    threads), unless the user placed or counted them. Must run before torch loads the OpenMP
    runtime.

    Unbound, the kernels' threads wander between the cores and leave their caches behind, and
    the HTTP thread lands on either. Bound, the HTTP thread (started after the runtime binds
    the main thread) shares the main thread's core, where the GIL serializes the two anyway,
    and the other core's thread runs undisturbed: `dyno serve --quantization int4
    --kv-cache-dtype fp8`, 64 requests at concurrency 32 on 2 cores, six alternating pairs,
    882-966 against 795-888 tok/s (each pair bound ahead). Returns whether it bound them."""
    if any(environ.get(name) for name in _THREAD_PLACEMENT_VARS):
        return False
    environ["OMP_PROC_BIND"] = "true"
    environ["OMP_PLACES"] = "cores"
    return True


def _usage() -> str:
    lines = ["usage: dyno <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, _, summary) in COMMANDS.items()]
    lines += ["", "`dyno <command> --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"dyno: unknown command {name!r}; run `dyno --help` for the list.", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    if name in ENGINE_COMMANDS:
        bind_engine_threads()
    return int(getattr(importlib.import_module(module), func)(rest) or 0)
