"""Download one file: pooch for the placement and the hashes, a resuming downloader for HTTP.

Why pooch: it is the well-kept library for "fetch a file into a temporary file in the target folder
and move it into place", with md5/sha256 hashing (``pooch.file_hash``), and it takes a custom
downloader. Its own HTTP downloader restarts from zero and its hash check runs on a temporary file
that an interruption deletes, so :class:`ResumingDownloader` adds what multi-GB archives need: the
partial file ``<target>.part`` is kept beside the target and continued with an HTTP ``Range``
request after an interruption (Ctrl-C, a killed process, a dropped connection); transient errors are
retried with exponential back-off; the complete part is hashed and checked before pooch places it;
a progress bar shows size and rate. A checksum mismatch removes the download and names both hashes.

The lock file ``fssbench-lock.json`` in each output folder records every file's sha256 (and size, URL,
what it was checked against), so a later fetch verifies what is on disk and downloads nothing twice.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.errors import USER_ERRORS, FssBenchError
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

    Bytes go to ``part`` (kept between attempts and between processes, and on Ctrl-C); an existing
    ``part`` is continued with ``Range: bytes=N-`` (a server that ignores the range sends the whole
    file, which restarts it). Connection errors, timeouts, 5xx and 429 answers are retried
    ``retries`` times in a row without progress, waiting ``backoff * 2**n`` seconds (at most 60); an
    attempt that advanced resets the count; other answers (404, a bad URL) fail at once. When the
    whole file has arrived it is checked while still ``part``: the hash ``known`` (``alg:hex``;
    a mismatch deletes it), then ``check(part)`` (the weights' architecture check; a failure deletes
    it). Only then is it linked to pooch's temporary file, which pooch moves into place; the part is
    removed by :func:`fetch_file` once the target exists, so an interruption never loses it.
    """

    part: Path
    progress: bool = True
    check: Callable[[Path], None] | None = None
    known: str | None = None
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
        failures = 0
        while True:
            self.attempts += 1
            before = self.part.stat().st_size if self.part.exists() else 0
            try:
                self._attempt(url)
                break
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as e:
                host = _unresolved_host(e)
                if host is not None:  # no network, or a wrong host name: retrying will not help
                    raise FssBenchError(
                        f"{url}: cannot resolve the host {host!r} (no network here, or a wrong host "
                        f"name); check the connection, or pass --mirror (or $FSSBENCH_MIRROR). "
                        + self._kept()
                    ) from None
                error = f"{type(e).__name__}: {str(e)[:200]}"
            except requests.HTTPError as e:
                status = e.response.status_code if e.response is not None else 0
                if status < 500 and status != 429:
                    raise FssBenchError(
                        f"{url}: HTTP {status} {e.response.reason}; check the URL or mirror"
                    ) from None
                error = f"HTTP {status}"
            except requests.RequestException as e:  # a malformed URL, too many redirects: not transient
                raise FssBenchError(
                    f"{url}: {type(e).__name__}: {str(e)[:200]}; check the URL or mirror"
                ) from None
            grew = self.part.exists() and self.part.stat().st_size > before
            failures = 1 if grew else failures + 1
            if failures > self.retries:
                raise FssBenchError(
                    f"{url}: download failed after {self.attempts} attempts ({error}); " + self._kept()
                )
            wait = min(self.backoff * 2 ** (failures - 1), 60.0)
            print(f"fssbench fetch: {error}; resuming in {wait:g} s", flush=True)
            time.sleep(wait)
        if self.known:
            alg, want = self.known.split(":", 1)
            got = file_hash(self.part, alg)
            if got != want:
                self.part.unlink()
                raise ChecksumMismatch(f"{alg}:{got}")
        if self.check is not None:
            try:
                self.check(self.part)
            except USER_ERRORS as e:
                self.part.unlink(missing_ok=True)
                raise FssBenchError(f"{e}; the download was removed") from None
        os.unlink(output_file)  # pooch's empty temporary file: the part takes its name
        try:
            os.link(self.part, output_file)
        except OSError:  # no hard links here: a copy
            shutil.copyfile(self.part, output_file)
        return None

    def _kept(self) -> str:
        """What is left to resume from: the partial file when there is one, else nothing."""
        if self.part.exists() and self.part.stat().st_size > 0:
            return f"the partial file {self.part} is kept: run the same command again to resume"
        return "nothing was downloaded"

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


def _unresolved_host(error: BaseException) -> str | None:
    """The host name whose DNS look-up failed somewhere in ``error``'s chain (requests wraps
    urllib3's ``NameResolutionError`` in ``MaxRetryError``), or None for any other failure."""
    import socket

    seen: list[BaseException] = []
    todo: list[object] = [error]
    while todo and len(seen) < 20:
        e = todo.pop()
        if not isinstance(e, BaseException) or any(e is s for s in seen):
            continue
        seen.append(e)
        if type(e).__name__ == "NameResolutionError" or isinstance(e, socket.gaierror):
            m = re.search(r"Failed to resolve '([^']+)'", str(e))
            return m.group(1) if m else "?"
        todo += [getattr(e, "reason", None), e.__cause__, e.__context__, *e.args]
    return None


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
            (folder / f"{src.filename}.part").unlink(missing_ok=True)  # left after the move, if killed there
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
                try:
                    check(target)
                except USER_ERRORS as e:
                    raise FssBenchError(f"{e}; it was placed by hand: delete it and fetch it again") from None
            lock.record(src.filename, sha256=sha, size=target.stat().st_size, url=src.url, checked=checked)
            return Fetched(target, "recorded", sha)
        known = src.known_hash or (f"sha256:{entry['sha256']}" if entry else None)
        url = src.url_from(mirror_from_env(mirror))
        part = folder / f"{src.filename}.part"
        downloader = ResumingDownloader(part, progress, check, known, retries=retries, backoff=backoff)
        # pooch places the file (temporary file in the folder, then a move); the hash is checked on
        # the part by the downloader, so pooch is given none
        registry = pooch.create(
            path=folder, base_url="", registry={src.filename: None}, urls={src.filename: url}
        )
        pooch.get_logger().setLevel("WARNING")
        try:
            registry.fetch(src.filename, downloader=downloader)
        except ChecksumMismatch as e:
            fix = (
                f"; if the recorded hash is the wrong one (a truncated first download), remove the entry "
                f"{src.filename!r} from {lock.path} and fetch again"
                if not src.known_hash
                else f"; a corrupted mirror or a proxy's error page? ({src.documented_at})"
            )
            raise FssBenchError(
                f"{url}: checksum mismatch, the download was removed: expected {known}, arrived {e}{fix}"
            ) from None
        except OSError as e:  # a full disk, a read-only folder
            raise FssBenchError(f"{target}: {e.strerror or e}; the partial file {part} is kept") from None
        part.unlink(missing_ok=True)
        respect_umask(target)
        sha = known.split(":", 1)[1] if known and known.startswith("sha256:") else sha256_of(target)
        lock.record(src.filename, sha256=sha, size=target.stat().st_size, url=url, checked=checked)
        return Fetched(target, "downloaded", sha, downloader.attempts)


class ChecksumMismatch(Exception):
    """The complete download's hash differs from the expected one (message: ``alg:hex`` that arrived)."""


def file_hash(path: Path, alg: str) -> str:
    """``alg`` (md5, sha256, ...) hex digest of a file: pooch's ``file_hash``."""
    import pooch

    return pooch.file_hash(str(path), alg=alg)


def _check_known(path: Path, src: Source, sha: str) -> None:
    if not src.known_hash:
        return
    alg, want = src.known_hash.split(":", 1)
    got = sha if alg == "sha256" else file_hash(path, alg)
    if got != want:
        raise FssBenchError(
            f"{path}: {alg} {got} is not the published {want} ({src.documented_at}); delete it and run the "
            "same command to download it again"
        )
