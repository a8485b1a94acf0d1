"""The `dyno` dispatcher: each subcommand lives in its own package as `main(argv) -> int`."""

from __future__ import annotations

import importlib
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
    return int(getattr(importlib.import_module(module), func)(rest) or 0)
