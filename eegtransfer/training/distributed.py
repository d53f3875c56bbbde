"""Data-parallel training under ``torchrun`` with :class:`torch.nn.parallel.DistributedDataParallel`.

``torchrun`` starts one process per share of the work and tells each its place
through the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``). :func:`setup` joins that process group (gloo on the CPU, NCCL on
CUDA, one GPU per process: ``cuda:LOCAL_RANK``); the engine
(:func:`eegtransfer.training.engine.train`) then wraps the model with :func:`wrap`
and gives each process its share of every global batch. Without ``torchrun``
(or with one process) nothing here is used and training runs as before.
"""

from __future__ import annotations

import atexit
import os

import torch
from torch import distributed as dist
from torch import nn


def launched_by_torchrun() -> bool:
    """Whether ``torchrun`` started this process as one of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def setup(device: str | torch.device = "auto") -> bool:
    """Join ``torchrun``'s process group, once; a no-op outside ``torchrun``.

    Parameters
    ----------
    device : str | torch.device
        The device asked for. When it may be CUDA (``"auto"``, ``"cuda"``) and a
        GPU is present, the process takes ``cuda:LOCAL_RANK`` and the NCCL backend;
        otherwise gloo, on the CPU.

    Returns
    -------
    joined : bool
        Whether a process group of more than one process is now in use.
    """
    if not launched_by_torchrun() or not dist.is_available():
        return False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and str(device).split(":")[0] in ("auto", "cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
        atexit.register(teardown)
    return world_size() > 1


def teardown() -> None:
    """Leave the process group (``destroy_process_group``), if this process is in one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    """Processes in the group; 1 without one."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the group; 0 without one."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes files and prints results."""
    return rank() == 0


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel`.

    Rank 0's weights and buffers are broadcast to every process now, gradients
    are averaged over processes at each ``backward()``, and buffers (batch-norm
    running statistics) are broadcast from rank 0 before each forward pass.
    """
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=None if ids is None else ids[0])


def broadcast_buffers(model: nn.Module) -> None:
    """Give every process rank 0's buffers (each rank's last forward pass updated its own)."""
    for buf in model.buffers():
        dist.broadcast(buf, 0)


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum ``values`` over processes (float64; one collective for the whole list)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    """Wait for every process (nothing to wait for without a group)."""
    if world_size() > 1:
        dist.barrier()
