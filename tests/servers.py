"""Real PostgreSQL and MLflow tracking servers for the tests (not mocks), plus their pytest fixtures.

``PostgresServer`` initdb's a fresh cluster in a temporary folder and runs it on a free loopback port
(127.0.0.1 only, trust auth for 127.0.0.1 and the private unix socket, ``fsync=off``). PostgreSQL
refuses to run as root, so under root the cluster belongs to, and runs as, the system user
``fssbench-pg`` (created when missing). ``MlflowServer`` runs ``mlflow server`` on top of such a
database, with artifacts proxied into a local folder. Both stop everything they started and delete
their folders on exit, also when startup fails.

The fixtures ``postgres_server`` and ``mlflow_server`` are session-scoped; a missing PostgreSQL or
psycopg2 skips the tests that use them, or fails them under ``CI=true`` (see ``require_server``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

PG_OS_USER = "fssbench-pg"
"""The unprivileged OS user that runs PostgreSQL when the tests run as root."""

PG_ROLE = "fssbench"
"""The cluster's superuser role (the user name in every URL)."""

PG_HINT = "install the Debian package 'postgresql' (apt-get install postgresql)"
PSYCOPG2_HINT = "install psycopg2-binary into the venv (pip install psycopg2-binary)"


def require_server(what: str, hint: str) -> None:
    """Give up on a test whose server is unavailable: ``pytest.fail`` under ``CI=true``, else skip.

    ``what`` says what is missing, ``hint`` how to install it; both end up in the message.
    """
    message = f"{what} is not available: {hint}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a missing server is a failure)", pytrace=False)
    pytest.skip(message)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def postgres_bindir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or None when PostgreSQL is missing.

    Tries ``pg_config --bindir`` first (on Debian it may be libpq-dev's, pointing at a folder without
    a server), then the newest ``/usr/lib/postgresql/*/bin``.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return -1.0

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def _tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _ensure_os_user(name: str) -> None:
    """Create the system user ``name`` (no home, no login shell) unless it exists."""
    if subprocess.run(["id", "-u", name], capture_output=True).returncode == 0:
        return
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    proc = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
    )
    # Exit status 9: created meanwhile by a concurrent test session.
    if proc.returncode not in (0, 9):
        raise RuntimeError(f"useradd {name} failed ({proc.returncode}): {proc.stderr.strip()}")


class _Server:
    """A server started by ``__enter__`` and stopped, whatever happened, by ``__exit__``."""

    def stop(self) -> None:
        raise NotImplementedError

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class PostgresServer(_Server):
    """A throwaway PostgreSQL cluster on 127.0.0.1, as a context manager.

    On entry: initdb into a new temporary folder, start the server on a free port and wait until it
    accepts connections. On exit: ``pg_ctl stop -m fast`` and delete the folder. ``url(db)`` is a
    SQLAlchemy URL (``postgresql+psycopg2://fssbench@127.0.0.1:PORT/db``) that MLflow's
    ``--backend-store-uri`` and Optuna's ``RDBStorage`` both accept.
    """

    def __init__(self, databases: tuple[str, ...] = (), os_user: str = PG_OS_USER, timeout: float = 60.0):
        self.databases = databases
        self.timeout = timeout
        self.host = "127.0.0.1"
        self.role = PG_ROLE
        self.port = 0
        self.base: Path | None = None
        self._as_root = os.geteuid() == 0
        self.os_user = os_user if self._as_root else None
        bindir = postgres_bindir()
        if bindir is None:
            raise FileNotFoundError(f"PostgreSQL server binaries not found: {PG_HINT}")
        self.bindir = bindir

    # -- paths --------------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        assert self.base is not None, "the server is not started"
        return self.base / "data"

    @property
    def log_file(self) -> Path:
        assert self.base is not None, "the server is not started"
        return self.base / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        assert self.base is not None, "the server is not started"
        return self.base

    # -- running the PostgreSQL tools -------------------------------------------------------------
    def _run(self, tool: str, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool as the cluster's OS user; raise with its output when it fails."""
        cmd = [str(self.bindir / tool), *args]
        if self.os_user is not None:
            cmd = ["runuser", "-u", self.os_user, "--", *cmd]
        proc = subprocess.run(
            cmd,
            cwd=self.base,  # the OS user may not be able to read the caller's working directory
            capture_output=True,
            text=True,
            timeout=timeout or self.timeout,
            env={**os.environ, "LC_ALL": "C"},
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({proc.returncode}): {proc.stdout}{proc.stderr}\n"
                f"--- server log tail ---\n{_tail(self.log_file)}"
            )
        return proc

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            self.role,
            "--auth=trust",
            "--no-locale",
            "--encoding=UTF8",
            "--no-sync",
        )
        # Only the private unix socket and IPv4 loopback may connect (no ::1, no replication).
        (self.data_dir / "pg_hba.conf").write_text(
            "local all all trust\nhost  all all 127.0.0.1/32 trust\n", encoding="utf-8"
        )
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                "\n# fssbench test server\n"
                f"listen_addresses = '{self.host}'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 100\n"
            )

    def _start_on(self, port: int) -> None:
        self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            str(int(self.timeout)),
            "-o",
            f"-p {port}",
        )
        self.port = port

    # -- context manager ----------------------------------------------------------------------------
    def __enter__(self) -> PostgresServer:
        self.base = Path(tempfile.mkdtemp(prefix="fssbench-pg-"))
        try:
            if self.os_user is not None:
                _ensure_os_user(self.os_user)
                shutil.chown(self.base, user=self.os_user, group=self.os_user)
            self._initdb()
            for attempt in range(3):  # the free port may be taken between probe and bind
                try:
                    self._start_on(free_port(self.host))
                    break
                except RuntimeError:
                    if attempt == 2 or "could not bind" not in _tail(self.log_file, 200):
                        raise
            self._wait_ready()
            for name in self.databases:
                self.create_database(name)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """Retry a real connection until it succeeds (``pg_ctl -w`` has usually waited already)."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self.execute("select 1")
                return
            except Exception as exc:  # psycopg2.OperationalError while starting up
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL did not accept connections on {self.host}:{self.port} within "
                        f"{self.timeout:.0f} s: {exc}\n--- server log tail ---\n{_tail(self.log_file)}"
                    ) from exc
                time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server (fast shutdown, SIGKILL as a last resort) and delete its folder."""
        if self.base is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                try:
                    self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30")
                except (RuntimeError, subprocess.TimeoutExpired):
                    pid = self.pid
                    if pid is not None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    # -- using it -----------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The postmaster's process id (first line of ``postmaster.pid``), None when not running."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, IndexError, ValueError, AssertionError):
            return None

    def url(self, dbname: str = "postgres") -> str:
        """The SQLAlchemy URL of database ``dbname`` (for MLflow, Optuna, ``sqlalchemy.create_engine``)."""
        return f"postgresql+psycopg2://{self.role}@{self.host}:{self.port}/{dbname}"

    def dsn(self, dbname: str = "postgres") -> str:
        """The libpq connection string of database ``dbname`` (for ``psycopg2.connect``)."""
        return f"host={self.host} port={self.port} user={self.role} dbname={dbname} connect_timeout=5"

    def execute(self, sql: str, params: Any = None, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement in autocommit mode; the rows it returns ([] when it returns none)."""
        import psycopg2

        conn = psycopg2.connect(self.dsn(dbname))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall()) if cur.description is not None else []
        finally:
            conn.close()

    def create_database(self, name: str) -> str:
        """Create database ``name`` (owned by the superuser role); its SQLAlchemy URL."""
        import psycopg2
        from psycopg2 import sql

        conn = psycopg2.connect(self.dsn())
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        return self.url(name)


class MlflowServer(_Server):
    """A real ``mlflow server`` (uvicorn, one worker) backed by PostgreSQL, as a context manager.

    Artifacts are proxied (``mlflow-artifacts:/``) into ``artifacts_dir``. On entry it waits until
    ``GET /health`` answers; on exit it stops the whole process group (the CLI process and its
    uvicorn workers). The server log goes to ``log_file``; its tail is part of any startup error.
    """

    def __init__(
        self,
        backend_store_uri: str,
        artifacts_dir: Path,
        log_file: Path | None = None,
        timeout: float = 120.0,
    ):
        self.backend_store_uri = backend_store_uri
        self.artifacts_dir = Path(artifacts_dir)
        self.log_file = (
            Path(log_file) if log_file is not None else self.artifacts_dir.parent / "mlflow-server.log"
        )
        self.timeout = timeout
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """The tracking URI (``http://127.0.0.1:PORT``)."""
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The ``mlflow server`` command line."""
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            self.backend_store_uri,
            "--artifacts-destination",
            str(self.artifacts_dir),
        ]

    def __enter__(self) -> MlflowServer:
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.host)
        env = {
            **os.environ,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            # No huey job runner (GenAI evaluation jobs): two fewer processes, faster startup.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "PYTHONUNBUFFERED": "1",
        }
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group, so stop() reaches the workers
            )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with status {self.proc.returncode} during startup\n"
                    f"command: {' '.join(self.command())}\n--- log tail ({self.log_file}) ---\n"
                    f"{_tail(self.log_file)}"
                )
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
                    last_error = f"HTTP {resp.status}"
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                last_error = str(exc)
            time.sleep(0.25)
        raise RuntimeError(
            f"mlflow server did not answer GET {self.uri}/health within {self.timeout:.0f} s "
            f"({last_error})\n--- log tail ({self.log_file}) ---\n{_tail(self.log_file)}"
        )

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL whatever is left after 15 s."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
        # The group outlives its leader when a worker lingers: kill what remains.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


# -- pytest fixtures (import them into conftest.py) -----------------------------------------------------
@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the whole session (skipped, or failed under CI=true, when missing)."""
    if postgres_bindir() is None:
        require_server("PostgreSQL (initdb, pg_ctl, postgres)", PG_HINT)
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        require_server("psycopg2", PSYCOPG2_HINT)
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        require_server("runuser (to run PostgreSQL as a non-root user)", "install util-linux")
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_server(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """An ``mlflow server`` on its own database (``mlflow``) of ``postgres_server``, for the session."""
    url = postgres_server.create_database("mlflow")
    work = tmp_path_factory.mktemp("mlflow-server")
    with MlflowServer(url, work / "artifacts", log_file=work / "server.log") as server:
        yield server
