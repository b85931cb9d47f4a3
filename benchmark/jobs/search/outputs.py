"""What a search leaves behind: the trials table, the best trial as a study file to run on the
test manifests, Optuna's plots, and the printed outcome (:class:`SearchOutcome`)."""

from __future__ import annotations

import copy
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmark.errors import FssBenchError
from benchmark.specs.search import SearchSpec
from benchmark.specs.study import parse_study


@dataclass
class SearchOutcome:
    """What one worker did: ``ran_here`` counts the trials this process ran (any final state, not
    other workers'); ``failures`` is the number of failures in a row that stopped this worker
    (``MAX_CONSECUTIVE_FAILURES``), 0 when it was not stopped by failures (then it exits 0)."""

    study_name: str
    storage: str
    parent_run_id: str
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    ran_here: int
    seconds: float
    cache_summary: str
    outputs: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failures: int = 0


def check_test_tuning(spec: SearchSpec, allow: bool) -> None:
    """Refuse a search on test manifests unless ``--allow-test-tuning`` was given."""
    if spec.kind == "test" and not allow:
        raise FssBenchError(
            f"{spec.source}: kind: test would tune on the test episodes that reports score (the numbers "
            "would no longer be test results); use kind: val (the fold's base classes on the val split), "
            "or pass --allow-test-tuning, which tags the study, every trial and every run fss.tuned_on_test=true"
        )


def trials_table(study: Any) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, episodes run, parameters, MLflow run."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "episodes_run": t.user_attrs.get("episodes_run"),
                **{f"param.{k}": v for k, v in t.params.items()},
                "retry_of": t.user_attrs.get("retry_of"),
                "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
                "seconds": t.duration.total_seconds() if t.duration is not None else None,
            }
        )
    return rows


def best_trial(study: Any) -> dict[str, Any] | None:
    try:
        t = study.best_trial
    except ValueError:
        return None
    return {"number": t.number, "value": t.value, "params": dict(t.params)}


def best_study_raw(spec: SearchSpec, best: dict[str, Any]) -> dict[str, Any]:
    """The base study (as given, with its test episodes) plus ``<variant>-tuned``: the searched
    variant with the best parameters."""
    raw = copy.deepcopy(spec.study_raw)
    variants = raw.get("variants") or {}
    own = dict(variants.get(spec.variant.name) or {})
    variants[f"{spec.variant.name}-tuned"] = {**own, **best["params"]}
    raw["variants"] = variants
    raw["name"] = f"{raw['name']}-tuned"
    desc = raw.get("description", "")
    raw["description"] = (
        desc + "; " if desc else ""
    ) + f"with {spec.variant.name}-tuned from search {spec.name}"
    return raw


def best_study_yaml(spec: SearchSpec, best: dict[str, Any], study_name: str, storage: str) -> str:
    raw = best_study_raw(spec, best)
    parse_study(copy.deepcopy(raw), source="best-study.yaml")  # what is written must be a valid study
    where = (
        "TEST manifests (tuned on test: --allow-test-tuning)"
        if spec.tuned_on_test
        else "validation manifests (base classes)"
    )
    header = [
        f"# Best parameters of search {spec.name!r} ({spec.source}): Optuna study {study_name!r} in {storage},",
        f"# trial {best['number']}, {spec.metric} {100 * best['value']:.2f} on the {where}.",
        f"# {spec.variant.name}-tuned carries them; this study scores it on the test manifests:",
        "#   fssbench run THIS_FILE",
    ]
    if spec.tuned_on_test:
        header.insert(0, "# WARNING: TUNED ON TEST EPISODES: its test numbers are not unbiased results.")
    return "\n".join(header) + "\n" + yaml.safe_dump(raw, sort_keys=False, default_flow_style=None)


def save_plots(study: Any, folder: Path, spec: SearchSpec) -> tuple[dict[str, Path], list[str]]:
    """Optuna's optimisation history, parameter importances, slice and contour plots (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    out, notes = {}, []
    params = list(spec.space)
    # objective values in percent, as the tables print them (trials hold fractions)
    label = f"{spec.metric} (%)"
    in_percent = {"target": lambda t: 100 * t.value, "target_name": label}
    makers = {
        "history": lambda: ovm.plot_optimization_history(study, **in_percent),
        "importances": lambda: ovm.plot_param_importances(study),
        "slice": lambda: ovm.plot_slice(study, **in_percent),
        "contour": lambda: ovm.plot_contour(study, params=params[:2], **in_percent),
    }
    title_note = " (RANDOM-INIT WEIGHTS)" if spec.variant.settings.get("random_init") else ""
    if spec.tuned_on_test:
        title_note += " (TUNED ON TEST)"
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "unique value length is less than 2"
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    for name, make in makers.items():
        reason = _nothing_to_show(name, params, done)
        if reason:
            notes.append(f"{name} plot skipped: {reason}")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)
                ax = make()
            axes = ax if hasattr(ax, "flat") else [ax]
            fig = next(iter(getattr(axes, "flat", axes))).figure
            fig.suptitle(
                f"{spec.name} (Optuna study {study.study_name}): {name}{title_note}",
                color="red" if title_note else "black",
            )
            path = folder / f"{name}.png"
            fig.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(fig)
            out[name] = path
        except Exception as e:  # too few finished trials, a constant parameter ...
            notes.append(
                f"{name} plot skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            )
            plt.close("all")
    return out, notes


def _nothing_to_show(plot: str, params: list[str], done: list[Any]) -> str | None:
    """Why an Optuna plot would show nothing (then it is skipped, with this reason), or None."""
    if not done:
        return "no trial completed"
    if plot == "contour":
        if len(params) < 2:
            return "the space has one parameter"
        for p in params[:2]:
            drawn = {repr(t.params.get(p)) for t in done}
            if len(drawn) < 2:
                return f"every completed trial drew one value of {p} ({next(iter(drawn))})"
    if plot in ("slice", "importances") and all(
        len({repr(t.params.get(p)) for t in done}) < 2 for p in params
    ):
        return "every completed trial drew the same parameters"
    return None


def print_outcome(outcome: SearchOutcome, spec: SearchSpec, tracking_uri: str, out: Any = sys.stdout) -> None:
    import pandas as pd

    table = pd.DataFrame(outcome.trials)
    if not table.empty:
        shown = table.drop(columns=[c for c in ("mlflow_run_id", "retry_of") if c in table])
        if "value" in shown:
            shown["value"] = shown["value"].map(
                lambda v: None if v is None or pd.isna(v) else round(100 * v, 2)
            )
            shown = shown.rename(columns={"value": f"{spec.metric} (%)"})
        print(shown.to_markdown(index=False), file=out)
        counts = table["state"].value_counts().to_dict()
        print("trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), file=out)
    if outcome.ran_here:
        rate = outcome.ran_here / max(outcome.seconds, 1e-9)
        print(
            f"{outcome.ran_here} trial(s) ran here in {outcome.seconds:.1f} s ({rate:.2f} trials/s)", file=out
        )
    print(outcome.cache_summary, file=out)
    if outcome.best is not None:
        print(
            f"best: trial {outcome.best['number']}, {spec.metric} {100 * outcome.best['value']:.2f} on "
            f"{spec.kind} manifests, params {json.dumps(outcome.best['params'], sort_keys=True)}",
            file=out,
        )
    for name, path in outcome.outputs.items():
        print(f"{name}: {path}", file=out)
    for note in outcome.notes:
        print(f"note: {note}", file=out)
    print(
        f"Optuna study {outcome.study_name!r} in {outcome.storage}; MLflow: {tracking_uri} "
        f"(experiment {spec.experiment!r}, parent run {outcome.parent_run_id})",
        file=out,
    )
    if spec.variant.settings.get("random_init"):
        print(
            "WARNING: RANDOM-INIT WEIGHTS: these numbers check the pipeline, they are not results", file=out
        )
    if spec.tuned_on_test:
        print("WARNING: TUNED ON TEST EPISODES (fss.tuned_on_test=true): not unbiased test results", file=out)
