"""`dyno export`: a study's chosen config in the forms production needs.

dyno serve and vllm serve commands, YAML, JSON, an env file, a Kubernetes Deployment + Service,
and Helm values. Every structured form is built as data and dumped by PyYAML/json, so it parses.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuner.engines import DynoEngine, VllmEngine, flag_argv
from tuner.study import best_trial, load_study, trial_by_number

FORMATS = ("dyno", "vllm", "yaml", "json", "env", "k8s", "helm")
SUFFIX = {"dyno": "dyno-serve.sh", "vllm": "vllm-serve.sh", "yaml": "config.yaml", "json": "config.json",
          "env": "dyno.env", "k8s": "k8s.yaml", "helm": "values.yaml"}
PORT = 8000


class _NoAliases(yaml.SafeDumper):
    """Manifests without &id001 anchors: kubectl reads them, people reading them should too."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


@dataclass(frozen=True)
class ExportConfig:
    """A chosen config: its flags (fixed + tuned) and where it came from."""

    flags: dict[str, Any]
    study: str
    trial: int
    metrics: dict[str, float]
    name: str = "dyno"
    image: str = "llm-dyno:latest"
    replicas: int = 1
    gpus: int = 0

    @property
    def k8s_name(self) -> str:
        return re.sub(r"[^a-z0-9-]+", "-", self.name.lower()).strip("-")[:63] or "dyno"

    def args(self, host: str = "0.0.0.0", port: int = PORT) -> list[str]:
        return ["--host", host, "--port", str(port), *flag_argv(self.flags)]


def chosen(storage: str, study_name: str, trial: int | None) -> tuple[dict[str, Any], int, dict[str, float]]:
    study = load_study(study_name, storage)
    t = best_trial(study) if trial is None else trial_by_number(study, trial)
    if "flags" not in t.user_attrs:
        raise ValueError(f"trial {t.number} of {study_name!r} never launched a server; pick another")
    names = [m.split(":")[0] for m in study.user_attrs.get("dyno", {}).get("objective", {}).get("metrics", [])]
    metrics = dict(zip(names, t.values)) if t.values else {}
    return dict(t.user_attrs["flags"]), t.number, metrics


def as_dyno(cfg: ExportConfig) -> str:
    return shlex.join(["dyno", "serve", *cfg.args()])


def as_vllm(cfg: ExportConfig) -> str:
    return VllmEngine().shell(cfg.flags, "0.0.0.0", PORT)


def as_data(cfg: ExportConfig) -> dict[str, Any]:
    return {"study": cfg.study, "trial": cfg.trial, "metrics": cfg.metrics,
            "serve": {k: v for k, v in cfg.flags.items()}, "command": ["dyno", "serve", *cfg.args()]}


def as_yaml(cfg: ExportConfig) -> str:
    return yaml.dump(as_data(cfg), Dumper=_NoAliases, sort_keys=False)


def as_json(cfg: ExportConfig) -> str:
    return json.dumps(as_data(cfg), indent=2) + "\n"


def as_env(cfg: ExportConfig) -> str:
    """One DYNO_<FLAG> per flag, plus DYNO_SERVE_ARGS for `dyno serve $DYNO_SERVE_ARGS`."""
    lines = [f"# study {cfg.study}, trial {cfg.trial}"]
    for name, value in cfg.flags.items():
        shown = json.dumps(value) if isinstance(value, (list, dict)) else str(value).lower() \
            if isinstance(value, bool) else str(value)
        lines.append(f"DYNO_{name.upper()}={shlex.quote(shown)}")
    lines.append(f"DYNO_SERVE_ARGS={shlex.quote(shlex.join(cfg.args()))}")
    return "\n".join(lines) + "\n"


def _resources(cfg: ExportConfig) -> dict[str, Any]:
    return {"limits": {"nvidia.com/gpu": cfg.gpus}} if cfg.gpus else {}


def _container(cfg: ExportConfig) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/health", "port": PORT}, "periodSeconds": 5}
    return {"name": "dyno", "image": cfg.image, "command": ["dyno", "serve"], "args": cfg.args(),
            "ports": [{"containerPort": PORT, "name": "http"}],
            "readinessProbe": {**probe, "initialDelaySeconds": 5},
            "livenessProbe": {**probe, "initialDelaySeconds": 60}, "resources": _resources(cfg)}


def as_k8s(cfg: ExportConfig) -> str:
    labels = {"app.kubernetes.io/name": cfg.k8s_name}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": cfg.k8s_name, "labels": labels,
                     "annotations": {"dyno/study": cfg.study, "dyno/trial": str(cfg.trial)}},
        "spec": {"replicas": cfg.replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [_container(cfg)]}}},
    }
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": cfg.k8s_name, "labels": labels},
               "spec": {"selector": labels, "ports": [{"name": "http", "port": PORT, "targetPort": PORT}]}}
    return yaml.dump_all([deployment, service], Dumper=_NoAliases, sort_keys=False)


def as_helm(cfg: ExportConfig) -> str:
    repo, _, tag = cfg.image.partition(":")
    values = {"replicaCount": cfg.replicas, "image": {"repository": repo, "tag": tag or "latest"},
              "command": ["dyno", "serve"], "args": cfg.args(), "service": {"type": "ClusterIP", "port": PORT},
              "resources": _resources(cfg), "dyno": {"study": cfg.study, "trial": cfg.trial, "flags": cfg.flags}}
    return yaml.dump(values, Dumper=_NoAliases, sort_keys=False)


RENDER = {"dyno": as_dyno, "vllm": as_vllm, "yaml": as_yaml, "json": as_json, "env": as_env,
          "k8s": as_k8s, "helm": as_helm}


def render(cfg: ExportConfig, fmt: str) -> str:
    text = RENDER[fmt](cfg)
    return text if text.endswith("\n") else text + "\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dyno export", description="A tuned config as a dyno serve / vllm serve "
                                "command, YAML, JSON, env file, Kubernetes manifest or Helm values.")
    p.add_argument("--study-name", default="dyno")
    p.add_argument("--storage", default="sqlite:///dyno-tune.db")
    p.add_argument("--trial", type=int, help="trial number (default: the best within the SLOs)")
    p.add_argument("--format", choices=(*FORMATS, "all"), default="dyno")
    p.add_argument("--out", help="file (or directory with --format all); default: stdout")
    p.add_argument("--name", default="dyno", help="Kubernetes name")
    p.add_argument("--image", default="llm-dyno:latest", help="container image")
    p.add_argument("--replicas", type=int, default=1, help="Deployment replicas (see `dyno plan`)")
    p.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu per pod")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        flags, number, metrics = chosen(args.storage, args.study_name, args.trial)
    except ValueError as e:
        print(f"dyno export: {e}", file=sys.stderr)
        return 2
    cfg = ExportConfig(flags, args.study_name, number, metrics, args.name, args.image, args.replicas, args.gpus)
    if args.format == "all":
        out = Path(args.out or f"{args.study_name}-export")
        out.mkdir(parents=True, exist_ok=True)
        for fmt in FORMATS:
            (out / SUFFIX[fmt]).write_text(render(cfg, fmt))
        print(f"wrote {', '.join(SUFFIX[f] for f in FORMATS)} to {out}/")
        return 0
    text = render(cfg, args.format)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0
