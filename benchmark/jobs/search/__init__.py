"""``fssbench search``: an Optuna search whose trials run their cells through the local engine.

* :mod:`~benchmark.jobs.search.runner`: :class:`SearchRunner`, one worker of the search;
* :mod:`~benchmark.jobs.search.objective`: one trial (its cells, the running objective, pruning);
* :mod:`~benchmark.jobs.search.study`: the Optuna study and its MLflow parent run, the outputs
  (:func:`~benchmark.jobs.search.study.search_outputs`: outputs only, for the Ray driver);
* :mod:`~benchmark.jobs.search.storage`: storages and the study lock;
* :mod:`~benchmark.jobs.search.sampling`: sampler, pruner, a trial's draw;
* :mod:`~benchmark.jobs.search.outputs`: trials table, best study file, plots, the printout;
* :mod:`~benchmark.jobs.search.ray`: ``--engine ray``, N workers as Ray actors.
"""

from benchmark.jobs.search.outputs import (
    SearchOutcome,
    best_study_raw,
    best_study_yaml,
    check_test_tuning,
    print_outcome,
    save_plots,
    trials_table,
)
from benchmark.jobs.search.runner import SearchCell, SearchRunner
from benchmark.jobs.search.storage import StudyLock, default_storage, open_storage, redact
from benchmark.jobs.search.study import SearchStudy, search_outputs

__all__ = [
    "SearchCell",
    "SearchOutcome",
    "SearchRunner",
    "SearchStudy",
    "StudyLock",
    "best_study_raw",
    "best_study_yaml",
    "check_test_tuning",
    "default_storage",
    "open_storage",
    "print_outcome",
    "redact",
    "save_plots",
    "search_outputs",
    "trials_table",
]
