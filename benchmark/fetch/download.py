"""Download one file: pooch for the hash check and the atomic placement, a resuming downloader for HTTP.

Why pooch: it is the well-kept library for "fetch a file, verify its hash, put it in place only when
it matches" (md5/sha256 hashes, temporary file in the target folder and a rename, http/https/ftp), and
it takes a custom downloader. Its own HTTP downloader restarts from zero, so :class:`ResumingDownloader`
adds what multi-GB archives need: the partial file ``<target>.part`` is kept beside the target and
continued with an HTTP ``Range`` request after an interruption (a killed process or a dropped
connection), transient errors are retried with exponential back-off, and a progress bar shows size and
rate. A checksum mismatch removes the download and names both hashes.

The lock file ``fssbench-lock.json`` in each output folder records every file's sha256 (and size, URL,
what it was checked against), so a later fetch verifies what is on disk and downloads nothing twice.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.errors import FssBenchError
from benchmark.fetch.sources import Source
from benchmark.io_utils import respect_umask
from benchmark.lockfile import LockFile, sha256_of

MIRROR_ENV = "FSSBENCH_MIRROR"
"""Environment variable: a mirror base URL used when ``--mirror`` is not given."""


def mirror_from_env(mirror: str | None) -> str | None:
    """``--mirror`` if given, else ``$FSSBENCH_MIRROR`` (empty: none)."""
    return mirror or os.environ.get(MIRROR_ENV) or None


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass
class ResumingDownloader:
    """A pooch downloader (``downloader(url, output_file, pooch)``) for http(s) with resume.

    Bytes go to ``part`` (kept between attempts and between processes); an existing ``part`` is
    continued with ``Range: bytes=N-`` (a server that ignores the range sends the whole file, which
    restarts it). Connection errors, timeouts, 5xx and 429 answers are retried ``retries`` times,
    waiting ``backoff * 2**attempt`` seconds (at most 60); 4xx answers fail at once. When the whole
    file has arrived, ``check(part)`` runs (the weights' architecture check) and the part is renamed
    to pooch's temporary file, which pooch hashes and moves into place.
    """

    part: Path
    progress: bool = True
    check: Callable[[Path], None] | None = None
    retries: int = 5
    backoff: float = 1.0
    timeout: float = 60.0
    chunk_bytes: int = 1 << 20
    attempts: int = 0

    def __call__(self, url: str, output_file: str, pooch: Any, check_only: bool = False) -> bool | None:
        import requests

        if check_only:  # pooch asks whether the file exists on the server
            with requests.head(url, timeout=self.timeout, allow_redirects=True) as r:
                return r.status_code == 200
        for attempt in range(self.retries + 1):
            self.attempts += 1
            try:
                self._attempt(url)
                break
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as e:
                error = f"{type(e).__name__}: {str(e)[:200]}"
            except requests.HTTPError as e:
                status = e.response.status_code if e.response is not None else 0
                if status < 500 and status != 429:
                    raise FssBenchError(
                        f"{url}: HTTP {status} {e.response.reason}; check the URL or mirror"
                    ) from None
                error = f"HTTP {status}"
            if attempt == self.retries:
                raise FssBenchError(
                    f"{url}: download failed after {self.retries + 1} attempts ({error}); the partial file "
                    f"{self.part} is kept: run the same command again to resume"
                )
            wait = min(self.backoff * 2**attempt, 60.0)
            print(f"fssbench fetch: {error}; resuming in {wait:g} s", flush=True)
            time.sleep(wait)
        if self.check is not None:
            try:
                self.check(self.part)
            except BaseException:
                self.part.unlink(missing_ok=True)
                raise
        os.replace(self.part, output_file)
        return None

    def _attempt(self, url: str) -> None:
        import requests
        from tqdm.auto import tqdm

        have = self.part.stat().st_size if self.part.exists() else 0
        headers = {"Accept-Encoding": "identity"}  # the bytes as stored: Range offsets are byte offsets
        if have:
            headers["Range"] = f"bytes={have}-"
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as r:
            if r.status_code == 416 and have:  # the part is already whole, or longer than the file
                m = re.fullmatch(r"bytes \*/(\d+)", r.headers.get("Content-Range", ""))
                if m and int(m.group(1)) == have:
                    return
                self.part.unlink()
                raise requests.ConnectionError("partial file larger than the file on the server; restarting")
            r.raise_for_status()
            total = None
            if r.status_code == 206:
                m = _CONTENT_RANGE.fullmatch(r.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != have:
                    self.part.unlink()
                    raise requests.ConnectionError("server answered an unexpected range; restarting")
                total = None if m.group(3) == "*" else int(m.group(3))
                mode = "ab"
            else:
                have, mode = 0, "wb"
                if r.headers.get("Content-Length"):
                    total = int(r.headers["Content-Length"])
            with (
                open(self.part, mode) as f,
                tqdm(
                    total=total,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=self.part.name.removesuffix(".part"),
                    disable=not self.progress,
                    leave=True,
                ) as bar,
            ):
                for chunk in r.iter_content(chunk_size=self.chunk_bytes):
                    f.write(chunk)
                    bar.update(len(chunk))
        got = self.part.stat().st_size
        if total is not None and got != total:
            raise requests.exceptions.ChunkedEncodingError(f"connection closed at {got} of {total} bytes")


@dataclass
class Fetched:
    """What :func:`fetch_file` did: ``status`` "downloaded", "present" (verified against the lock)
    or "recorded" (found on disk, checked and entered in the lock)."""

    path: Path
    status: str
    sha256: str
    attempts: int = 0


def fetch_file(
    src: Source,
    folder: Path,
    mirror: str | None = None,
    progress: bool = True,
    check: Callable[[Path], None] | None = None,
    checked: str = "",
    retries: int = 5,
    backoff: float = 1.0,
) -> Fetched:
    """Put ``src`` at ``folder/src.filename``, verified, and record it in the folder's lock file.

    * Already on disk and in the lock: its sha256 must match the lock (a changed or truncated file
      is an error naming both hashes); nothing is downloaded.
    * On disk, not in the lock (placed by hand): checked (published hash, ``check``) and recorded.
    * Otherwise downloaded from ``src.url`` (or the same relative path under ``mirror``) into
      ``<target>.part``, resumed if a previous attempt left one; renamed into place only when whole,
      ``check`` passed and the hash matches (the published one, else the lock's if it has one).
    ``checked`` says in the lock what ``check`` verified. A file lock serialises concurrent fetches.
    """
    import pooch
    from filelock import FileLock

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / src.filename
    lock = LockFile(folder)
    with FileLock(str(target) + ".lock"):
        entry = lock.get(src.filename)
        if target.exists():
            sha = sha256_of(target)
            if entry is not None:
                if sha != entry["sha256"]:
                    raise FssBenchError(
                        f"{target}: sha256 {sha} does not match {lock.path} ({entry['sha256']}): the file "
                        "changed or is truncated; delete it and run the same command to download it again"
                    )
                return Fetched(target, "present", sha)
            _check_known(target, src, sha)
            if check is not None:
                check(target)
            lock.record(src.filename, sha256=sha, size=target.stat().st_size, url=src.url, checked=checked)
            return Fetched(target, "recorded", sha)
        known = src.known_hash or (f"sha256:{entry['sha256']}" if entry else None)
        url = src.url_from(mirror_from_env(mirror))
        downloader = ResumingDownloader(
            folder / f"{src.filename}.part", progress, check, retries=retries, backoff=backoff
        )
        registry = pooch.create(
            path=folder, base_url="", registry={src.filename: known}, urls={src.filename: url}
        )
        pooch.get_logger().setLevel("WARNING")
        try:
            registry.fetch(src.filename, downloader=downloader)
        except ValueError as e:  # pooch: the hash of the complete download does not match
            raise FssBenchError(
                f"{url}: checksum mismatch, the download was removed: expected {known}, arrived "
                f"{_arrived(str(e), known)}; a corrupted mirror or a proxy's error page? ({src.documented_at})"
            ) from None
        respect_umask(target)
        sha = sha256_of(target)
        lock.record(src.filename, sha256=sha, size=target.stat().st_size, url=url, checked=checked)
        return Fetched(target, "downloaded", sha, downloader.attempts)


def _arrived(pooch_message: str, known: str | None) -> str:
    """The hash pooch computed, from its mismatch message, as ``alg:hex``."""
    m = re.search(r"but got ([0-9a-fA-F]+)", pooch_message)
    if not m:
        return pooch_message
    return f"{(known or 'sha256:').split(':')[0]}:{m.group(1)}"


def _check_known(path: Path, src: Source, sha: str) -> None:
    if not src.known_hash:
        return
    import pooch

    alg, want = src.known_hash.split(":", 1)
    got = sha if alg == "sha256" else pooch.file_hash(str(path), alg=alg)
    if got != want:
        raise FssBenchError(
            f"{path}: {alg} {got} is not the published {want} ({src.documented_at}); delete it and run the "
            "same command to download it again"
        )
