"""Episodes: the manifests every reader uses (:mod:`benchmark.episodes.manifests`) and the authors'
draws they replay: FSSAM's (:mod:`benchmark.episodes.fssam_exact`) and HSNet's
(:mod:`benchmark.episodes.hsnet`)."""
