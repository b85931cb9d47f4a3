"""A real multi-node Ray cluster on this machine for the tests (``ray.cluster_utils.Cluster``).

Every node is a real raylet with its own worker processes, bound to 127.0.0.1 only; failures are
detected within about a second (fast health checks), so removing a node mid-study is quick to
notice. Teardown stops every process the cluster started, by pid, and fails the test if one is
left. Without Ray installed the fixture skips, and fails under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

# before `import ray` anywhere in this process: node and bootstrap addresses on 127.0.0.1, no token file
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

FAST_HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 200,
    "health_check_timeout_ms": 200,
    "health_check_failure_threshold": 3,
}


class LocalCluster:
    """A head node plus ``extra`` worker nodes, each with ``cpus`` CPUs; ``add``/``remove`` nodes."""

    def __init__(self, base: str, extra: int = 1, cpus: int = 1):
        """``base``: where the cluster makes its own temp folder. Everything Ray writes goes under it: the session
        folders (``temp_dir``) and, through ``RAY_TMPDIR``, the address file that ``Cluster``
        writes to Ray's default folder (``$RAY_TMPDIR/ray/ray_current_cluster``, else /tmp/ray)."""
        # a short path: Ray puts unix sockets under it (at most 107 bytes in all)
        self.temp_dir = tempfile.mkdtemp(prefix="fssr", dir=base)
        self._saved_env = {k: os.environ.get(k) for k in ("RAY_TMPDIR",)}
        os.environ["RAY_TMPDIR"] = self.temp_dir
        os.makedirs(os.path.join(self.temp_dir, "ray"), exist_ok=True)
        self.common = {"include_dashboard": False, "node_ip_address": "127.0.0.1", "temp_dir": self.temp_dir}
        self.cpus = cpus
        self.cluster: Any = None
        try:
            self._start(extra)
        except BaseException:
            self.shutdown()  # a failed start leaves no process and no folder behind
            raise

    def _start(self, extra: int) -> None:
        import ray
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": self.cpus, "_system_config": FAST_HEALTH_CHECKS, **self.common},
        )
        self.nodes = [self.add() for _ in range(extra)]
        ray.init(address=self.cluster.address, log_to_driver=False, configure_logging=False)

    def add(self) -> Any:
        return self.cluster.add_node(num_cpus=self.cpus, **self.common)

    def remove(self, node: Any) -> None:
        """Take a node away abruptly (its processes killed), as a lost machine."""
        self.cluster.remove_node(node, allow_graceful=False)

    def shutdown(self) -> None:
        import psutil  # Ray ships psutil (on sys.path once ray is imported)
        import ray

        spawned = [p for p in psutil.Process().children(recursive=True) if self._is_ours(p)]
        ray.shutdown()
        if self.cluster is not None:
            self.cluster.shutdown()
        _, alive = psutil.wait_procs(spawned, timeout=15)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        _, still = psutil.wait_procs(alive, timeout=5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        assert not alive, f"Ray processes left after shutdown (killed now): {[p.pid for p in alive]}"
        assert not still, f"Ray processes that would not die: {[p.pid for p in still]}"

    def listening_addresses(self) -> set[str]:
        """The local addresses on which this cluster's processes listen for TCP."""
        import psutil

        out = set()
        for p in psutil.Process().children(recursive=True):
            if not self._is_ours(p):
                continue
            try:
                conns = p.net_connections(kind="tcp")
            except psutil.Error:
                continue
            out |= {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN}
        return out

    def _is_ours(self, p: Any) -> bool:
        """A process of this cluster (not another fixture's server): Ray names its workers ray::...
        and passes the session folder to every other process it starts."""
        import psutil

        try:
            return p.name().startswith(("ray::", "raylet", "gcs_server")) or any(
                self.temp_dir in arg for arg in p.cmdline()
            )
        except psutil.Error:
            return False


def require_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        message = "Ray is not installed: pip install -e '.[cluster]' (or .[dev])"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[LocalCluster]:
    """A two-node cluster (head + one node, 1 CPU each) shared by a test module; all its files
    live in one folder of its own (directly under the temp dir: pytest's would make Ray's socket
    paths longer than AF_UNIX allows), removed at teardown."""
    require_ray()
    cluster = LocalCluster(tempfile.gettempdir(), extra=1, cpus=1)
    try:
        yield cluster
    finally:
        cluster.shutdown()
