"""Process bodies for the training tests' ``torch.multiprocessing.spawn`` (a small module: each
spawned process imports it, not a whole test module)."""

from __future__ import annotations

import torch


def collectives_worker(rank: int, port: int, init_file: str, out: str) -> None:
    import os

    from benchmark.jobs.train.distributed import Collectives, init_distributed

    # NCCL's restriction, on CPUs: gloo registered for CUDA tensors only refuses a CPU tensor, as
    # NCCL does (the trainer's validation broadcast used to send torch.zeros(1) on the CPU)
    torch.distributed.init_process_group(
        "cuda:gloo", init_method=f"file://{init_file}", rank=rank, world_size=2
    )
    try:
        torch.distributed.broadcast(torch.zeros(1), 0)
        refused = ""
    except RuntimeError as e:
        refused = str(e).splitlines()[0]
    torch.distributed.destroy_process_group()
    # the trainer's own group (gloo for CPU tensors only) and collectives
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    init_distributed(torch.device("cpu"), 1234)
    timeout = torch.distributed.group.WORLD._get_backend(torch.device("cpu")).options._timeout
    coll = Collectives(torch.device("cpu"), 2)
    value = coll.broadcast(torch.tensor([0.4375 if rank == 0 else -1.0], dtype=torch.float64), 0)
    mean = coll.mean(torch.tensor([1.0 + 2 * rank, -rank]))
    gathered = coll.gather_objects({"rank": rank})
    torch.distributed.destroy_process_group()
    torch.save(
        {"refused": refused, "timeout": timeout, "value": value, "mean": mean, "gathered": gathered},
        f"{out}/rank{rank}.pt",
    )
