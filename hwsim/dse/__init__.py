"""hwsim.dse: joint accuracy-and-hardware studies (study files, design points, runner, results store).

    from hwsim.dse import Study, load
    study = Study.from_toml("studies/smoke.toml")
    study.run(db="reports/smoke/study.db")          # resumable; one transaction per finished point
    df = load("reports/smoke/study.db")             # one row per design point, flat columns

See docs/dse.md.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AccuracyPoint": ".points", "HardwarePoint": ".points", "DesignPoint": ".points", "config_key": ".points",
    "Study": ".study", "StudyError": ".study",
    "accelerator": ".costing", "cost_metrics": ".costing",
    "ResultStore": ".store", "load": ".store", "study_info": ".store",
    "run_study": ".runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hwsim.dse' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
