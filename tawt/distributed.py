"""Multi-GPU and multi-node runs under torchrun: process group, rank checks, broadcasts, batch sharding.

A script started by `torchrun --nproc_per_node N script.py ...` finds WORLD_SIZE, RANK and LOCAL_RANK
in its environment; a script started with plain `python` is a world of one, and every function here is
then a no-op. NCCL is used on GPUs, gloo on the CPU.
"""

import datetime
import os
import sys

import torch
import torch.distributed as dist

from tawt.errors import UsageError


def world_size():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank():
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process():
    """Only the main process writes files: results, predictions, weights, checkpoints, the model."""
    return rank() == 0


# How long a process started without torchrun waits for the others of the WORLD_SIZE its environment names:
# a WORLD_SIZE left in a shell would otherwise keep a plain run waiting silently for a process never started.
RENDEZVOUS_SECONDS = 120
STALE_ENVIRONMENT_FIX = ("for a run on its own, unset WORLD_SIZE RANK LOCAL_RANK MASTER_ADDR MASTER_PORT; for several "
                         "processes, start them with torchrun")


def _environment_number(name, default, smallest):
    value = os.environ.get(name, default)
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < smallest:
        raise UsageError(f"{name}={value!r} in the environment: not a whole number >= {smallest}; "
                         f"{STALE_ENVIRONMENT_FIX}")
    return number


def init_distributed(use_cuda):
    """Join the torchrun process group when there is one; returns this process's device."""
    world = _environment_number("WORLD_SIZE", "1", 1)
    if world == 1:
        return torch.device("cuda" if use_cuda else "cpu")
    process_rank = _environment_number("RANK", "0", 0)
    local_rank = _environment_number("LOCAL_RANK", "0", 0)
    if process_rank >= world:
        raise UsageError(f"RANK={process_rank} in the environment, but WORLD_SIZE={world}; {STALE_ENVIRONMENT_FIX}")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":  # torchrun's agent has met every process
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(backend=backend, store=_rendezvous(world, process_rank), rank=process_rank,
                                    world_size=world)
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def _rendezvous(world, process_rank):
    """Meet the other processes at MASTER_ADDR:MASTER_PORT, waiting RENDEZVOUS_SECONDS at most (saying so)."""
    address, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not address or not port:
        missing = " and ".join(name for name, value in (("MASTER_ADDR", address), ("MASTER_PORT", port)) if not value)
        raise UsageError(f"WORLD_SIZE={world} in the environment, but no {missing}; {STALE_ENVIRONMENT_FIX}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"MASTER_PORT={port!r} in the environment: not a port number; {STALE_ENVIRONMENT_FIX}")
    print(f"WORLD_SIZE={world} RANK={process_rank} in the environment, without torchrun: waiting up to "
          f"{RENDEZVOUS_SECONDS} s for the other {world - 1} process(es) at {address}:{port} ({STALE_ENVIRONMENT_FIX})",
          file=sys.stderr, flush=True)
    try:
        store = dist.TCPStore(address, int(port), world, process_rank == 0,
                              timeout=datetime.timedelta(seconds=RENDEZVOUS_SECONDS), wait_for_workers=True)
    except (RuntimeError, OSError) as error:  # torch's DistError: a timeout, an address in use or unreachable
        raise UsageError(f"WORLD_SIZE={world} RANK={process_rank}: the {world} processes did not all meet at "
                         f"{address}:{port} within {RENDEZVOUS_SECONDS} s ({str(error).splitlines()[0]}); "
                         f"{STALE_ENVIRONMENT_FIX}") from None
    # The training's own collectives keep torch's default timeout: the others may wait long for the main process.
    store.set_timeout(datetime.timedelta(minutes=30))
    return store


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
