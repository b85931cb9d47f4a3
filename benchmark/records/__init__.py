"""Records: the code that writes MLflow for cells (:mod:`benchmark.records.cells`) on top of the
tracking store (:mod:`benchmark.records.tracking`). Engines produce outcomes; records write them."""
