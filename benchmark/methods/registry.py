"""The method registry: a study file's ``method:`` name -> how to validate, key and build it.

Adding a method is one file plus one registration: write the model (it satisfies
:class:`~benchmark.methods.base.FewShotMethod`), then describe it with a :class:`MethodEntry` and
``register`` it in ``benchmark/methods/__init__.py``. The harness only ever talks to entries. A
method that ``fssbench train`` can fine-tune also declares the :class:`Trainable` capability.
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from benchmark.errors import FssBenchError
from benchmark.methods.base import FewShotMethod, TrainableMethod

TEMPLATE_FIELDS = ("dataset", "fold", "shot", "arch")
KSHOT_MODES = ("joint", "voting")
SCORING_DEFAULTS: dict[str, Any] = {"threshold": 0.5, "kshot": "joint"}
"""Settings every method has, applied by the harness when scoring: ``threshold`` is the foreground
probability cut of the predicted mask (``benchmark.evaluation.metrics.prediction_at_label_size``); ``kshot`` is
``joint`` (the method sees the K supports together) or ``voting`` (K one-shot predictions voted as
HSNet's ``predict_mask_nshot`` does, ``benchmark.evaluation.predict.voted_mask``)."""


class WeightPool:
    """Memoises loaded weights so variants that share them build them once.

    ``get(key, make, group, keep)`` keeps at most ``keep`` entries of one ``group`` (fine-tuned
    checkpoints differ per fold and shot, so only the latest few are held).
    """

    def __init__(self) -> None:
        self._items: OrderedDict[tuple, Any] = OrderedDict()

    def get(self, key: tuple, make: Callable[[], Any], group: str = "", keep: int | None = None) -> Any:
        full = (group, *key)
        if full in self._items:
            self._items.move_to_end(full)
            return self._items[full]
        if keep is not None:
            same = [k for k in self._items if k[0] == group]
            while len(same) >= keep:
                self._items.pop(same.pop(0))
        value = self._items[full] = make()
        return value

    def clear(self) -> None:
        self._items.clear()


@dataclass
class BuildContext:
    """What a builder gets besides the settings: the device and the shared weight pool."""

    device: torch.device
    pool: WeightPool = field(default_factory=WeightPool)


@dataclass(frozen=True)
class Trainable:
    """The capability of a method that ``fssbench train`` fine-tunes (``MethodEntry.trainable``).

    The entry's ``build`` then returns a :class:`~benchmark.methods.base.TrainableMethod`: its
    ``trainable_modules()`` are what trains (one optimizer group each; the resumable state holds
    their state dicts) and ``train_mode()`` enters training. The trainer names no method; it uses:

    ``save(model, path, method, settings, meta)``: write the trained modules as a fine-tuned
    checkpoint (what the method's ``finetuned_checkpoint`` setting reads), atomically, recording
    ``method`` and ``meta``; returns the file's SHA-256. ``settings``: the method's resolved settings.
    ``read_meta(path)``: the ``meta`` a checkpoint written by ``save`` holds.
    ``export(model, finetuned, out, settings)``: apply the fine-tuned checkpoint ``finetuned`` to the
    freshly built ``model`` and write it with its base weights to ``out`` in ``layout``; a setting
    that makes that impossible is an ``FssBenchError`` starting ``model.<setting>:``.
    ``layout``: the export's layout in a few words, for messages (``wrote OUT in {layout}``).
    ``refused``: settings a training file may not set, because training starts from the base
    weights (an already-trained checkpoint, a fine-tuned overlay).
    """

    save: Callable[[TrainableMethod, Path, str, dict[str, Any], Mapping[str, Any]], str]
    read_meta: Callable[[Path], dict[str, Any]]
    export: Callable[[TrainableMethod, Path, Path, dict[str, Any]], None]
    layout: str
    refused: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)  # compared and hashed by identity
class MethodEntry:
    """A registered method.

    ``defaults``: every setting the method accepts, with its default (``None``: no default).
    ``checkpoints``: the settings that are weight-file paths (templates over ``{dataset}``,
    ``{fold}``, ``{shot}``, ``{arch}`` allowed).
    ``overlays``: those of ``checkpoints`` applied on top of the base weights (a fine-tuned
    checkpoint): unlike the others, ``random_init`` keeps them.
    ``validate(settings)``: raise ``ValueError``/``FssBenchError`` naming the bad field.
    ``weight_sources(settings)``: role -> checkpoint path, or ``"random-init:..."``, for resolved
    settings; raise ``FssBenchError`` (naming the field) when the weights are not given.
    ``build(settings, ctx)``: the method, on ``ctx.device``.
    ``trainable``: how ``fssbench train`` fine-tunes it (:class:`Trainable`); ``None``: it cannot be
    trained.
    """

    name: str
    description: str
    defaults: Mapping[str, Any]
    build: Callable[[dict[str, Any], BuildContext], FewShotMethod]
    weight_sources: Callable[[dict[str, Any]], dict[str, str]]
    validate: Callable[[dict[str, Any]], None] = lambda settings: None
    checkpoints: tuple[str, ...] = ()
    overlays: tuple[str, ...] = ()
    trainable: Trainable | None = None

    @property
    def all_defaults(self) -> dict[str, Any]:
        """The method's own settings plus the scoring settings every method has (``threshold``)."""
        return {**self.defaults, **SCORING_DEFAULTS}

    def resolve(self, settings: Mapping[str, Any], where: str = "") -> dict[str, Any]:
        """Every setting of the method, defaults filled in; unknown ones name the method and the field."""
        prefix = f"{where}." if where else ""
        defaults = self.all_defaults
        unknown = sorted(set(settings) - set(defaults))
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(defaults), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FssBenchError(
                f"{prefix}{unknown[0]}: unknown switch for method {self.name!r}{hint}; known: {sorted(defaults)}"
            )
        resolved = {**defaults, **settings}
        for k, default in defaults.items():  # 10 and 10.0 are one setting (and one cell key)
            v = resolved[k]
            if isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool):
                resolved[k] = float(v)
        threshold = resolved["threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, float) or not 0.0 < threshold < 1.0:
            raise FssBenchError(
                f"{prefix}threshold: the foreground probability cut must be a number in (0, 1), got {threshold!r}"
            )
        if resolved["kshot"] not in KSHOT_MODES:
            raise FssBenchError(f"{prefix}kshot: {resolved['kshot']!r} is not one of {list(KSHOT_MODES)}")
        try:
            self.validate({k: v for k, v in resolved.items() if k not in SCORING_DEFAULTS})
        except (ValueError, FssBenchError) as e:
            raise FssBenchError(f"{where + ': ' if where else ''}method {self.name!r}: {e}") from None
        return resolved


_REGISTRY: dict[str, MethodEntry] = {}


def register(entry: MethodEntry) -> MethodEntry:
    if entry.name in _REGISTRY and _REGISTRY[entry.name] is not entry:
        raise ValueError(f"method {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def get_method(name: str) -> MethodEntry:
    if name not in _REGISTRY:
        raise FssBenchError(f"method {name!r} is not one of {method_names()}")
    return _REGISTRY[name]


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def trainable_method_names() -> list[str]:
    """The registered methods with the :class:`Trainable` capability, sorted."""
    return sorted(name for name, entry in _REGISTRY.items() if entry.trainable is not None)


def get_trainable(name: str) -> Trainable:
    """The training capability of method ``name``; an ``FssBenchError`` when it has none."""
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None or entry.trainable is None:
        raise FssBenchError(f"{name!r} cannot be trained; trainable: {trainable_method_names()}")
    return entry.trainable


def fill_templates(entry: MethodEntry, settings: Mapping[str, Any], **values: Any) -> dict[str, Any]:
    """Settings with the checkpoint templates filled in for one cell (dataset, fold, shot)."""
    shot = values.get("shot")
    values.setdefault("arch", "FSSAM" if shot == 1 else "FSSAM5s")  # the authors' folder names
    out = dict(settings)
    for key in entry.checkpoints:
        if out.get(key):
            try:
                out[key] = str(out[key]).format(**values)
            except (KeyError, IndexError, ValueError) as e:
                raise FssBenchError(
                    f"{key}: template {out[key]!r} uses an unknown field ({e}); allowed: "
                    + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
                ) from None
    return out


def build_method(
    name: str, settings: dict[str, Any], device: torch.device, pool: WeightPool | None = None
) -> FewShotMethod:
    """Build a registered method from resolved settings (checkpoint templates filled in)."""
    entry = get_method(name)
    return entry.build(settings, BuildContext(device, pool or WeightPool()))
