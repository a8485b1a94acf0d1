"""`--executor ray`: each trial a Ray task that reserves one server's resources on a Ray cluster,
so a study spreads over many machines. Optuna's ask/tell drives it: trials are asked here, run
remotely, and told back with the same records as a local trial."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.study import Executor, StudyConfig, TrialObjective, finished
from tuner.trial import TrialConfig, TrialFailed, TrialResult, run_trial


def _remote_trial(tc: TrialConfig) -> TrialResult | tuple[str, str]:
    """Runs on a Ray worker. A failure comes back as data: an exception would lose its log tail."""
    try:
        return run_trial(tc)
    except TrialFailed as e:
        return (e.reason, e.log_tail)


class RayExecutor(Executor):
    def __init__(self, address: str | None = None, cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0,
                 parallel: int | None = None) -> None:
        self.address = address
        self.cpus, self.gpus = cpus_per_trial, gpus_per_trial
        self.parallel = parallel

    def _init(self) -> Any:
        try:
            import ray
        except ImportError:
            raise RuntimeError("--executor ray needs Ray: pip install ray") from None
        if not ray.is_initialized():
            # No address: a local Ray instance on this machine (what a test or a laptop uses).
            ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False,
                     include_dashboard=False)
        return ray

    def slots(self, ray: Any) -> int:
        if self.parallel:
            return self.parallel
        cpus = ray.cluster_resources().get("CPU", 1)
        return max(1, int(cpus // self.cpus)) if self.cpus else 1

    def run(self, study: optuna.Study, objective: TrialObjective, n_trials: int, cfg: StudyConfig,
            progress: Callable[[optuna.Study, FrozenTrial], None] | None) -> None:
        ray = self._init()
        task = ray.remote(_remote_trial).options(num_cpus=self.cpus, num_gpus=self.gpus)
        slots, started, asked = self.slots(ray), time.monotonic(), 0
        pending: dict[Any, optuna.Trial] = {}
        while pending or asked < n_trials:
            out_of_time = cfg.timeout_s is not None and time.monotonic() - started > cfg.timeout_s
            while (len(pending) < slots and asked < n_trials and not out_of_time
                   and finished(study) + len(pending) < cfg.n_trials):
                with warnings.catch_warnings():  # Optuna's heartbeat note is about optimize(), not ask/tell
                    warnings.simplefilter("ignore", UserWarning)
                    trial = study.ask()
                pending[task.remote(objective.prepare(trial))] = trial
                asked += 1
            if not pending:
                break
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                frozen = self._tell(study, objective, pending.pop(ref), ray.get(ref))
                if progress is not None:
                    progress(study, frozen)

    @staticmethod
    def _tell(study: optuna.Study, objective: TrialObjective, trial: optuna.Trial,
              outcome: TrialResult | tuple[str, str]) -> FrozenTrial:
        if isinstance(outcome, tuple):
            objective.fail(trial, TrialFailed(*outcome))
            return study.tell(trial, state=TrialState.FAIL)
        return study.tell(trial, objective.record(trial, outcome))


