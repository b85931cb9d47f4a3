"""``fssbench fetch``: the official weights and datasets, downloaded with resume, verified and locked.

* :mod:`benchmark.fetch.sources` - the one table of URLs (with where each is documented) and hashes.
* :mod:`benchmark.fetch.download` - one file: pooch (hash check, atomic placement) with a resuming
  HTTP Range downloader, retries with back-off, mirrors, and the lock file of sha256s.
* :mod:`benchmark.fetch.weights` - SAM 2 / DINOv2 files checked against the architecture they claim,
  and ``register`` for the authors' manually downloaded FSSAM checkpoints.
* :mod:`benchmark.fetch.data` - the PASCAL (VOC2012 + SBD) and COCO 2014 archives, extracted into the
  layout ``fssbench data prepare`` reads.
"""
