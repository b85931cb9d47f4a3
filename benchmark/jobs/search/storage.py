"""Where a search's Optuna study lives: the storage URL, its connection and the study lock.

* :func:`open_storage`: an RDB storage (SQLite, PostgreSQL, MySQL) with heartbeats, or a journal
  file; :func:`default_storage`: ``optuna.db`` beside a local MLflow store.
* :class:`StudyLock`: what two workers of one study could race on runs under it.
* :func:`redact`: a URL without its password (tags and messages show that).
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from benchmark.errors import FssBenchError

DEFAULT_HEARTBEAT_S = 60


def default_storage(tracking_uri: str) -> str:
    """``optuna.db`` beside a local SQLite MLflow store, else in the working directory."""
    if tracking_uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(tracking_uri[len('sqlite:///') :]).parent / 'optuna.db'}"
    return f"sqlite:///{Path.cwd().resolve() / 'optuna.db'}"


def with_postgres_driver(url: str) -> str:
    """``postgresql://`` (or ``postgres://``) with the driver spelled out: SQLAlchemy 2.1 reads a
    bare ``postgresql://`` as psycopg 3, and this project installs psycopg2 (the ``cluster``
    extra), so ``postgresql+psycopg2://`` unless psycopg 3 is importable."""
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            import importlib.util

            driver = "psycopg" if importlib.util.find_spec("psycopg") else "psycopg2"
            return f"postgresql+{driver}://" + url[len(bare) :]
    return url


def redact(url: str) -> str:
    """A storage URL without its password (what tags and logs show)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def storage_lock_path(url: str) -> Path | None:
    """The local file a storage lives in (SQLite or journal); its study lock is ``PATH.lock``."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    if url.startswith("journal:"):
        return Path(url[len("journal:") :])
    return None


class StudyLock:
    """An inter-process lock shared by every worker of one Optuna study, held around what two
    workers could otherwise race on: creating the study and its MLflow parent run, enqueueing the
    retry of an interrupted or stale trial, and writing the search's outputs to the parent run.

    * SQLite or journal storage: a file lock ``PATH.lock`` beside the file (``filelock``; the
      kernel releases it when its process dies).
    * PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) keyed by the study name,
      on a connection of the storage's own engine; MySQL: ``GET_LOCK``. The server releases it
      when the connection drops, so a killed worker never leaves it held.

    Re-entrant within one process; waiting longer than ``timeout_s`` is an error naming the storage.
    """

    def __init__(self, url: str, storage: Any, study_name: str, timeout_s: float = 600.0):
        self.url, self.storage, self.study_name, self.timeout_s = url, storage, study_name, timeout_s
        digest = hashlib.sha256(f"fssbench-search:{study_name}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)  # PostgreSQL: a bigint
        self.name = "fssbench-" + digest.hex()[:40]  # MySQL: at most 64 characters
        self.depth = 0
        self.file_lock = None
        self.connection: Any = None
        path = storage_lock_path(url)
        if path is not None:
            from filelock import FileLock

            path.parent.mkdir(parents=True, exist_ok=True)
            self.file_lock = FileLock(str(path) + ".lock", timeout=timeout_s)

    def __enter__(self) -> StudyLock:
        if self.depth == 0:
            self._acquire()
        self.depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        if self.depth == 0:
            self._release()

    def _acquire(self) -> None:
        if self.file_lock is not None:
            from filelock import Timeout

            try:
                self.file_lock.acquire()
            except Timeout:
                raise FssBenchError(self._busy()) from None
            return
        from sqlalchemy import text

        conn = self.storage.engine.connect()
        postgres = conn.dialect.name == "postgresql"
        take = "SELECT pg_try_advisory_lock(:key)" if postgres else "SELECT GET_LOCK(:name, 0)"
        deadline = time.monotonic() + self.timeout_s
        while not conn.execute(text(take), {"key": self.key, "name": self.name}).scalar():
            if time.monotonic() > deadline:
                conn.close()
                raise FssBenchError(self._busy())
            time.sleep(0.1)
        conn.commit()  # the lock belongs to the session, not to this transaction
        self.connection = conn

    def _release(self) -> None:
        if self.file_lock is not None:
            self.file_lock.release()
            return
        from sqlalchemy import text

        conn, self.connection = self.connection, None
        postgres = conn.dialect.name == "postgresql"
        give = "SELECT pg_advisory_unlock(:key)" if postgres else "SELECT RELEASE_LOCK(:name)"
        try:
            conn.execute(text(give), {"key": self.key, "name": self.name})
            conn.commit()
        finally:
            conn.close()

    def _busy(self) -> str:
        return (
            f"--storage {redact(self.url)}: another worker of Optuna study {self.study_name!r} has held its "
            f"study lock for {self.timeout_s:.0f} s; stop the stuck fssbench search process and rerun"
        )


def open_storage(
    url: str,
    heartbeat_s: int = DEFAULT_HEARTBEAT_S,
    on_stale: Callable[[Any, Any], None] | None = None,
):
    """An Optuna storage from ``url``: an RDB URL (``sqlite:///PATH``, ``postgresql://...``,
    ``mysql://...``) with heartbeats, or ``journal:PATH`` (a journal file, for NFS; Optuna has no
    heartbeats there)."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "postgres", "mysql"):
        raise FssBenchError(
            f"--storage {redact(url)}: expected an RDB URL (sqlite:///optuna.db, postgresql://user@host/db, "
            "mysql://...) or journal:PATH"
        )
    url = with_postgres_driver(url)
    engine_kwargs: dict[str, Any] = {}
    if scheme == "sqlite":
        path = Path(url[len("sqlite:///") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 120}}  # several workers on one file wait, not fail
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_s,
                grace_period=max(2 * heartbeat_s, heartbeat_s + 2),
                heartbeat_stale_trial_callback=on_stale,
            )
        if scheme == "sqlite":
            write_ahead_log(storage.engine)
        return storage
    except Exception as e:
        raise FssBenchError(
            f"--storage {redact(url)}: not usable ({type(e).__name__}: {str(e)[:200]})"
        ) from None


def write_ahead_log(engine: Any) -> None:
    """Put a SQLite storage in write-ahead-log mode (kept in the file). In SQLite's default
    rollback-journal mode a reader blocks every writer's commit: a worker interrupted (Ctrl-C) in
    the middle of reading the study's trials keeps its read open while it records the interrupt,
    and the other workers' commits, and its own, fail with "database is locked" after the busy
    timeout. In WAL mode readers never block writers. (WAL needs a local file system: on NFS, use
    ``journal:PATH``.)"""
    with engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode=WAL").scalar()
    if str(mode).lower() != "wal":
        raise RuntimeError(f"SQLite refused write-ahead-log mode (journal_mode is {mode!r})")
