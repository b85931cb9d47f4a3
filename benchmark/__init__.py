"""fssam-bench: the benchmark harness (datasets, episode manifests, metrics, studies, CLI)."""

__version__ = "0.1.0"
