"""The published GF-SAM and Matcher rows of reports/references.yaml: the releases' per-fold log values,
with how they were scored (HSNet harness, labels resized to 1024 px resp. 518 px)."""

from __future__ import annotations

import pytest

from benchmark.errors import FssBenchError
from reports.references import DEFAULT_REFERENCES, load_references
from reports.scoring import Scoring

GFSAM = Scoring("hsnet", "resized", 1024)
MATCHER = Scoring("hsnet", "resized", 518)

# (method, dataset, shot, metric) -> (fold values, the release's 4-fold mean), typed from the logs'
# tables (../shared/docs/gfsam-method.md and matcher-method.md, section 4.1)
PUBLISHED = {
    ("GF-SAM", "pascal", 1, "miou"): ([71.12, 75.70, 69.17, 73.25], 72.31),
    ("GF-SAM", "pascal", 5, "miou"): ([81.49, 86.32, 79.69, 82.90], 82.60),
    ("GF-SAM", "coco", 1, "miou"): ([56.62, 61.44, 59.63, 57.12], 58.70),
    ("GF-SAM", "coco", 5, "miou"): ([67.09, 69.41, 65.97, 64.83], 66.83),
    ("GF-SAM", "pascal", 1, "fb_iou"): ([83.93, 84.73, 72.81, 83.93], 81.35),
    ("GF-SAM", "pascal", 5, "fb_iou"): ([90.42, 92.09, 84.31, 89.75], 89.14),
    ("GF-SAM", "coco", 1, "fb_iou"): ([74.34, 78.28, 79.09, 75.68], 76.85),
    ("GF-SAM", "coco", 5, "fb_iou"): ([79.34, 83.16, 83.02, 80.69], 81.55),
    ("Matcher", "coco", 1, "miou"): ([52.66, 53.52, 52.58, 52.13], 52.72),
    ("Matcher", "coco", 5, "miou"): ([60.09, 62.69, 60.90, 59.20], 60.72),
    ("Matcher", "coco", 1, "fb_iou"): ([72.02, 74.49, 75.54, 72.20], 73.56),
    ("Matcher", "coco", 5, "fb_iou"): ([74.85, 78.49, 78.63, 76.17], 77.04),
}


def test_the_shipped_field_rows_are_the_release_logs_with_their_scoring():
    refs = {(r.method, r.dataset, r.shot, r.metric): r for r in load_references(DEFAULT_REFERENCES)}
    for key, (folds, mean) in PUBLISHED.items():
        r = refs[key]
        assert r.value == mean and r.folds == tuple(folds)
        assert r.scoring == (GFSAM if key[0] == "GF-SAM" else MATCHER)
        assert r.variant == {"GF-SAM": "gfsam", "Matcher": "matcher"}[key[0]]
        assert "release" in r.source and "Fold k mIoU" in r.source
    assert not any(k[0] == "Matcher" and k[1] == "pascal" for k in refs)  # no PASCAL log released
    assert refs[("FSSAM", "pascal", 1, "miou")].scoring is None  # unchanged: compared as before


ROW = "- {method: X, variant: x, dataset: pascal, shot: 1, metric: miou, value: 50.0, source: s"


@pytest.mark.parametrize(
    "extra, message",
    [
        (", protocol: hsnet}", "protocol and eval .* go together"),
        (", eval: {resolution: resized, size: 518}}", "protocol and eval .* go together"),
        (", protocol: pfenet, eval: {resolution: original}}", "protocol 'pfenet' is not one of"),
        (", protocol: hsnet, eval: {resolution: resized, size: -3}}", "eval: evaluation size must be"),
        (
            ", protocol: hsnet, eval: {resolution: resized, size: 518}, folds: [50, 50, 50]}",
            "folds: expected 4",
        ),
        (
            ", protocol: hsnet, eval: {resolution: resized, size: 518}, folds: [50, 50, 50, 52]}",
            "value 50.0 is not the mean",
        ),
        (", protocol: hsnet, eval: {res: resized}}", "eval: expected"),
        (", scored: hsnet}", "expected the fields"),
    ],
)
def test_a_scoring_or_folds_that_do_not_hold_are_refused(tmp_path, extra, message):
    path = tmp_path / "r.yaml"
    path.write_text(ROW + extra + "\n")
    with pytest.raises(FssBenchError, match=f"entry 1: {message}"):
        load_references(path)


def test_fold_means_within_the_rounding_of_printed_means_are_accepted(tmp_path):
    # GF-SAM COCO 5-shot: the folds average to 66.825, printed 66.83
    path = tmp_path / "r.yaml"
    path.write_text(
        ROW
        + ", protocol: hsnet, eval: {resolution: resized, size: 1024}, folds: [67.09, 69.41, 65.97, 64.83]}\n"
    )
    with pytest.raises(FssBenchError, match="not the mean"):
        load_references(path)  # 50.0 is not their mean
    path.write_text(path.read_text().replace("value: 50.0", "value: 66.83"))
    (r,) = load_references(path)
    assert r.scoring == GFSAM and r.scoring.tag == "hsnet-1024"
