"""The built-in episode protocols, one file each: ``fssam`` (the PFENet family's sampler),
``fssam-exact`` (the FSSAM release's test loop, replayed) and ``hsnet`` (HSNet's test loop, replayed).
They are registered in ``benchmark/episodes/__init__.py``."""
