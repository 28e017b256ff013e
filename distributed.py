"""Multi-GPU and multi-node runs under torchrun: process group, rank checks, broadcasts, batch sharding.

A script started by `torchrun --nproc_per_node N script.py ...` finds WORLD_SIZE, RANK and LOCAL_RANK
in its environment; a script started with plain `python` is a world of one, and every function here is
then a no-op. NCCL is used on GPUs, gloo on the CPU.
"""

import os

import torch
import torch.distributed as dist


def world_size():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank():
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process():
    """Only the main process writes files: results, predictions, weights, checkpoints, the model."""
    return rank() == 0


def init_distributed(use_cuda):
    """Join the torchrun process group when there is one; returns this process's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return torch.device("cuda" if use_cuda else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def broadcast_from_main(value):
    """The main process's `value` (any picklable object), on every process."""
    if world_size() == 1:
        return value
    holder = [value if is_main_process() else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def check_identical(value, what):
    """Fail loudly if `value` (picklable) differs between processes: they must train the same model."""
    if world_size() == 1:
        return
    values = [None] * world_size()
    dist.all_gather_object(values, value)
    if any(other != values[0] for other in values[1:]):
        raise RuntimeError(f"{what} differ between processes: {values}")


def broadcast_parameters(module):
    """Copy the main process's parameters of `module` to every process (in place)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for parameter in module.parameters():
            dist.broadcast(parameter.data, src=0)


def shard_batches(batches):
    """This process's share of one epoch's batches: every world_size-th one, from its rank on.

    Every process gets the same number of batches (the list is cycled to a multiple of the world size), so
    the gradient all-reduce of each step always finds every process.
    """
    size = world_size()
    if size == 1 or not batches:
        return batches
    padded = batches + batches[: (-len(batches)) % size]
    return padded[rank() :: size]


def wrap_for_training(model, device):
    """DistributedDataParallel in a multi-process run, else the model itself.

    Each step goes through one task's head, so the other heads get no gradient: DDP must be told
    (find_unused_parameters=True) or it waits for them forever.
    """
    if world_size() == 1:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def close():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
