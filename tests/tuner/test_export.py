"""Each export format of a hand-made study, parsed back."""

from __future__ import annotations

import json
import shlex

import yaml

from tuner.export import FORMATS, SUFFIX, main as export_main

FLAGS_1 = {"max_model_len": 512, "max_num_seqs": 32, "enable_prefix_caching": True}
ARGS_1 = ["--host", "0.0.0.0", "--port", "8000", "--max-model-len", "512", "--max-num-seqs", "32",
          "--enable-prefix-caching"]


def export(capsys, storage, *extra) -> str:
    assert export_main(["--study-name", "hand", "--storage", storage, *extra]) == 0
    return capsys.readouterr().out


def test_best_trial_as_commands(hand_study, storage, capsys):
    assert shlex.split(export(capsys, storage, "--format", "dyno")) == ["dyno", "serve", *ARGS_1]
    assert shlex.split(export(capsys, storage, "--format", "vllm")) == [
        "vllm", "serve", "HuggingFaceTB/SmolLM2-135M-Instruct", *ARGS_1]


def test_trial_choice_and_a_failed_trial_still_exports_its_flags(hand_study, storage, capsys):
    assert shlex.split(export(capsys, storage, "--format", "dyno", "--trial", "0")) == [
        "dyno", "serve", "--host", "0.0.0.0", "--port", "8000", "--max-model-len", "512"]
    assert export_main(["--study-name", "nope", "--storage", storage]) == 2
    assert "no study 'nope'" in capsys.readouterr().err


def test_yaml_and_json_parse_back(hand_study, storage, capsys):
    for fmt, load in (("yaml", yaml.safe_load), ("json", json.loads)):
        data = load(export(capsys, storage, "--format", fmt))
        assert data["trial"] == 1 and data["study"] == "hand"
        assert data["serve"] == FLAGS_1
        assert data["command"] == ["dyno", "serve", *ARGS_1]
        assert data["metrics"] == {"output_throughput": 250.0}


def test_env_file(hand_study, storage, capsys):
    lines = [line for line in export(capsys, storage, "--format", "env").splitlines() if not line.startswith("#")]
    env = dict(line.split("=", 1) for line in lines)
    assert env["DYNO_MAX_NUM_SEQS"] == "32" and env["DYNO_ENABLE_PREFIX_CACHING"] == "true"
    assert shlex.split(env["DYNO_SERVE_ARGS"]) == [shlex.join(ARGS_1)]


def test_kubernetes_deployment_and_service(hand_study, storage, capsys):
    docs = list(yaml.safe_load_all(export(capsys, storage, "--format", "k8s", "--name", "Chat API",
                                          "--image", "reg/dyno:1", "--replicas", "3", "--gpus", "1")))
    deployment, service = docs
    assert (deployment["kind"], service["kind"]) == ("Deployment", "Service")
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == "chat-api"
    assert deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "reg/dyno:1"
    assert container["command"] == ["dyno", "serve"] and container["args"] == ARGS_1
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": 8000}
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_helm_values(hand_study, storage, capsys):
    values = yaml.safe_load(export(capsys, storage, "--format", "helm", "--image", "reg/dyno:1"))
    assert values["image"] == {"repository": "reg/dyno", "tag": "1"}
    assert values["args"] == ARGS_1 and values["replicaCount"] == 1
    assert values["dyno"]["flags"] == FLAGS_1


def test_all_formats_to_a_directory(hand_study, storage, tmp_path, capsys):
    out = tmp_path / "export"
    export(capsys, storage, "--format", "all", "--out", str(out))
    assert sorted(p.name for p in out.iterdir()) == sorted(SUFFIX[f] for f in FORMATS)
    assert list(yaml.safe_load_all((out / "k8s.yaml").read_text()))[0]["kind"] == "Deployment"


def test_pareto_study_exports_the_front_member_best_on_the_first_metric(tmp_path, capsys):
    import optuna
    from optuna.distributions import IntDistribution
    from optuna.trial import create_trial

    storage = str(tmp_path / "pareto.log")  # a journal file: Optuna's JournalStorage
    from tuner.study import open_storage
    study = optuna.create_study(storage=open_storage(storage), study_name="p", directions=["maximize", "minimize"])
    for seqs, tput, ttft in ((4, 100.0, 50.0), (16, 300.0, 200.0), (8, 90.0, 300.0)):
        study.add_trial(create_trial(values=[tput, ttft], params={"max_num_seqs": seqs},
                                     distributions={"max_num_seqs": IntDistribution(1, 256)},
                                     user_attrs={"flags": {"max_num_seqs": seqs}}))
    assert export_main(["--study-name", "p", "--storage", storage, "--format", "dyno"]) == 0
    assert capsys.readouterr().out.split()[-2:] == ["--max-num-seqs", "16"]
