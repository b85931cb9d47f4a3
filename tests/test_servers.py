"""The real-server test infrastructure (tests/servers.py): PostgreSQL, MLflow over HTTP, Optuna on PostgreSQL.

No mocks: a throwaway PostgreSQL cluster and a real ``mlflow server`` (see the fixtures there). Skipped
when PostgreSQL or psycopg2 is missing, failed instead under ``CI=true``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy

from tests.servers import MlflowServer, PostgresServer, require_server


def _listening_addresses(port: int) -> list[str]:
    """The local addresses of every TCP socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found: list[str] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, _, port_hex = local.partition(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A = LISTEN
                if len(address) == 8:  # IPv4, little-endian hex
                    found.append(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    raw = bytes.fromhex(address)
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    found.append(socket.inet_ntop(socket.AF_INET6, words))
    return found


def _non_loopback_ipv4() -> str | None:
    """An IPv4 address of this host that is not loopback (the source of a default route), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))  # UDP: no packet is sent
            address = sock.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_postgres_answers_sql_on_loopback_only_as_non_root(postgres_server: PostgresServer) -> None:  # noqa: F811
    assert postgres_server.execute("select 1") == [(1,)]
    assert postgres_server.execute("show listen_addresses") == [("127.0.0.1",)]
    # Through SQLAlchemy, with the URL that MLflow and Optuna get.
    engine = sqlalchemy.create_engine(postgres_server.url())
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("select current_user")).scalar() == "fssbench"
    finally:
        engine.dispose()

    if Path("/proc/net/tcp").exists():
        assert _listening_addresses(postgres_server.port) == ["127.0.0.1"]
    other = _non_loopback_ipv4()
    if other is not None:
        with pytest.raises(OSError), socket.create_connection((other, postgres_server.port), timeout=2):
            pass

    pid = postgres_server.pid
    assert pid is not None
    uid = os.stat(f"/proc/{pid}").st_uid
    assert uid != 0
    if os.geteuid() != 0:
        assert uid == os.geteuid()


def test_mlflow_run_over_http_lands_in_postgres_and_artifacts_dir(
    mlflow_server: MlflowServer,  # noqa: F811
    postgres_server: PostgresServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    assert mlflow_server.uri.startswith("http://127.0.0.1:")
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.uri)
    experiment_id = client.create_experiment("servers-test")
    run = client.create_run(experiment_id, run_name="over-http")
    run_id = run.info.run_id
    client.log_param(run_id, "lr", "0.001")
    for step, value in enumerate((0.5, 0.25, 0.125)):
        client.log_metric(run_id, "miou", value, step=step)
    artifact = tmp_path / "summary.txt"
    artifact.write_text("fssam over http\n")
    client.log_artifact(run_id, str(artifact), artifact_path="reports")
    client.set_terminated(run_id)

    # Read PostgreSQL directly, not through MLflow.
    engine = sqlalchemy.create_engine(mlflow_server.backend_store_uri)
    try:
        with engine.connect() as conn:
            name, status, artifact_uri = conn.execute(
                sqlalchemy.text("select name, status, artifact_uri from runs where run_uuid = :r"),
                {"r": run_id},
            ).one()
            metrics = conn.execute(
                sqlalchemy.text(
                    "select step, value from metrics where run_uuid = :r and key = 'miou' order by step"
                ),
                {"r": run_id},
            ).all()
            params = conn.execute(
                sqlalchemy.text("select key, value from params where run_uuid = :r"), {"r": run_id}
            ).all()
    finally:
        engine.dispose()
    assert (name, status) == ("over-http", "FINISHED")
    assert [tuple(m) for m in metrics] == [(0, 0.5), (1, 0.25), (2, 0.125)]
    assert [tuple(p) for p in params] == [("lr", "0.001")]

    # Proxied artifacts: the run's URI is mlflow-artifacts:/..., the bytes sit under the artifacts dir.
    assert artifact_uri.startswith("mlflow-artifacts:")
    stored = list(mlflow_server.artifacts_dir.rglob("summary.txt"))
    assert len(stored) == 1
    assert stored[0].read_text() == "fssam over http\n"
    assert stored[0].parent.name == "reports" and run_id in stored[0].parts
    assert [f.path for f in client.list_artifacts(run_id, "reports")] == ["reports/summary.txt"]


_OPTUNA_WORKER = textwrap.dedent(
    """
    import sys, time, warnings
    import optuna

    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)

    url, study_name, worker, n_trials = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=10)
    study = optuna.load_study(study_name=study_name, storage=storage)

    def objective(trial):
        trial.set_user_attr("worker", worker)
        x = trial.suggest_float("x", -10.0, 10.0)
        time.sleep(0.05)  # let the two workers interleave
        return (x - 2.0) ** 2

    study.optimize(objective, n_trials=n_trials)
    """
)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_optuna_study_shared_by_two_processes_on_postgres(postgres_server: PostgresServer) -> None:  # noqa: F811
    import optuna

    per_worker, workers = 8, 2
    url = postgres_server.create_database("optuna_two_workers")
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=10)
    optuna.create_study(study_name="shared", storage=storage, direction="minimize")

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPTUNA_WORKER, url, "shared", f"w{i}", str(per_worker)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(workers)
    ]
    outputs = [proc.communicate(timeout=180)[0] for proc in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out

    expected = per_worker * workers
    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.get_trials(deepcopy=False)
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(expected))  # every number exactly once, none missing
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    by_worker = {w: sum(t.user_attrs["worker"] == w for t in trials) for w in ("w0", "w1")}
    assert by_worker == {"w0": per_worker, "w1": per_worker}

    # The same, straight from PostgreSQL.
    rows = postgres_server.execute(
        "select count(*), count(distinct number), min(number), max(number) from trials",
        dbname="optuna_two_workers",
    )
    assert rows == [(expected, expected, 0, expected - 1)]
    storage.engine.dispose()


@pytest.mark.parametrize("ci", ["true", ""])
def test_require_server_fails_under_ci_and_skips_elsewhere(ci: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci == "true" else pytest.skip.Exception
    with pytest.raises(expected, match="PostgreSQL is not available: apt-get install postgresql"):
        require_server("PostgreSQL", "apt-get install postgresql")


def test_the_deploy_scripts_parse_and_explain_themselves():
    root = Path(__file__).resolve().parents[1] / "deploy"
    scripts = sorted(root.glob("*.sh")) + sorted(root.glob("*.sbatch"))
    assert {p.name for p in scripts} == {"start-servers.sh", "stop-servers.sh", "slurm-ray.sbatch"}
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)
    usage = subprocess.run(["bash", str(root / "start-servers.sh"), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "FSSBENCH_PG_PASSWORD" in usage.stdout + usage.stderr
    # run as root, start-servers.sh refuses (PostgreSQL will not run as root) before touching anything
    if os.geteuid() == 0:
        env = {**os.environ, "FSSBENCH_PG_PASSWORD": "x", "HOME": "/nonexistent"}
        refused = subprocess.run(
            ["bash", str(root / "start-servers.sh")], capture_output=True, text=True, env=env
        )
        assert refused.returncode != 0 and "root" in refused.stderr
