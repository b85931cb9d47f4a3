"""``fssbench train``: episodic fine-tuning of FSSAM or naive SAM 2 on a fold's base classes, one CPU
to many GPUs (``torchrun``), resumable bit for bit, tracked in MLflow.

One iteration: the global batch ``g`` of the epoch (see :mod:`benchmark.jobs.train.data`), split over
the processes and built by ``train.workers`` background processes; forward through the
(DistributedDataParallel-wrapped) model, Dice loss, backward (DDP all-reduces and averages the
gradients), poly learning rate (the authors' ``current_iter = i + 1``), AdamW step. Only the method's
trainable modules train (for FSSAM and naive SAM 2: SAM 2's mask decoder, memory encoder and memory
attention); everything else is frozen (checked at start).

Process 0 validates (the cell function on a validation manifest: the fold's base classes on the
val split) at the cadence of ``val.every``
(:func:`~benchmark.jobs.train.validation.validation_due`; by default the authors': every epoch's end,
plus mid-epoch), keeps the best weights (``best.pth``, a fine-tuned checkpoint that
``fssbench run`` takes as ``finetuned_checkpoint``), writes the resumable state (``train-state.pt``:
trainable weights, optimizer, iteration, best value, every process's RNG states) atomically every
``checkpoint_every`` iterations, and logs to MLflow. The other processes wait for the validation
in a collective, up to ``train.dist_timeout_s``.

Every tensor of a collective lives on the model's device
(:class:`~benchmark.jobs.train.distributed.Collectives`): under ``torchrun`` on GPUs the process
group is NCCL, which serves CUDA tensors only.

The trainer names no method: what trains, how the weights are saved and exported comes from the
method's :class:`~benchmark.methods.registry.Trainable` capability (``MethodEntry.trainable``).

The package, in the order a training runs: :mod:`.job` (the :class:`~.job.Trainer`: set-up, resume,
the outcome), :mod:`.data` (the training episodes and their loader), :mod:`.distributed` (the
process group and the collectives), :mod:`.loop` (one iteration, the validation cadence and
patience, checkpoints), :mod:`.validation` (the validation manifest and scoring), :mod:`.state`
(the resumable state) and :mod:`.export` (the authors' layout). Its MLflow run is written by
:class:`benchmark.records.training.TrainingRecords`.
"""
