"""Records: the only code that writes MLflow: cells (:mod:`benchmark.records.cells`), searches and
trials (:mod:`benchmark.records.search`) and trainings (:mod:`benchmark.records.training`), on top of
the tracking store (:mod:`benchmark.records.tracking`). Engines and jobs produce outcomes; records
write them."""
