"""Engines: where a job's cells run. Each implements :class:`benchmark.engines.base.Engine`.

:mod:`~benchmark.engines.base` defines the interface (:class:`~benchmark.engines.base.CellJob`
in, :class:`~benchmark.engines.base.CellDone` out, :class:`~benchmark.engines.base.CellHooks`
for what the job hears meanwhile); :mod:`~benchmark.engines.local` runs jobs in this process
(``--engine local``, a search's trials), :mod:`~benchmark.engines.ray` on Ray actors
(``--engine ray``) that run :mod:`~benchmark.engines.worker`. Engines never touch MLflow: the
jobs (:mod:`benchmark.jobs`) record every answer through :mod:`benchmark.records`.
"""
