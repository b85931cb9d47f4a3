"""The harness's own cost per episode-variant: cells of model-free methods, timed one by one.

    python scripts/harness_cost.py DATA_ROOT MANIFEST.json [MANIFEST.json ...] \
        [--methods all_foreground,mean_colour] [--image-size 512] [--cells 2] [--journal DIR]

Runs each method on each manifest ``--cells`` times in one process (``evaluate_cell``, CPU, no
feature cache, no artifacts) and prints, per cell, milliseconds per episode: the wall time of the
cell / episodes, the process's CPU time / episodes, and the cell's own split (``load_wait``,
``episode_path``: the method's forward, ``encode``, ``feature_io``) with the harness = wall - episode
path - encode. The first cell of a manifest decodes its labels; the later ones find them cached.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmark.evaluation.cell import CellSpec, evaluate_cell
from benchmark.evaluation.feature_cache import FeatureCache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_root", type=Path)
    parser.add_argument("manifests", type=Path, nargs="+")
    parser.add_argument("--methods", default="all_foreground,mean_colour")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--cells", type=int, default=2, help="cells per (method, manifest), in a row")
    parser.add_argument("--journal", type=Path, default=None, help="write episode journals in this folder")
    args = parser.parse_args()
    print("method manifest cell: wall cpu | load_wait episode_path encode feature_io | harness  (ms/episode)")
    for method in args.methods.split(","):
        for manifest in args.manifests:
            spec = CellSpec(method, {"image_size": args.image_size}, manifest, args.data_root, device="cpu")
            for i in range(args.cells):
                journal = None
                if args.journal is not None:
                    journal = args.journal / f"{method}-{manifest.stem}-{i}.jsonl"
                    journal.unlink(missing_ok=True)
                t0, c0 = time.perf_counter(), time.process_time()
                result = evaluate_cell(
                    spec, FeatureCache(None), journal_path=journal, qualitative=0, weights={}
                )
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                n = max(result.episodes_run, 1)
                t = {k: 1000 * v / n for k, v in result.timings.items()}
                harness = 1000 * wall / n - t["episode_path"] - t["encode"]
                print(
                    f"{method} {manifest.name} {i}: {1000 * wall / n:.2f} {1000 * cpu / n:.2f} | "
                    f"{t['load_wait']:.2f} {t['episode_path']:.2f} {t['encode']:.2f} {t['feature_io']:.2f} | "
                    f"{harness:.2f}  (mIoU {result.summary['miou']:.6f})",
                    flush=True,
                )


if __name__ == "__main__":
    main()
