"""A study's variants: a named method with its resolved settings, and the settings of each cell.

A variant's ``method`` is a registered method (``benchmark.methods``); each method validates its own
switches, and its resolved settings (every default filled in) are what a cell records. The study's
``model`` block holds defaults for every variant: a variant takes those its method accepts, plus
``device``. Weights are checked for every cell before any work.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.device import check_device
from benchmark.errors import FssBenchError
from benchmark.methods import MethodEntry, fill_templates, get_method
from benchmark.specs.fields import MLFLOW_URI_PREFIX, absolute_checkpoints, check_weights

HARNESS_FIELDS = ("device",)  # model-block settings that belong to the harness, not to a method


@dataclass(frozen=True)
class Variant:
    """A named method with its resolved settings (every setting of the method, defaults included;
    checkpoint templates not yet filled in) and the device it runs on."""

    name: str
    method: str
    settings: dict[str, Any]
    device: str = "auto"
    explicit: frozenset[str] = frozenset()  # the settings the study sets (the rest are defaults)

    def cell_settings(
        self,
        dataset: str,
        fold: int,
        shot: int,
        settings: dict[str, Any] | None = None,
        explicit: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        """The settings of one cell: checkpoint templates filled in for (dataset, fold, shot); an
        FSSAM cell that loads the authors' FSSAM5s checkpoint (K > 1) runs ``kshot_mode: released``,
        the K-shot path it was trained with, unless the study sets ``kshot_mode``. ``settings`` replace
        the variant's (a search trial's), ``explicit`` names settings set beyond the study's."""
        base = self.settings if settings is None else settings
        out = fill_templates(get_method(self.method), base, dataset=dataset, fold=fold, shot=shot)
        if "kshot_mode" not in self.explicit | explicit and shot > 1:
            if loads_fssam5s(self.method, out, shot):
                out["kshot_mode"] = "released"
            trained = (
                trained_kshot_mode(out) if "kshot_mode" in get_method(self.method).all_defaults else None
            )
            if trained is not None:  # a checkpoint of `fssbench train` runs the path it was trained with
                out["kshot_mode"] = trained
        return out


def trained_kshot_mode(settings: dict[str, Any]) -> str | None:
    """The K-shot path a fine-tuned checkpoint was trained with, from the record ``fssbench train``
    writes beside it (``best.pth.json``: ``kshot_mode``); None without a local record."""
    path = settings.get("finetuned_checkpoint")
    record = Path(f"{path}.json") if path and not str(path).startswith(MLFLOW_URI_PREFIX) else None
    if record is None or not record.is_file():
        return None
    try:
        mode = json.loads(record.read_text()).get("kshot_mode")
    except (ValueError, OSError, AttributeError):
        return None
    return mode if mode in ("intended", "released") else None


def loads_fssam5s(method: str, settings: dict[str, Any], shot: int) -> bool:
    """Whether a cell (settings with templates filled in) loads one of the authors' 5-shot
    checkpoints, trained with the released K-shot path (spec bug B2): a K > 1 FSSAM cell whose
    checkpoint path names the authors' ``FSSAM5s`` folder (what ``{arch}`` fills in at K > 1)."""
    checkpoint = settings.get("fssam_checkpoint")
    return method == "fssam" and shot > 1 and bool(checkpoint) and "FSSAM5s" in str(checkpoint)


@dataclass(frozen=True)
class Cells:
    """The cells a variant runs in: every (dataset, fold, shot) of the study."""

    datasets: tuple[str, ...]
    folds: tuple[int, ...]
    shots: tuple[int, ...]

    def __iter__(self):
        return iter([(ds, fold, shot) for ds in self.datasets for fold in self.folds for shot in self.shots])


def parse_variant(
    vname: str, switches: dict[str, Any], model: dict[str, Any], cells: Cells, source: str, base_dir: Path
) -> Variant:
    """One variant: the model defaults the method accepts, the variant's switches over them, each
    validated by the method itself; weights checked for every cell before any work."""
    where = f"{source}: variants.{vname}"
    entry = get_method(switches.get("method", "fssam"))
    own = {k: v for k, v in switches.items() if k not in ("method", *HARNESS_FIELDS)}
    inherited = {k: v for k, v in model.items() if k in entry.all_defaults}
    device = str(switches.get("device", model.get("device", "auto")))
    check_device(device, f"{where}.device" if "device" in switches else f"{source}: model.device")
    settings = entry.resolve({**inherited, **own}, where=where)
    if settings.get("random_init"):  # random weights replace the base checkpoints (tests, demos, timing)
        trained = settings.get("fssam_checkpoint")
        if trained:  # the authors' trained model would be silently replaced, its cells found "done"
            raise FssBenchError(
                f"{where}: random_init is true but fssam_checkpoint is {trained!r}: random weights would "
                "replace the trained checkpoint; drop one (e.g. add model.fssam_checkpoint=null)"
            )
        settings.update({key: None for key in entry.checkpoints if key not in entry.overlays})
    absolute_checkpoints(settings, entry.checkpoints, base_dir)
    variant = Variant(vname, entry.name, settings, device, frozenset(inherited) | frozenset(own))
    for ds, fold, shot in cells:
        try:
            sources = entry.weight_sources(variant.cell_settings(ds, fold, shot))
        except FssBenchError as e:
            raise FssBenchError(f"{where}.{e}") from None
        check_weights(sources, lambda role: f"{where}.{_checkpoint_field(entry, role)}")
    _warn_intended_with_fssam5s(variant, cells, where)
    return variant


def _warn_intended_with_fssam5s(variant: Variant, cells: Cells, where: str) -> None:
    """Warn when a study asks for ``kshot_mode: intended`` on the authors' FSSAM5s checkpoints."""
    if not (
        variant.method == "fssam"
        and variant.settings.get("kshot_mode") == "intended"
        and "kshot_mode" in variant.explicit
    ):
        return
    k = sorted({c[2] for c in cells if loads_fssam5s(variant.method, variant.cell_settings(*c), c[2])})
    if k:
        warnings.warn(
            f"{where}: kshot_mode intended with the authors' FSSAM5s checkpoints ({k}-shot cells), which "
            "were trained with the released K-shot path; drop kshot_mode to run them as trained",
            UserWarning,
            stacklevel=4,
        )


def _checkpoint_field(entry: MethodEntry, role: str) -> str:
    """The setting that names the weights of ``role`` (``sam2`` -> ``sam2_checkpoint``)."""
    for key in entry.checkpoints:
        if key.startswith(role):
            return key
    return role
