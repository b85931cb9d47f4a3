"""Engines that run a study's cells somewhere other than this process, one after the other.

``--engine local`` is :class:`benchmark.runner.StudyRunner` itself. ``--engine ray``
(:mod:`benchmark.engines.ray_study`) keeps everything but the scheduling: the driver plans the
manifests, asks MLflow which cells are finished and logs every result; Ray actors
(:mod:`benchmark.engines.cell_worker`, no Ray inside) run the shared cell function.
"""
