"""Re-run chosen episodes of a tracked cell with intermediates, for qualitative figures (Fig. 5).

The model is rebuilt from the run's recorded settings (config.json): random-init weights are
reproducible from their seed, real ones are read from the recorded checkpoint paths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.data.classes import class_names
from benchmark.data.prepared import PreparedDataset
from benchmark.device import resolve_device
from benchmark.episodes import get_protocol
from benchmark.episodes.manifest import Manifest, load_manifest
from benchmark.episodes.manifests import ManifestRequest, build_manifest
from benchmark.errors import FssBenchError
from benchmark.evaluation.feature_cache import FeatureCache
from benchmark.evaluation.features import Featurizer
from benchmark.evaluation.loader import ImageStore, load_episode, method_image_resize
from benchmark.evaluation.metrics import episode_iou
from benchmark.evaluation.predict import one_shot, predict_episode, predict_scored, scored_mask
from benchmark.methods import WeightPool, build_method, get_method
from reports.collect import ExperimentData
from reports.figures import EpisodePanels


def select_episodes(table, how: str | list[int]) -> list[tuple[int, str]]:
    """(episode id, label) pairs: ``"best-median-worst"`` by per-episode FG IoU, or given ids."""
    if isinstance(how, list):
        missing = sorted(set(how) - set(table["episode"]))
        if missing:
            raise FssBenchError(
                f"episode id(s) {missing} are not in this cell (0..{int(table['episode'].max())})"
            )
        return [(int(e), f"episode {e}") for e in how]
    order = np.argsort(episode_iou(table), kind="stable")
    ids = table["episode"].to_numpy()
    return [
        (int(ids[order[-1]]), "best"),
        (int(ids[order[len(order) // 2]]), "median"),
        (int(ids[order[0]]), "worst"),
    ]


def _manifest_for(data: ExperimentData, run_id: str, params: dict) -> Manifest:
    cfg = data.configs.get(run_id, {})
    path = Path(cfg.get("manifest", ""))
    if path.is_file():
        m = load_manifest(path)
        if m.sha256 == cfg.get("manifest_sha256"):
            return m
    request = ManifestRequest(
        Path(params["data_root"]),
        int(params["fold"]),
        int(params["shot"]),
        seed=int(params["seed"]),
        episodes=int(params["episodes"]),
        coco_split=params.get("split") or "interleaved",
        dataset=params["dataset"],
    )
    m = build_manifest(get_protocol(params["protocol"]), request)  # the protocol's default options
    if m.sha256 != cfg.get("manifest_sha256"):
        raise FssBenchError(
            f"run {run_id}: cannot rebuild its manifest (data changed?); qualitative figure skipped"
        )
    return m


def episode_panels(
    data: ExperimentData,
    tracker,
    run_id: str,
    how: str | list[int] = "best-median-worst",
    pool: WeightPool | None = None,
) -> list[EpisodePanels]:
    """Panels (images, priors, IMR steps, prediction) of chosen episodes of one cell run."""
    run = tracker.client.get_run(run_id)
    params = run.data.params
    cfg = data.configs.get(run_id, {})
    if not cfg.get("settings"):
        raise FssBenchError(f"run {run_id} has no config.json artifact; cannot rebuild its model")
    entry = get_method(cfg["method"])
    settings = {k: v for k, v in cfg["settings"].items() if k in entry.all_defaults}
    root = Path(params["data_root"])
    if not (root / "dataset.json").is_file():
        raise FssBenchError(
            f"run {run_id}: data root {root} is not available here; qualitative figure skipped"
        )
    manifest = _manifest_for(data, run_id, params)
    device = resolve_device("cuda" if str(cfg.get("device", "cpu")).startswith("cuda") else "cpu")
    settings = entry.resolve(settings)
    method = build_method(entry.name, settings, device, pool)
    store = ImageStore(PreparedDataset(root))
    feat = Featurizer(method, FeatureCache(None))
    episodes = {e.id: e for e in manifest.episodes}
    variant = run.data.tags["fss.variant"]
    table = data.episodes[run_id].set_index("episode")
    kshot = str(settings.get("kshot", "joint"))
    voting = kshot == "voting" and int(params["shot"]) > 1
    out = []
    for ep_id, label in select_episodes(data.episodes[run_id], how):
        ep = episodes[ep_id]
        # pictures at the label's size
        inp = load_episode(
            store, manifest.images, ep, method.image_size, image_resize=method_image_resize(method)
        )
        # the prediction as the cell scored it (kshot); priors and IMR steps of the pass that made it
        # (with voting: the pass on the support shown); the IoU as scored (the table's)
        if voting:
            logits = predict_scored(method, feat, [inp], kshot)
            _, inter = predict_episode(method, feat, one_shot(inp, 0), return_intermediates=True)
        else:
            logits, inter = predict_episode(method, feat, inp, return_intermediates=True)
        pred = scored_mask(logits[0:1], inp.scored.shape, settings["threshold"]).numpy()
        tgt = inp.query_target
        inter_, union = int(table.loc[ep_id, "I_fg"]), int(table.loc[ep_id, "U_fg"])

        def arr(x):
            return None if x is None else x[0, 0].float().cpu().numpy()

        out.append(
            EpisodePanels(
                title=f"{variant} {params['dataset']} fold{params['fold']} {params['shot']}-shot "
                f"episode {ep.id} ({label}): class {ep.cls} {class_names(params['dataset'])[ep.cls - 1]}, "
                f"support 1 of {len(ep.supports)} shown" + (", prediction by voting" if voting else ""),
                iou=inter_ / union if union else 0.0,
                support_image=inp.supports[0].original(),
                support_mask=inp.support_labels[0],
                query_image=inp.query.original(),
                gt=tgt,
                pred=pred.astype(bool),
                prior_fg=arr(inter.get("prior_fg")),
                prior_disc=arr(inter.get("prior_disc")),
                imr_disc_priors=[p[0, 0].float().cpu().numpy() for p in inter.get("imr_disc_priors", [])[1:]],
            )
        )
    return out
