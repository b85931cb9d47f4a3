"""The jobs: ``fssbench train``, ``profile``, ``bench-model`` and ``demo``, each a short composition of
the plan, the workspace, the engines and the records."""
