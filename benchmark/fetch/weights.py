"""The pretrained weights: fetched from Meta's URLs and loaded strictly into the architecture each
file claims before it is put in place; the authors' trained FSSAM checkpoints registered by hand.

The authors' FSSAM checkpoints are not on a plain URL (the release links a cloud drive), so the user
downloads them in a browser and ``fssbench fetch register FILE --as fssam/pascal/split0/1shot``
verifies one (a strict load of its ``sam2.*`` and ``dino.*`` keys) and files it where the study
templates look: ``exp/{dataset}/{FSSAM|FSSAM5s}/split{fold}/{small|base|large}/snapshot/best_{shot}shot.pth``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmark.errors import USER_ERRORS, FssBenchError
from benchmark.fetch.download import Fetched, fetch_file
from benchmark.fetch.sources import WEIGHTS, Weights
from benchmark.io_utils import respect_umask
from benchmark.lockfile import LockFile, sha256_of

VERIFY_IMAGE_SIZE = 512
"""SAM 2 is built at this size for the key check (sizes change no parameter shape)."""


def describe(w: Weights) -> str:
    """What a file is checked against, e.g. "SAM 2 2.0 size s", "SAM vit_h" or "DINOv2 vitb14"."""
    if w.kind == "sam2":
        return f"SAM 2 {w.version} size {w.size}"
    return f"SAM {w.arch}" if w.kind == "sam1" else f"DINOv2 {w.arch}"


def verify_weights(w: Weights, path: Path) -> None:
    """Load ``path`` strictly into the architecture ``w`` claims; an FssBenchError names the file,
    the claim and the first mismatching keys."""
    from fssam.dinov2 import build_dinov2
    from fssam.sam2_adapter import build_sam2_model

    try:
        if w.kind == "sam2":
            build_sam2_model(w.version, w.size, VERIFY_IMAGE_SIZE, checkpoint=path)
        elif w.kind == "sam1":
            check_sam1_state_dict(w.arch, load_state_dict_file(path))
        else:
            build_dinov2(w.arch, checkpoint=path)
    except USER_ERRORS as e:
        raise FssBenchError(
            f"{w.source.filename} (from {w.source.url_from(None)}) is not {describe(w)}: {e}"
        ) from None


def load_state_dict_file(path: Path) -> dict:
    """A ``.pth`` holding a plain state dict (Meta's SAM 1 files), read with ``weights_only``."""
    import torch

    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle, zip and runtime errors for a file that is not one
        raise FssBenchError(f"not a PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(sd, dict):
        raise FssBenchError(f"expected a state dict (a mapping of tensors), got {type(sd).__name__}")
    return sd


def check_sam1_state_dict(arch: str, state_dict: dict, shown: int = 5) -> None:
    """Load ``state_dict`` strictly into the official ``segment_anything.sam_model_registry[arch]()``
    (built on torch's meta device: keys and shapes are checked, no memory is filled), as the
    official builder loads Meta's file. An FssBenchError names the missing and unexpected keys
    (the first ``shown`` of each) or the first shape mismatches."""
    import torch
    from segment_anything import sam_model_registry

    with torch.device("meta"):
        model = sam_model_registry[arch]()
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        parts = [
            f"{len(keys)} {what} keys (e.g. {', '.join(keys[:shown])})"
            for what, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        ]
        raise FssBenchError(f"strict load into SAM {arch} failed: {'; '.join(parts)}")
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln][:shown]
        raise FssBenchError(f"strict load into SAM {arch} failed: {' '.join(lines) or e}") from None


def fetch_weights(
    names: list[str],
    out: Path,
    mirror: str | None = None,
    progress: bool = True,
    retries: int = 5,
    backoff: float = 1.0,
) -> list[Fetched]:
    """Fetch each named checkpoint into ``out`` (see :func:`benchmark.fetch.download.fetch_file`)."""
    from benchmark.fetch.sources import weights_named

    done = []
    for w in weights_named(names):
        done.append(
            fetch_file(
                w.source,
                out,
                mirror,
                progress,
                check=lambda p, w=w: verify_weights(w, p),
                checked=f"strict load into {describe(w)}",
                retries=retries,
                backoff=backoff,
            )
        )
    return done


@dataclass(frozen=True)
class WeightsRow:
    """One line of ``fssbench fetch weights --list``."""

    name: str
    file: str
    approx_mb: float
    on_disk: str


def list_weights(out: Path) -> list[WeightsRow]:
    """Every known checkpoint with its approximate size and what ``out`` holds of it: "locked"
    (on disk, size as recorded), "size differs from lock", "not in lock" or "-". Hashes are not
    recomputed here (``fssbench fetch weights NAME`` does that)."""
    entries = LockFile(out).entries()
    rows = []
    for w in WEIGHTS.values():
        path = Path(out) / w.source.filename
        entry = entries.get(w.source.filename)
        if not path.exists():
            state = "-"
        elif entry is None:
            state = "on disk, not in lock"
        elif path.stat().st_size != entry.get("size"):
            state = "on disk, SIZE DIFFERS FROM LOCK"
        else:
            state = "locked"
        rows.append(WeightsRow(w.name, w.source.filename, w.source.approx_mb or 0.0, state))
    return rows


_REGISTER_NAME = re.compile(r"fssam/(pascal|coco)/split([0-3])/([15])shot")
_SAM2_TYPE = {"t": "tiny", "s": "small", "b+": "base", "l": "large"}  # the authors' {sam2_type} folders


def register_path(name: str, root: Path, sam2_config: str) -> Path:
    """Where the study templates look for an authors' checkpoint ``fssam/{dataset}/split{k}/{n}shot``."""
    from fssam.sam2_adapter import parse_sam2_config

    m = _REGISTER_NAME.fullmatch(name)
    if not m:
        raise FssBenchError(
            f"--as {name!r}: expected fssam/{{pascal|coco}}/split{{0-3}}/{{1|5}}shot, e.g. fssam/pascal/split0/1shot"
        )
    dataset, fold, shot = m.group(1), m.group(2), m.group(3)
    _, size = parse_sam2_config(sam2_config)
    arch = "FSSAM" if shot == "1" else "FSSAM5s"
    return (
        Path(root) / dataset / arch / f"split{fold}" / _SAM2_TYPE[size] / "snapshot" / f"best_{shot}shot.pth"
    )


def register_checkpoint(
    file: Path,
    name: str,
    root: Path = Path("exp"),
    sam2_config: str = "sam2_hiera_s",
    dinov2: str = "vitb14",
    force: bool = False,
) -> tuple[Path, str, str]:
    """Verify an authors' FSSAM checkpoint (strict load of ``sam2.*`` as ``sam2_config`` and ``dino.*``
    as DINOv2 ``dinov2``) and copy it to :func:`register_path`, atomically, recording its sha256 in
    ``root``'s lock file. Returns (path, sha256, "registered" | "already registered")."""
    from filelock import FileLock

    file = Path(file)
    target = register_path(name, root, sam2_config)
    Path(root).mkdir(parents=True, exist_ok=True)
    with FileLock(str(Path(root) / ".fssbench-register.lock")):  # one register at a time per root
        return _register(file, name, root, target, sam2_config, dinov2, force)


def _register(
    file: Path, name: str, root: Path, target: Path, sam2_config: str, dinov2: str, force: bool
) -> tuple[Path, str, str]:
    from fssam.checkpoint import load_authors_checkpoint
    from fssam.model import FSSAM

    if not file.is_file():
        raise FssBenchError(f"{file}: file not found (the checkpoint downloaded from the FSSAM release)")
    sha = sha256_of(file)
    lock, rel = LockFile(root), target.relative_to(root).as_posix()
    in_place = target.exists() and sha256_of(target) == sha
    if in_place and (lock.get(rel) or {}).get("sha256") == sha:
        return target, sha, "already registered"
    if target.exists() and not in_place and not force:
        raise FssBenchError(
            f"{target} already holds a different checkpoint (sha256 {sha256_of(target)}); pass --force to replace it"
        )
    try:
        load_authors_checkpoint(FSSAM, file, sam2_config, VERIFY_IMAGE_SIZE, dinov2)
    except USER_ERRORS as e:
        raise FssBenchError(
            f"{file} is not an FSSAM checkpoint for {sam2_config} + DINOv2 {dinov2}, nothing was filed: {e}"
        ) from None
    if in_place:  # unzipped there by hand: verified now, recorded below
        lock.record(
            rel, sha256=sha, size=target.stat().st_size, url="in place", checked=_checked(sam2_config, dinov2)
        )
        return target, sha, "registered"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(file, tmp)
        if sha256_of(Path(tmp)) != sha:
            raise FssBenchError(f"{file} changed while it was being copied; run the command again")
        respect_umask(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    lock.record(
        rel,
        sha256=sha,
        size=target.stat().st_size,
        url=f"registered from {file.resolve()}",
        checked=_checked(sam2_config, dinov2),
    )
    return target, sha, "registered"


def _checked(sam2_config: str, dinov2: str) -> str:
    return f"strict load into FSSAM ({sam2_config} + DINOv2 {dinov2})"
