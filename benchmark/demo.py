"""``fssbench demo``: the whole pipeline on generated data, with no arguments and no downloads.

Today it runs what exists: generate a synthetic dataset in the raw VOC2012 + SBD format, prepare it
with the real preparation code, check it, write hashed episode manifests (fold 0, 1 and 5 shots),
score the model-free reference predictors on them with the real metrics (class-wise mIoU, FB-IoU,
bootstrap CIs) and write a Markdown report. Reruns reuse the generated data.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from baselines.trivial import all_foreground, mean_colour
from benchmark.data.check import check_prepared
from benchmark.data.episode_data import load_episode
from benchmark.data.prepare_pascal import prepare_pascal
from benchmark.data.prepared import PreparedDataset
from benchmark.episodes import build_manifest, load_manifest, manifest_episodes, save_manifest
from benchmark.errors import FssBenchError
from benchmark.io_utils import write_text_atomic
from benchmark.metrics import FSSEvaluator, bootstrap_ci, paired_bootstrap_diff, prediction_at_label_size

PREDICTORS = {"mean-colour": mean_colour, "all-foreground": all_foreground}
IMAGE_SIZE = 256
FOLD = 0
SHOTS = (1, 5)


def _step(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def run_demo(out: Path, episodes: int = 40, progress: bool = True) -> Path:
    """Run the demo in ``out`` and return the path of the report it wrote."""
    from benchmark.cli import synth_dataset, synth_raw_roots

    t_start = time.perf_counter()
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    raw, root = out / "raw" / "pascal", out / "data" / "pascal"
    if not (raw / "VOCdevkit").is_dir():
        _step(f"generating a synthetic PASCAL dataset in the raw VOC2012 + SBD format -> {raw}")
        synth_dataset("pascal", raw, seed=0, overwrite=True, progress=progress)
    else:
        _step(f"reusing generated raw data in {raw}")
    if not (root / "dataset.json").is_file():
        roots = synth_raw_roots("pascal", raw)
        _step(f"preparing it (SegmentationClassAug, lists, PASCAL-5i fold lists) -> {root}")
        prepare_pascal(roots["voc"], roots["sbd"], root, overwrite=True, progress=progress)
    else:
        _step(f"reusing prepared data in {root}")
    report = check_prepared(root, progress=progress)
    if not report.ok:
        raise FssBenchError(
            f"{root}: data check found {len(report.problems)} problem(s), first: {report.problems[0]}"
        )
    _step(f"data check OK ({report.checked_images} image/mask pairs)")
    ds = PreparedDataset(root)

    (out / "report").mkdir(parents=True, exist_ok=True)
    rows, details = [], []
    for shot in SHOTS:
        mpath = out / "manifests" / f"pascal-fold{FOLD}-{shot}shot-fssam-seed321-n{episodes}.json"
        manifest = build_manifest(root, fold=FOLD, shot=shot, protocol="fssam", episodes=episodes)
        save_manifest(manifest, mpath)
        manifest = load_manifest(mpath)
        _step(f"manifest {mpath.name}: sha256 {manifest['sha256'][:16]}...")
        classes = manifest["classes"]
        evaluators = {name: FSSEvaluator(classes) for name in PREDICTORS}
        for ep in tqdm(
            manifest_episodes(manifest), desc=f"{shot}-shot episodes", disable=not progress, leave=False
        ):
            data = load_episode(ds, manifest["images"], ep, IMAGE_SIZE)
            for name, fn in PREDICTORS.items():
                logits = fn(data.query[None], data.supports[None], data.support_masks[None])[0]
                pred = prediction_at_label_size(logits, tuple(data.query_target.shape))
                evaluators[name].process(ep.id, ep.cls, pred, data.query_target)
        tables = {name: ev.table() for name, ev in evaluators.items()}
        for name, ev in evaluators.items():
            s = ev.evaluate()
            ci = bootstrap_ci(tables[name], classes, metric="miou")
            write_text_atomic(
                out / "report" / f"episodes-{name}-{shot}shot.csv", tables[name].to_csv(index=False)
            )
            rows.append(
                {
                    "predictor": name,
                    "shot": shot,
                    "mIoU": 100 * s["miou"],
                    "mIoU 95% CI": f"[{100 * ci['low']:.1f}, {100 * ci['high']:.1f}]",
                    "FB-IoU": 100 * s["fb_iou"],
                    "fg-IoU": 100 * s["fg_iou"],
                    "episodes": s["n_episodes"],
                }
            )
        d = paired_bootstrap_diff(tables["mean-colour"], tables["all-foreground"], classes, metric="miou")
        details.append(
            f"- {shot}-shot, mean-colour minus all-foreground mIoU: {100 * d['diff']:+.1f} "
            f"(paired 95% CI [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
            f"{', excludes 0' if d['excludes_zero'] else ''}); manifest sha256 `{manifest['sha256']}`"
        )

    table = pd.DataFrame(rows)
    md = table.to_markdown(index=False, floatfmt=".1f")
    elapsed = time.perf_counter() - t_start
    report_path = out / "report" / "demo-report.md"
    write_text_atomic(
        report_path,
        "# fssbench demo report\n\n"
        "**Synthetic data and model-free reference predictors** (no SAM 2 / FSSAM weights are involved): "
        "these numbers check the pipeline, they are not results.\n\n"
        f"PASCAL-format synthetic data, fold {FOLD}, protocol fssam, {episodes} episodes per manifest, "
        f"inputs resized to {IMAGE_SIZE} px, metrics at the original label resolution.\n\n"
        f"{md}\n\n" + "\n".join(details) + f"\n\nRun time: {elapsed:.1f} s.\n",
    )
    print()
    print(md)
    print()
    print("\n".join(details))
    _step(f"report written to {report_path} ({elapsed:.1f} s in all)")
    _step(
        "real data: fssbench data prepare pascal --voc VOC2012 --sbd SBD/dataset --out data/pascal, then "
        "fssbench episodes --dataset pascal --data-root data/pascal --fold 0 --shot 1 --out m.json"
    )
    return report_path
