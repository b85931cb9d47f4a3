"""The raw datasets: PASCAL (VOC2012 trainval + SBD + SBD's train_noval list) and COCO 2014 (train
and val images, annotations), fetched, verified, and extracted into the layout ``fssbench data
prepare`` reads:

    RAW/VOCdevkit/VOC2012/...                     VOCtrainval_11-May-2012.tar
    RAW/benchmark_RELEASE/dataset/...             benchmark.tgz
    RAW/benchmark_RELEASE/dataset/train_noval.txt train_noval.txt
    RAW/train2014/, RAW/val2014/                  train2014.zip, val2014.zip
    RAW/annotations/instances_{train,val}2014.json annotations_trainval2014.zip

Archives stay in RAW (so nothing is fetched twice). Each one is extracted into a temporary folder in
RAW and its entries are moved into place only when the whole archive is out, merged file by file into
folders that exist (what else they hold is kept); the lock file records which archive (by sha256) was
extracted, so a second run extracts nothing either.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

from filelock import FileLock

from benchmark.errors import FssBenchError
from benchmark.fetch.download import Fetched, fetch_file
from benchmark.fetch.sources import DATA, PREPARE_ARGS, Archive
from benchmark.lockfile import LockFile


def extract_archive(archive: Path, into: Path, progress: bool = True) -> list[str]:
    """Extract a tar (any compression) or zip into ``into`` through a temporary sibling folder;
    returns the top-level names placed. Members that would land outside (absolute paths, ``..``,
    links out) are refused (tarfile's ``data`` filter; zip names are checked)."""
    from tqdm.auto import tqdm

    into = Path(into)
    for stale in into.glob(f".extract-{archive.name}.*"):  # left by a killed extraction
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".extract-{archive.name}.", dir=into))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                members = z.infolist()
                for m in members:
                    p = Path(m.filename)
                    if p.is_absolute() or ".." in p.parts:
                        raise FssBenchError(f"{archive}: member {m.filename!r} would land outside {into}")
                for m in tqdm(members, desc=f"extract {archive.name}", unit="file", disable=not progress):
                    z.extract(m, tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                members = t.getmembers()
                for m in tqdm(members, desc=f"extract {archive.name}", unit="file", disable=not progress):
                    try:
                        t.extract(m, tmp, filter="data")
                    except tarfile.FilterError as e:
                        raise FssBenchError(f"{archive}: unsafe member refused ({e})") from None
        else:
            raise FssBenchError(f"{archive}: neither a tar nor a zip archive; delete it and fetch again")
        placed = sorted(p.name for p in tmp.iterdir())
        for name in placed:
            _merge(tmp / name, into / name)
        return placed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _merge(src: Path, dest: Path) -> None:
    """Move ``src`` to ``dest``; where ``dest`` is a folder already, merge into it file by file (the
    archive's files replace files of the same path; anything else there is kept, e.g. another
    year's VOC or COCO 2017 annotations beside 2014's)."""
    if not dest.exists() and not dest.is_symlink():
        src.rename(dest)
        return
    if src.is_dir() and dest.is_dir() and not dest.is_symlink():
        for child in sorted(src.iterdir()):
            _merge(child, dest / child.name)
        return
    if dest.is_dir() and not dest.is_symlink():
        raise FssBenchError(f"{dest}: a folder where the archive has a file; move it away and fetch again")
    os.replace(src, dest)


def fetch_data(
    dataset: str,
    out: Path,
    mirror: str | None = None,
    progress: bool = True,
    archives: tuple[Archive, ...] | None = None,
    retries: int = 5,
    backoff: float = 1.0,
) -> list[tuple[Fetched, str]]:
    """Fetch ``dataset``'s archives into ``out`` and extract or place them; returns, per archive,
    what :func:`fetch_file` did and "extracted" / "placed" / "already extracted". ``archives``
    replaces the table's (tests: archives with their own checksums)."""
    if dataset not in DATA:
        raise FssBenchError(f"unknown dataset {dataset!r}: choose from {', '.join(DATA)}")
    out = Path(out)
    lock = LockFile(out)
    done = []
    for a in DATA[dataset] if archives is None else archives:
        got = fetch_file(a.source, out, mirror, progress, retries=retries, backoff=backoff)
        if a.place_at:
            dest = out / a.place_at
            if dest.is_file() and dest.read_bytes() == got.path.read_bytes():
                done.append((got, "already placed"))
                continue
            if not dest.parent.is_dir():
                raise FssBenchError(
                    f"{dest.parent}: missing; {a.source.filename} goes inside an archive fetched before it"
                )
            tmp = dest.with_name(f".{dest.name}.tmp")
            shutil.copyfile(got.path, tmp)
            os.replace(tmp, dest)
            done.append((got, "placed"))
            continue
        with FileLock(str(out / f"{a.source.filename}.extract.lock")):
            entry = lock.get(a.source.filename) or {}
            if entry.get("extracted") == got.sha256 and (out / a.expect).exists():
                done.append((got, "already extracted"))
                continue
            extract_archive(got.path, out, progress)
            if not (out / a.expect).exists():
                raise FssBenchError(
                    f"{got.path}: extracted, but {out / a.expect} is not there; is it the right archive?"
                )
            lock.record(a.source.filename, extracted=got.sha256)
        done.append((got, "extracted"))
    return done


def prepare_command(dataset: str, raw: Path, out: Path) -> str:
    """The ``fssbench data prepare`` command for a raw root filled by :func:`fetch_data`."""
    return f"fssbench data prepare {dataset} {PREPARE_ARGS[dataset].format(raw=raw)} --out {out}"
