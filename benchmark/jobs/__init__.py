"""Jobs: what a command does, each a composition of the plan (:mod:`benchmark.plan`), the
workspace (:mod:`benchmark.workspace`), an engine (:mod:`benchmark.engines`) and the records
(:mod:`benchmark.records`).

* :mod:`~benchmark.jobs.run`: ``fssbench run`` (:class:`~benchmark.jobs.run.RunJob`, also
  known as ``StudyRunner``), on the local or the Ray engine;
* :mod:`~benchmark.jobs.search`: ``fssbench search``, an Optuna search whose trials run their
  cells through the local engine (``--engine ray``: N such searches on Ray actors);
* :mod:`~benchmark.jobs.cells`: what both do before a cell runs (manifests read once, cell keys,
  the image check, the weights' preflight);
* :mod:`~benchmark.jobs.train`: ``fssbench train`` (and ``export``);
* :mod:`~benchmark.jobs.profile`: ``fssbench profile`` and ``bench-model``;
* :mod:`~benchmark.jobs.demo`: ``fssbench demo``.
"""
