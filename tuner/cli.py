"""`dyno tune`, `dyno export`, `dyno plan`.

    dyno tune --n-trials 10 --num-prompts 64 --random-input-len 128 --random-output-len 32 \\
        -- --max-model-len 512          # flags after -- are fixed for every trial
    dyno export --study-name dyno --format dyno
    dyno plan --study-name dyno --rate 20 --slo ttft=500ms --cost-per-hour 2.5
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from engine.args import ArgsError, EngineArgs, make_parser as serve_parser
from loadgen import (BenchConfig, LoadPoint, add_workload_arguments, dataset_config, parse_slo,
                     positive_rate)
from tuner.engines import ENGINES, DynoEngine, make_engine
from tuner.objectives import PRESETS, make_objective
from tuner.space import SpaceError, default_space, load_space
from tuner.study import (FINISHED, Executor, LocalExecutor, StudyConfig, baseline_trial, best_trial,
                         eta_s, load_study, open_study, run_study, trial_flags)
from tuner.trial import HOST, bench_command

DEFAULT_STORAGE = "sqlite:///dyno-tune.db"


def _add_study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study-name", default="dyno", help="default: dyno")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="any Optuna storage URL (sqlite:///f.db, "
                   "postgresql://..., mysql://...) or a journal file (*.log); default " + DEFAULT_STORAGE)


def tune_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dyno tune", description="Optuna study over `dyno serve` flags: each "
                                "trial a real server under real load. Server flags after `--` are fixed.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    g = p.add_argument_group("study")
    _add_study_args(g)
    g.add_argument("--n-trials", type=int, default=10, help="trials in the study in all (a resumed study "
                   "runs the rest)")
    g.add_argument("--timeout", type=float, help="seconds for this run")
    g.add_argument("--space", help="YAML search space (default: the issue's eight flags)")
    g.add_argument("--objective", choices=tuple(PRESETS), default=None,
                   help="preset (default: goodput with --slo, else throughput)")
    g.add_argument("--metric", action="append", default=[], help="KEY:max|min of the load summary "
                   "(repeatable; two or more make a Pareto study)")
    g.add_argument("--slo", type=parse_slo, action="append", default=[], help="e.g. ttft=500ms (repeatable)")
    g.add_argument("--slo-percentile", choices=("p90", "p95", "p99"), default="p99")
    g.add_argument("--repeats", type=int, default=1, help="load runs per trial (mean and spread)")
    g.add_argument("--engine", choices=tuple(ENGINES), default="dyno")
    g.add_argument("--model", help="model for the server (default: the server's default model)")
    g.add_argument("--result-dir", default="tune-results", help="per-trial server logs and load files")
    g.add_argument("--startup-timeout", type=float, default=300.0)
    g.add_argument("--no-prune", action="store_true",
                   help="run every trial to the end. By default a single-objective study reports the "
                        "objective over the requests finished so far at 25/50/75%% of each load run "
                        "(and after each repeat) and the median pruner stops clearly bad trials there; "
                        "the baseline is never pruned, and Optuna prunes no multi-objective study")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: one trial after another here; ray: each trial a Ray task")
    g.add_argument("--ray-address", help="Ray cluster address (default: start a local Ray instance)")
    g.add_argument("--ray-cpus-per-trial", type=float, default=1.0, help="CPUs one server reserves")
    g.add_argument("--ray-gpus-per-trial", type=float, default=0.0, help="GPUs one server reserves")
    g.add_argument("--parallel", type=int, help="ray: trials at once (default: what the cluster fits)")
    g.add_argument("--dry-run", action="store_true", help="print the first trials' commands, run nothing")
    g.add_argument("--dry-run-trials", type=int, default=3)
    add_workload_arguments(p)
    g = p.add_argument_group("load per trial")
    g.add_argument("--num-prompts", type=int, default=100)
    g.add_argument("--duration", type=float, help="seconds of load per trial (instead of --num-prompts)")
    g.add_argument("--warmup", type=int, default=4, help="requests before the measured ones")
    g.add_argument("--request-rate", type=positive_rate, help="req/s open loop (default: closed loop)")
    g.add_argument("--max-concurrency", type=int, default=16)
    g.add_argument("--request-timeout", type=float, default=120.0)
    return p


def split_server_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def fixed_flags(argv: list[str], model: str | None) -> dict:
    """The server flags typed after `--`, checked by the engine's own parser and rules."""
    ns = serve_parser(prog="dyno tune -- (server flags)", positional_model=False).parse_args(argv)
    fixed = vars(ns)
    if model:
        fixed["model"] = model
    EngineArgs(**fixed).validate()
    return fixed


def bench_config(args: argparse.Namespace) -> BenchConfig:
    point = (LoadPoint(rate=args.request_rate, max_concurrency=args.max_concurrency) if args.request_rate
             else LoadPoint(concurrency=args.max_concurrency))
    return BenchConfig(dataset=dataset_config(args), points=(point,),
                       num_prompts=None if args.duration else args.num_prompts, duration_s=args.duration,
                       warmup=args.warmup, slos=tuple(args.slo), ignore_eos=args.ignore_eos, seed=args.seed,
                       scrape_interval_s=1.0, request_timeout_s=args.request_timeout)


def study_config(args: argparse.Namespace, server_argv: list[str]) -> StudyConfig:
    fixed = fixed_flags(server_argv, args.model)
    space = load_space(args.space, fixed) if args.space else default_space(fixed)
    preset = args.objective or ("goodput" if args.slo else "throughput")
    objective = make_objective(preset, args.metric, tuple(args.slo), args.slo_percentile)
    return StudyConfig(args.study_name, args.storage, space, objective, bench_config(args),
                       Path(args.result_dir), args.n_trials, args.timeout, args.repeats, args.engine,
                       args.seed, args.startup_timeout, not args.no_prune)


def dry_run(cfg: StudyConfig, n: int, console: Console) -> None:
    """The first trials' commands from the same sampler, on a throwaway in-memory study."""
    mem = optuna.create_study(directions=cfg.objective.directions, sampler=open_study_sampler(cfg))
    mem.enqueue_trial(cfg.space.baseline(), user_attrs={"baseline": True})
    engine = make_engine(cfg.engine)
    console.print(f"[bold]dry run[/]: study {cfg.study_name!r} in {cfg.storage}; objective "
                  f"{', '.join(map(str, cfg.objective.metrics))}; nothing is launched")
    for line in cfg.space.describe():
        console.print(f"  space: {line}")
    for i in range(n):
        trial = mem.ask()
        flags = trial_flags(cfg.space, trial)
        label = "baseline (server defaults)" if trial.user_attrs.get("baseline") else "sampled"
        console.print(f"\ntrial {i} ({label}):", highlight=False)
        console.print("  server: " + engine.shell(flags, HOST, 8000), highlight=False, soft_wrap=True)
        console.print("  load:   " + bench_command(cfg.bench, f"http://{HOST}:8000"), highlight=False,
                      soft_wrap=True)


def open_study_sampler(cfg: StudyConfig) -> optuna.samplers.BaseSampler:
    from tuner.study import make_sampler
    return make_sampler(cfg.objective, cfg.seed)


class Progress:
    """One line per finished trial: n of N, outcome, the current best, the time left."""

    def __init__(self, cfg: StudyConfig, console: Console) -> None:
        self.cfg, self.console, self.started = cfg, console, time.monotonic()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        n = len(study.get_trials(deepcopy=False, states=FINISHED))
        key = self.cfg.objective.metrics[0].key
        if trial.state == TrialState.COMPLETE:
            what = f"[green]ok[/] {key} {trial.values[0]:.4g}" + _ratio(study, trial)
        elif trial.state == TrialState.PRUNED:
            what = "[yellow]pruned[/]"
        else:
            what = f"[red]failed[/]: {trial.user_attrs.get('failure_reason', 'see the log')}"
        try:
            best = best_trial(study)
            best_text = f"best #{best.number} {best.values[0]:.4g}"
        except ValueError:
            best_text = "no best yet"
        left = eta_s(study, self.cfg.n_trials, self.started, self.cfg.timeout_s)
        eta = "" if math.isnan(left) else f", ~{left / 60:.1f} min left"
        self.console.print(f"trial {n}/{self.cfg.n_trials} (#{trial.number}) {what} · {best_text}{eta}",
                           highlight=False)


def _ratio(study: optuna.Study, trial: FrozenTrial) -> str:
    base = baseline_trial(study)
    if base is None or not base.values[0]:
        return ""
    return f" ({trial.values[0] / base.values[0]:.2f}x baseline)"


def trials_table(study: optuna.Study, key_names: list[str]) -> Table:
    table = Table(title=f"study {study.study_name}")
    for col in ("trial", "state", *key_names, "vs baseline", "startup s", "peak RSS MiB", "flags / reason"):
        table.add_column(col)
    base = baseline_trial(study)
    for t in study.get_trials(deepcopy=False):
        values = [f"{v:.4g}" for v in t.values] if t.values else ["-"] * len(key_names)
        ratio = (f"{t.values[0] / base.values[0]:.2f}x" if t.values and base and base.values[0] else "-")
        note = t.user_attrs.get("failure_reason") or " ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items()) or "server defaults"
        if t.user_attrs.get("baseline"):
            note = "baseline: " + note
        table.add_row(str(t.number), t.state.name, *values, ratio,
                      f"{t.user_attrs.get('startup_s', 0):.1f}", f"{t.user_attrs.get('peak_rss_mb', 0):.0f}", note)
    return table


def make_executor(args: argparse.Namespace) -> Executor:
    if args.executor == "ray":
        from tuner.ray_executor import RayExecutor
        return RayExecutor(args.ray_address, args.ray_cpus_per_trial, args.ray_gpus_per_trial, args.parallel)
    return LocalExecutor()


def tune_main(argv: list[str]) -> int:
    own, server_argv = split_server_flags(list(argv))
    args = tune_parser().parse_args(own)
    console = Console(width=None if sys.stdout.isatty() else 160)
    try:
        cfg = study_config(args, server_argv)
    except (SpaceError, ArgsError, ValueError) as e:
        print(f"dyno tune: {e}", file=sys.stderr)
        return 2
    # Failed trials are reported on the progress line; Optuna's tracebacks would bury it.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if args.dry_run:
        dry_run(cfg, args.dry_run_trials, console)
        return 0
    console.print(f"study {cfg.study_name!r} in {cfg.storage}: {cfg.n_trials} trials, objective "
                  f"{', '.join(map(str, cfg.objective.metrics))}"
                  + (f" within {', '.join(map(str, cfg.objective.slos))}" if cfg.objective.slos else ""),
                  highlight=False)
    study = run_study(cfg, Progress(cfg, console), make_executor(args))
    console.print(trials_table(study, [str(m) for m in cfg.objective.metrics]))
    try:
        best = best_trial(study)
    except ValueError as e:
        console.print(f"[red]{e}[/]")
        return 1
    where = f"--study-name {shlex.quote(cfg.study_name)} --storage {shlex.quote(cfg.storage)}"
    command = DynoEngine(program=["dyno"]).shell(best.user_attrs["flags"])
    console.print(f"best: trial {best.number}: {command}", highlight=False, soft_wrap=True)
    console.print(f"next: dyno export {where} --format k8s    dyno plan {where} --rate 10", highlight=False,
                  soft_wrap=True)
    return 0


def export_main(argv: list[str]) -> int:
    from tuner.export import main
    return main(argv)


def plan_main(argv: list[str]) -> int:
    from tuner.plan import main
    return main(argv)
