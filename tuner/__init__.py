"""dyno's tuner: an Optuna study over `dyno serve` flags, each trial a real server process under
real load from loadgen; export of the chosen config; replicas and cost for a target load.

    from tuner import StudyConfig, run_study, default_space, make_objective
    study = run_study(StudyConfig("s", "sqlite:///s.db", default_space({"max_model_len": 512}),
                                  make_objective("throughput", [], ()), BenchConfig(...), Path("runs")))
"""

from tuner.engines import DynoEngine, Engine, LlamaCppEngine, VllmEngine, make_engine
from tuner.objectives import PRESETS, Metric, Objective, make_objective
from tuner.space import Param, Space, SpaceError, default_space, load_space, space_from_dict
from tuner.study import StudyConfig, baseline_trial, best_trial, load_study, open_study, run_study
from tuner.trial import TrialConfig, TrialFailed, TrialResult, run_trial

__all__ = [
    "PRESETS",
    "DynoEngine",
    "Engine",
    "LlamaCppEngine",
    "Metric",
    "Objective",
    "Param",
    "Space",
    "SpaceError",
    "StudyConfig",
    "TrialConfig",
    "TrialFailed",
    "TrialResult",
    "VllmEngine",
    "baseline_trial",
    "best_trial",
    "default_space",
    "load_space",
    "load_study",
    "make_engine",
    "make_objective",
    "open_study",
    "run_study",
    "run_trial",
    "space_from_dict",
]
