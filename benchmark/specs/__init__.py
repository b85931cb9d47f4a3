"""The files a user writes: study (:mod:`.study`), search (:mod:`.search`) and training
(:mod:`.train`) files, each a pydantic v2 schema validated before any work.

The field types the three share (numbers, choices, data roots, checkpoints, the unknown-key check
with its closest-name suggestion) live in :mod:`.fields`; turning a schema's first error into the
one-line message that names the file, the field and the value (or the command-line override that
set it) lives in :mod:`.errors`; ``key=value`` overrides in :mod:`.overrides`. Importing this
package imports neither torch nor MLflow: a bad file fails before any work.
"""
