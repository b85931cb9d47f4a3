"""The resolved form of every shipped study, search and training file (and of the demo's study and
search), as plain JSON: what the parsers hand the rest of the suite (resolved settings, cell
settings, identities). ``tests/fixtures/spec_snapshot.json`` holds the form today's parsers gave
before the schema rewrite (issue 25); ``scripts/spec_snapshot.py`` regenerates it and
``tests/test_spec_snapshot.py`` compares. Paths that depend on where the synthetic data or the
repository lie are written as ``<pascal>``, ``<coco>`` and ``<repo>``."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
ABLATIONS = ROOT / "ablations"


def study_overrides(raw: dict, pascal: Path, coco: Path, prefix: str = "") -> list[str]:
    """Overrides that make a shipped study load here: synthetic data, random weights."""
    out = [f"{prefix}data.pascal={pascal}"]
    if "coco" in raw["data"]:
        out.append(f"{prefix}data.coco={coco}")
    for name, switches in (raw.get("variants") or {}).items():
        if (switches or {}).get("finetuned_checkpoint"):
            out.append(f"{prefix}variants.{name}.finetuned_checkpoint=null")
    if (raw.get("model") or {}).get("fssam_checkpoint"):
        out.append(f"{prefix}model.fssam_checkpoint=null")
    return [*out, f"{prefix}model.random_init=true"]


def plain(value: Any, places: dict[str, str]) -> Any:
    """``value`` as JSON types, the paths of ``places`` replaced by their names."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): plain(v, places) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, places) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(plain(v, places) for v in value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        for path, name in places.items():
            value = value.replace(path, name)
    return value


def study_form(study: Any) -> dict[str, Any]:
    """A study's resolved form: its fields, variants and every cell's settings."""
    fields = [
        "name",
        "data",
        "protocol",
        "folds",
        "shots",
        "seeds",
        "episodes",
        "split",
        "batch_size",
        "cache",
        "resources",
        "loader_workers",
        "lists",
        "eval_resolution",
        "eval_size",
        "val_source",
        "holdout_fraction",
        "description",
        "random_init",
    ]
    cells = {
        f"{v.name}/{ds}/{fold}/{shot}": v.cell_settings(ds, fold, shot)
        for v in study.variants
        for ds in study.data
        for fold in study.folds
        for shot in study.shots
    }
    variants = [
        {
            "name": v.name,
            "method": v.method,
            "device": v.device,
            "settings": v.settings,
            "explicit": v.explicit,
        }
        for v in study.variants
    ]
    return {
        **{f: getattr(study, f) for f in fields},
        "resolved": study.resolved(),
        "variants": variants,
        "cells": cells,
    }


def search_form(spec: Any) -> dict[str, Any]:
    fields = "name experiment description kind metric direction sampler pruner report_every trials grid"
    return {
        **{f: getattr(spec, f) for f in fields.split()},
        "identity": spec.identity(),
        "space": {k: p.to_json() for k, p in spec.space.items()},
        "variant": spec.variant.name,
        "study": study_form(spec.study),
        "study_raw": spec.study_raw,
    }


def train_form(spec: Any) -> dict[str, Any]:
    fields = "name description method dataset data_root fold shot split settings train augment val"
    return {**{f: getattr(spec, f) for f in fields.split()}, "identity": spec.identity()}


def snapshot(pascal: Path, coco: Path) -> dict[str, Any]:
    """The resolved form of every shipped file (loaded with ``study_overrides``) and of the demo's."""
    from benchmark.jobs.demo import demo_search, demo_study
    from benchmark.specs.search import load_search, parse_search
    from benchmark.specs.study import load_study, parse_study
    from benchmark.specs.train import load_train

    out: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(ABLATIONS.glob("*.yaml")):
            raw = yaml.safe_load(path.read_text())
            out[f"study/{path.name}"] = study_form(load_study(path, study_overrides(raw, pascal, coco)))
        for path in sorted((ABLATIONS / "searches").glob("*.yaml")):
            raw = yaml.safe_load(path.read_text())
            study_raw = yaml.safe_load((path.parent / raw["study"]).read_text())
            over = study_overrides(study_raw, pascal, coco, prefix="study.")
            out[f"search/{path.name}"] = search_form(load_search(path, over))
        for path in sorted((ABLATIONS / "train").glob("*.yaml")):
            raw = yaml.safe_load(path.read_text())
            dataset = next(iter(raw["data"]))
            root = pascal if dataset == "pascal" else coco
            out[f"train/{path.name}"] = train_form(
                load_train(path, [f"data.{dataset}={root}", "model.random_init=true"])
            )
        study_raw = demo_study(pascal, 24)
        out["demo/study"] = study_form(parse_study(study_raw, source="demo-study.yaml"))
        out["demo/search"] = search_form(parse_search(demo_search(study_raw, 24), source="demo search"))
    return plain(out, {str(pascal): "<pascal>", str(coco): "<coco>", str(ROOT): "<repo>"})
