"""Evaluation: the cell function (:mod:`benchmark.evaluation.cell`) and its parts, bottom up: scoring
(``metrics``), one episode's pixels (``loader``), the frozen-feature cache and the encoders through it
(``feature_cache``, ``features``), one episode's prediction and counts (``predict``), the episode
journal (``journal``) and episode overlays (``qualitative``)."""
