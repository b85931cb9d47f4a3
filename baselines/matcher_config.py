"""Matcher's settings (matcher-method.md §2.7): the release's hyperparameters under their
``main_oss.py`` flag names, defaulting to the authors' COCO-20i scripts (``scripts/coco.sh``,
``scripts/coco_5shot.sh``), plus the backbones, the frame and the random-stream choice."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

SAM_ARCHS = ("vit_b", "vit_l", "vit_h", "vit_test", "sam2-t", "sam2-s", "sam2-b+", "sam2-l")
DINOV2_ARCHS = ("vits14", "vitb14", "vitl14", "vitg14")
RNG_MODES = ("episode", "release")
IMAGE_RESIZES = ("bilinear", "pil-bilinear")
DINOV2_RESIZES = ("bilinear", "bilinear-antialias", "none")
PATCH = 14
MERGE_ONE_SHOT, MERGE_K_SHOT = 9, 5  # num_merging_mask of the COCO scripts (1-shot, 5-shot)


@dataclass(frozen=True)
class MatcherConfig:
    """Everything a Matcher prediction depends on besides the weights and the images.

    Backbones and frame: ``sam`` (SAM 1 ``vit_b|l|h``, ``vit_test``, SAM 2 ``sam2-t|s|b+|l``),
    ``sam_checkpoint``, ``sam2_version``; ``dinov2``, ``dinov2_checkpoint``, ``dinov2_input_size``
    (518: 37x37 patches), ``dinov2_resize`` (the harness image to DINOv2's input; a no-op at 518);
    ``image_size`` S (518), ``image_resize`` (the loader's resize: the release's PIL bilinear);
    ``random_init``, ``seed``.

    ``rng``: where the point subsets' random draws come from (§2.3, §5.2). ``"episode"`` (the
    suite's default): a ``random.Random`` per episode seeded from (seed, episode id), independent of
    batching, resume and order. ``"release"``: one ``random.Random(seed)`` per built model (one per
    cell), consumed in the order episodes are predicted, as the release's process-wide stream on a
    fresh full fold; a resumed cell restarts the stream at its first unscored episode.

    The rest are the release's flags (§2.7) with the COCO scripts' values; ``num_merging_mask``
    None means the scripts' 9 at 1 shot and 5 at K > 1.
    """

    sam: str = "vit_h"
    sam_checkpoint: str | None = None
    sam2_version: str = "2.1"
    dinov2: str = "vitl14"
    dinov2_checkpoint: str | None = None
    dinov2_input_size: int = 518
    dinov2_resize: str = "bilinear"
    image_size: int = 518
    image_resize: str = "pil-bilinear"
    random_init: bool = False
    seed: int = 0
    rng: str = "episode"
    # the modified automatic mask generator (§1.5, §2.4)
    points_per_side: int = 64
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    iou_filter: float = 0.85
    sel_stability_score_thresh: float = 0.90
    box_nms_thresh: float = 0.65
    output_layer: int = 3
    dense_multimask_output: int = 0
    use_dense_mask: bool = True
    multimask_output: bool = True
    use_box: bool = False
    # the robust prompt sampler (§2.3)
    sample_range_min: int = 1
    sample_range_max: int = 6
    max_sample_iterations: int = 64
    # instance scores, filters and merging (§2.5, §2.6)
    alpha: float = 1.0
    beta: float = 0.0
    exp: float = 0.0
    emd_filter: float = 0.0
    coverage_filter: float = 0.0
    purity_filter: float = 0.02
    use_score_filter: bool = True
    deep_score_filter: float = 0.33
    deep_score_norm_filter: float = 0.1
    topk_scores_threshold: float = 0.0
    num_merging_mask: int | None = None
    # the release's quirks, reproduced by default (§5.3, §5.4), each with its corrected behaviour
    score_norm: str = "max"
    dense_layer_flag: str = "selected"

    def __post_init__(self) -> None:
        self._check_types()
        choices = {
            "sam": SAM_ARCHS,
            "dinov2": DINOV2_ARCHS,
            "rng": RNG_MODES,
            "score_norm": ("max", "range"),
            "dense_layer_flag": ("selected", "own"),
            "image_resize": IMAGE_RESIZES,
            "dinov2_resize": DINOV2_RESIZES,
            "sam2_version": ("2.0", "2.1"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {list(allowed)}")
        if self.dinov2_input_size % PATCH:
            raise ValueError(f"dinov2_input_size={self.dinov2_input_size} must be a multiple of {PATCH}")
        if self.image_size % self.grid:
            raise ValueError(
                f"image_size={self.image_size} must be a multiple of the DINOv2 grid {self.grid} "
                f"(dinov2_input_size / {PATCH}): a patch is a block of whole pixels"
            )
        if not 1 <= self.sample_range_min <= self.sample_range_max:
            raise ValueError("sample_range_min..sample_range_max must be 1 <= min <= max")
        for name in ("points_per_side", "points_per_batch", "max_sample_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.num_merging_mask is not None and self.num_merging_mask < 1:
            raise ValueError(f"num_merging_mask={self.num_merging_mask} must be >= 1 (or null: 9/5)")

    def _check_types(self) -> None:
        """Whole numbers where the release takes them, booleans for its switches, numbers for thresholds."""
        for f in fields(self):
            value, default = getattr(self, f.name), f.default
            if isinstance(default, bool) and not isinstance(value, bool):
                raise ValueError(f"{f.name}={value!r} must be true or false")
            whole = (
                isinstance(default, int) and not isinstance(default, bool)
            ) or f.name == "num_merging_mask"
            if whole and value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{f.name}={value!r} must be a whole number")
            if isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"{f.name}={value!r} must be a number")

    @property
    def grid(self) -> int:
        """The DINOv2 patch grid side G (37 at 518)."""
        return self.dinov2_input_size // PATCH

    def merging_count(self, shots: int) -> int:
        """How many masks the merge keeps at most: ``num_merging_mask``, else 9 (1 shot) or 5."""
        if self.num_merging_mask is not None:
            return self.num_merging_mask
        return MERGE_ONE_SHOT if shots == 1 else MERGE_K_SHOT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MatcherConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown Matcher settings: {unknown}")
        return cls(**d)
