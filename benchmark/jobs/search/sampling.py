"""A search file's Optuna parts: the sampler, the pruner and a trial's draw of the space."""

from __future__ import annotations

import warnings
from typing import Any

from benchmark.specs.search import SearchSpec


def make_sampler(spec: SearchSpec):
    import optuna

    s = spec.sampler
    if s["type"] == "grid":
        return optuna.samplers.GridSampler(spec.grid, seed=s["seed"])
    if s["type"] == "random":
        return optuna.samplers.RandomSampler(seed=s["seed"])
    if s["type"] == "cmaes":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.CmaEsSampler(seed=s["seed"], n_startup_trials=s.get("startup_trials", 1))
    return optuna.samplers.TPESampler(seed=s["seed"], n_startup_trials=s.get("startup_trials", 10))


def make_pruner(spec: SearchSpec):
    import optuna

    p = spec.pruner
    if p["type"] == "none":
        return optuna.pruners.NopPruner()
    if p["type"] == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p["min_resource"] or "auto", reduction_factor=p["reduction_factor"]
        )
    if p["type"] == "wilcoxon":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(
                p_threshold=p["p_threshold"], n_startup_steps=p["startup_steps"]
            )
    return optuna.pruners.MedianPruner(n_startup_trials=p["startup_trials"], n_warmup_steps=p["warmup_steps"])


def suggest(trial: Any, spec: SearchSpec) -> dict[str, Any]:
    """The trial's value of every dimension of the space."""
    out = {}
    for p in spec.space.values():
        if p.type == "categorical":
            out[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.type == "int":
            out[p.name] = trial.suggest_int(p.name, p.low, p.high, step=p.step or 1, log=p.log)
        elif spec.sampler["type"] == "grid":  # the grid's floats are exact values, not a range
            out[p.name] = trial.suggest_categorical(p.name, list(p.grid))
        else:
            out[p.name] = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
    return out
