"""The training engine shared by pretraining and adaptation.

Trials in memory go to the device once as tensors and minibatches are drawn
by indexing: no DataLoader, no per-batch collation. On CUDA it uses bf16
autocast and ``cudnn.benchmark``; when the data does not fit on the device it
stays in pinned host memory and batches move with ``non_blocking=True``.
Trials on disk (a ``np.memmap``, or a :class:`~eegtransfer.training.streaming.DiskTrials`
view of one) are never loaded whole: a background thread reads each batch's
rows from the file while the previous batch trains (:class:`_StreamBatcher`),
the same trials in the same order as from memory. Shuffling uses its own
seeded generator, so a seed gives bit-identical weights on the CPU.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import EEGTransferError
from .streaming import DiskTrials, is_on_disk

logger = logging.getLogger("eegtransfer")


DEVICE_TYPES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The one place a device name becomes a :class:`torch.device`.

    ``"auto"`` (or ``None``) picks cuda, then mps, then cpu. A CUDA device
    always comes back with its index (``"cuda"`` -> ``cuda:<current>``), so
    that devices compare equal to the ``tensor.device`` of data placed on them.

    Parameters
    ----------
    device : str | torch.device | None
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Returns
    -------
    device : torch.device
    """
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise EEGTransferError(
            f"device={str(device)!r} is not a device; choose from {', '.join(DEVICE_TYPES)} (or cuda:N)"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise EEGTransferError(f"device={str(device)!r} requested but no CUDA GPU is available; "
                                   "use 'auto' or 'cpu'")
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise EEGTransferError(f"device={str(device)!r}: this machine has "
                                   f"{torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise EEGTransferError(f"device={str(device)!r} requested but MPS is not available; use 'auto' or 'cpu'")
    if dev.type not in DEVICE_TYPES:
        raise EEGTransferError(f"device={str(device)!r} is not supported; choose from {', '.join(DEVICE_TYPES)}")
    return torch.device(dev.type) if dev.type != "cuda" else dev


def same_device(a: str | torch.device, b: str | torch.device) -> bool:
    """Whether two devices are the same, by type and index (``cuda`` is the current GPU)."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters (cpu for a model without any)."""
    param = next(model.parameters(), None)
    return torch.device("cpu") if param is None else param.device


def _cgroup_cpus() -> int | None:
    """CPUs allowed by a cgroup v2 quota (containers), or ``None`` without one."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, int(int(quota) // int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def available_cpus() -> int:
    """CPUs this process may use: affinity mask, capped by a cgroup quota."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_cpus()
    return max(1, min(n, quota) if quota else n)


def configure_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to the cores we are given, not more.

    Parameters
    ----------
    n : int | None
        Threads to use. ``None``: ``OMP_NUM_THREADS`` when set to a positive
        integer, else :func:`available_cpus` (the affinity mask, capped by a
        container's cgroup CPU quota; ``os.cpu_count()`` alone would count the
        host's cores and oversubscribe them).

    Returns
    -------
    n : int
        The number of threads now in use.
    """
    if n is None:
        env = os.environ.get("OMP_NUM_THREADS", "").strip()
        n = int(env) if env.isdigit() and int(env) > 0 else available_cpus()
    n = max(1, int(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class History:
    """Per-epoch losses and accuracies of one training run."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    compile_seconds: float | None = None  # the torch.compile of the step; None: ran eager

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "best_epoch": self.best_epoch,
                "seconds": self.seconds, "stopped_early": self.stopped_early}


def _to_tensor(a: np.ndarray | torch.Tensor, device: torch.device, dtype: torch.dtype,
               on_device: bool | None = None) -> torch.Tensor:
    """``a`` as a tensor on ``device``, or in pinned host memory when it does not fit.

    On CUDA the data goes to the GPU when it takes less than half the free
    memory (``on_device=None``), or as ``on_device`` says; otherwise it stays
    on the host, pinned, and batches are staged by :class:`_Batcher`.
    """
    t = torch.as_tensor(a, dtype=dtype)
    if device.type == "cuda":
        if on_device is None:
            free, _ = torch.cuda.mem_get_info(device)
            on_device = t.element_size() * t.nelement() < 0.5 * free
        return t.to(device) if on_device else t.cpu().pin_memory()
    return t.to(device)


def _placed(X: Any, y: Any, device: torch.device, on_device: bool | None,
            stream: bool | None) -> tuple[torch.Tensor | DiskTrials, torch.Tensor]:
    """Trials and labels where training reads them: tensors (:func:`_to_tensor`), or, when
    streamed, the trials left on disk as :class:`DiskTrials` and the labels on the host."""
    if is_on_disk(X) if stream is None else stream:
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        Xd = X if isinstance(X, DiskTrials) else DiskTrials(X)
        return Xd, _to_tensor(y, device, torch.long, on_device=False)
    Xt = _to_tensor(X, device, torch.float32, on_device)
    return Xt, _to_tensor(y, device, torch.long, same_device(Xt.device, device))


class _Batcher:
    """Minibatches of ``(X, y)`` by index, on ``device``.

    Data already on the device is indexed there. Host data (pinned, for a
    CUDA device) is gathered with ``index_select`` straight into one of two
    pinned staging buffers and copied with ``non_blocking=True``: indexing a
    pinned tensor the plain way gives pageable memory, whose copies block.
    A buffer is reused only after the copy that read it has finished.
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, device: torch.device, batch_size: int) -> None:
        self.X, self.y, self.device = X, y, device
        self.staged = device.type == "cuda" and not same_device(X.device, device)
        self.index_device = torch.device("cpu") if self.staged else X.device
        if self.staged:
            self.bufs = [(torch.empty((batch_size, *X.shape[1:]), dtype=X.dtype).pin_memory(),
                          torch.empty((batch_size,), dtype=y.dtype).pin_memory()) for _ in range(2)]
            self.events: list[torch.cuda.Event | None] = [None, None]
            self.turn = 0

    def __call__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.staged:
            idx = idx.to(self.X.device)
            return (self.X[idx].to(self.device, non_blocking=True),
                    self.y[idx].to(self.device, non_blocking=True))
        k, self.turn = self.turn, 1 - self.turn
        if self.events[k] is not None:
            self.events[k].synchronize()
        bx, by = (b[:len(idx)] for b in self.bufs[k])
        torch.index_select(self.X, 0, idx, out=bx)
        torch.index_select(self.y, 0, idx, out=by)
        xb, yb = bx.to(self.device, non_blocking=True), by.to(self.device, non_blocking=True)
        ev = torch.cuda.Event()
        ev.record()
        self.events[k] = ev
        return xb, yb

    def iterate(self, batches: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of these index tensors, in order."""
        return map(self, batches)


class _StreamBatcher:
    """Minibatches of ``(X, y)`` read from trials on disk, ``depth`` batches ahead of training.

    One background thread reads the rows of the coming batches
    (:meth:`DiskTrials.read`, which releases the GIL) into a ring of
    ``depth + 1`` host buffers, pinned on CUDA and copied with
    ``non_blocking=True``; the batch being trained is never overwritten, and
    on CUDA a buffer is refilled only after the copy that read it has finished.
    Host memory: the ring, whatever the number of trials.
    """

    index_device = torch.device("cpu")

    def __init__(self, X: DiskTrials, y: torch.Tensor, device: torch.device, batch_size: int,
                 depth: int = 2) -> None:
        self.X, self.y, self.device, self.depth = X, y, device, depth
        self.cuda = device.type == "cuda"
        self.bufs = [torch.empty((batch_size, *X.shape[1:]), dtype=torch.float32, pin_memory=self.cuda)
                     for _ in range(depth + 1)]
        self.events: list[torch.cuda.Event | None] = [None] * len(self.bufs)

    def _read(self, slot: int, idx: torch.Tensor) -> torch.Tensor:
        if self.events[slot] is not None:
            self.events[slot].synchronize()  # the copy that last read this buffer is done
        buf = self.bufs[slot][:len(idx)]
        self.X.read(idx.numpy(), out=buf.numpy())
        return buf

    def __call__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch, read now (into memory of its own, not the ring)."""
        xb = torch.from_numpy(self.X.read(idx.numpy()))
        return xb.to(self.device), self.y[idx].to(self.device)

    def iterate(self, batches: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of these index tensors, in order, read in the background."""
        slots = len(self.bufs)
        with ThreadPoolExecutor(1, thread_name_prefix="eegtransfer-read") as pool:
            ahead = deque(pool.submit(self._read, k % slots, batches[k])
                          for k in range(min(self.depth, len(batches))))
            for k, idx in enumerate(batches):
                buf = ahead.popleft().result()
                if k + self.depth < len(batches):  # into the slot of batch k - 1, trained by now
                    ahead.append(pool.submit(self._read, (k + self.depth) % slots, batches[k + self.depth]))
                xb = buf.to(self.device, non_blocking=True)
                yb = self.y[idx].to(self.device, non_blocking=True)
                if self.cuda:
                    self.events[k % slots] = torch.cuda.Event()
                    self.events[k % slots].record()
                yield xb, yb


def set_train_mode(model: nn.Module, trainable: set[str] | None) -> None:
    """Train mode from the first fully trainable block on; frozen blocks stay in eval.

    Frozen batch-norm layers must not update their running statistics, and a
    frozen trunk must give the same features at every epoch.
    """
    if trainable is None:
        model.train()
        return
    model.eval()
    on = False
    for cname, child in model.named_children():
        names = [f"{cname}.{n}" for n, _ in child.named_parameters()]
        if names and all(n in trainable for n in names):
            on = True
        if on:
            child.train()


def train(
    model: nn.Module,
    X: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    X_val: np.ndarray | torch.Tensor | None = None,
    y_val: np.ndarray | torch.Tensor | None = None,
    trainable: list[str] | None = None,
    epochs: int = 100,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    patience: int | None = 20,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = False,
    desc: str = "train",
    checkpoint: str | Path | None = None,
    data_on_device: bool | None = None,
    autotune: bool = False,
    fingerprint_extra: dict[str, Any] | None = None,
    monitor: str = "val_loss",
    distributed: bool = True,
    compile: bool | str = False,
    stream: bool | None = None,
) -> History:
    """Train ``model`` in place with cross-entropy, keeping the best epoch.

    Parameters
    ----------
    model : torch.nn.Module
        Maps (batch, ...) inputs to (batch, n_classes) logits.
    X : ndarray | np.memmap | DiskTrials, shape (n_trials, ...)
        Trials in memory, or on disk (see ``stream``).
    y : ndarray of int, shape (n_trials,)
    X_val, y_val : ndarray | np.memmap | DiskTrials | None
        Validation data for early stopping on validation loss; without it
        the last epoch is kept.
    trainable : list of str | None
        Parameter names to train; the others are frozen (``None``: all).
    epochs, batch_size, lr, weight_decay : training hyper-parameters (AdamW).
    patience : int | None
        Stop after this many epochs without a better validation score.
    monitor : {"val_loss", "val_acc"}
        The validation score that picks the kept epoch: the lowest loss, or the highest
        accuracy with ties to the lower loss. Accuracy suits pretraining on held-out subjects,
        whose loss can stay near ln(n_classes) while accuracy climbs (over-confident errors);
        loss suits a handful of calibration trials, where accuracy moves in large steps.
    device : str | torch.device
    seed : int
        Seeds dropout and the batch order (``torch.Generator(seed)``, one
        ``randperm`` per epoch).
    progress : bool
        Show a tqdm bar.
    desc : str
        Label of the progress bar and log lines.
    checkpoint : path | None
        If given, the training state (weights, optimiser, best weights, RNG
        states, epoch, history) is saved there after each epoch, and a run
        that finds it resumes after the last saved epoch: an interrupted run
        resumed with the same arguments ends with the same weights as an
        uninterrupted one. A checkpoint written by a different run (other
        model, hyper-parameters, training or validation data, or
        ``fingerprint_extra``) raises an error that names what differs. It is
        written atomically (flushed, then renamed): a crash never leaves a
        half-written checkpoint.
    data_on_device : bool | None
        CUDA only: keep the data on the GPU (``True``) or in pinned host
        memory with batches copied asynchronously (``False``). ``None``
        decides by free GPU memory.
    autotune : bool
        CUDA only: let cuDNN benchmark convolution algorithms
        (``cudnn.benchmark``) for this run. It pays for many large batches of
        one shape (pretraining) and costs seconds on a few small ones
        (adaptation), so it is off by default and restored afterwards.
    fingerprint_extra : dict | None
        JSON-able settings that the checkpoint must match besides the data and
        hyper-parameters (pretraining passes alignment, subjects, classes).
    distributed : bool
        Train data-parallel when this process is one of several in a
        ``torch.distributed`` process group (started by ``torchrun``, joined with
        :func:`eegtransfer.training.distributed.setup`); ``False`` trains here alone.
        Every process passes the same data and arguments; the model is wrapped in
        ``DistributedDataParallel`` and each process takes its contiguous share of every
        global batch of ``batch_size`` trials (same seeded order everywhere), so the
        averaged gradient is the one process's gradient up to float rounding, except
        that batch-norm layers normalise each process's share and dropout draws its
        own masks (seeded by seed, epoch and rank). Training and validation scores are
        summed over processes, so early stopping decides the same everywhere; only
        rank 0 writes the checkpoint and every rank resumes from it. A checkpoint
        resumed with another number of processes continues, but not bit for bit.
    compile : bool | {"auto", "on", "off"}
        Run the training forward and backward passes of full batches through
        ``torch.compile`` (the last, smaller batch of an epoch and validation stay eager, so one
        graph is compiled, not one per batch size). It is compiled before the first epoch on a
        full batch whose effects are undone (weights, batch-norm statistics, random state); if
        compilation fails (no C++ compiler, an unsupported operator) one warning is logged and
        training goes on eager. The model is never replaced: its state dict, the checkpoints and
        the returned model are the plain module's. ``"auto"`` compiles on the CPU only when the
        run is long enough for the compile time to pay (:func:`compile_pays`); on other devices
        it stays eager until measured. ``History.compile_seconds`` says what happened.
    stream : bool | None
        Leave the trials where they are and read each batch's rows as it is
        needed, a background thread reading the next batch while this one trains
        (:class:`~eegtransfer.training.streaming.DiskTrials`): host memory then
        holds a few batches, not the data set. ``None``: for trials on disk (a
        ``np.memmap`` or ``DiskTrials``, training and validation decided
        separately); ``True``: also for in-memory arrays. Batches hold the same
        trials in the same order either way, so the losses are the same.

    Returns
    -------
    history : History
        One record per epoch (losses, accuracies, ``seconds``). The model is
        left holding the weights of ``history.best_epoch``, in eval mode.
    """
    device = resolve_device(device)
    if monitor not in ("val_loss", "val_acc"):
        raise EEGTransferError(f"monitor= must be 'val_loss' or 'val_acc', got {monitor!r}")
    compile = _compile_mode(compile)
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = bool(autotune and device.type == "cuda")
    try:
        return _train(model, X, y, X_val=X_val, y_val=y_val, trainable=trainable, epochs=epochs,
                      batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
                      device=device, seed=seed, progress=progress, desc=desc, checkpoint=checkpoint,
                      data_on_device=data_on_device, fingerprint_extra=fingerprint_extra, monitor=monitor,
                      distributed=distributed, compile=compile, stream=stream)
    finally:
        torch.backends.cudnn.benchmark = previous


def _train(model: nn.Module, X: Any, y: Any, *, X_val: Any, y_val: Any, trainable: list[str] | None,
           epochs: int, batch_size: int, lr: float, weight_decay: float, patience: int | None,
           device: torch.device, seed: int, progress: bool, desc: str, checkpoint: str | Path | None,
           data_on_device: bool | None, fingerprint_extra: dict[str, Any] | None, monitor: str,
           distributed: bool, compile: str = "off", stream: bool | None = None) -> History:
    from . import distributed as ddp

    t0 = time.perf_counter()
    world = ddp.world_size() if distributed else 1
    rank = ddp.rank() if world > 1 else 0
    if batch_size < world:
        raise EEGTransferError(f"batch_size={batch_size} is smaller than the {world} processes sharing each batch")
    configure_threads()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    train_set = _set_trainable(model, trainable)
    opt = torch.optim.AdamW([p for n, p in model.named_parameters() if n in train_set], lr=lr,
                            weight_decay=weight_decay)
    Xt, yt = _placed(X, y, device, data_on_device, stream)
    if len(yt) == 0:
        raise EEGTransferError("no training trials")
    val = None
    if X_val is not None and y_val is not None and len(y_val) > 0:
        val = _placed(X_val, y_val, device, data_on_device, stream)
    batches = (_StreamBatcher(Xt, yt, device, batch_size) if isinstance(Xt, DiskTrials)
               else _Batcher(Xt, yt, device, batch_size))
    stop, hist, start = _EarlyStopping(patience if val is not None else None, monitor), History(), 0
    ckpt = Path(checkpoint) if checkpoint else None
    fingerprint = None if ckpt is None else {
        "params": [[k, list(p.shape)] for k, p in model.named_parameters()],
        "trainable": sorted(train_set), "n_train": len(yt), "n_val": 0 if val is None else len(y_val),
        "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed, "monitor": monitor,
        "data": {"train": data_digest(X, y), "val": None if val is None else data_digest(X_val, y_val)},
        "extra": json.loads(json.dumps(fingerprint_extra or {}, sort_keys=True, default=str)),
    }
    if ckpt is not None and ckpt.exists():
        stop.best_state, stop.best_loss, stop.bad, start, hist = _load_checkpoint(
            ckpt, fingerprint, model, opt, gen, device)
        logger.info("%s: resumed from %s at epoch %d", desc, ckpt, start)
        if hist.stopped_early:
            start = epochs  # it had already stopped: nothing left to train
    net = model if world == 1 else ddp.wrap(model, device)  # wrapping broadcasts rank 0's state
    compiled = None
    if compile == "on" or (compile == "auto" and compile_pays(
            tuple(Xt.shape), batch_size, epochs if val is None or patience is None else min(epochs, patience + 1),
            device)):
        if start < epochs and len(yt) >= batch_size:  # no full batch: nothing would run compiled
            compiled, hist.compile_seconds = _compile_step(
                net, model, batches, batch_size, device, world, rank,
                None if trainable is None else train_set, desc)

    from tqdm.auto import tqdm

    # disable=None: a bar on a terminal only, never a wall of carriage returns in a log
    bar = tqdm(range(start, epochs), desc=desc, disable=None if progress and rank == 0 else True, leave=False)
    for epoch in bar:
        te = time.perf_counter()
        if world > 1:  # each rank its own dropout masks, reproducible on resume
            torch.manual_seed(int(np.random.SeedSequence([seed % 2**63, epoch, rank]).generate_state(1)[0]))
        set_train_mode(model, None if trainable is None else train_set)
        rec = {"epoch": epoch, **_run_epoch(net, opt, batches, gen, batch_size, device, world, rank,
                                            compiled)}
        if world > 1:
            ddp.broadcast_buffers(model)  # every rank validates and keeps rank 0's batch-norm statistics
        if val is not None:
            rec["val_loss"], rec["val_acc"] = _validate(model, *val, device=device,
                                                        batch_size=max(batch_size, 256), world=world, rank=rank)
        if stop.update(rec.get("val_loss"), epoch, model, rec.get("val_acc")):
            hist.best_epoch = epoch
        hist.stopped_early = stop.should_stop()
        rec["seconds"] = time.perf_counter() - te
        hist.epochs.append(rec)
        bar.set_postfix({k: round(v, 3) for k, v in rec.items() if k != "epoch"})
        if ckpt is not None and rank == 0:
            _save_checkpoint(ckpt, model, opt, stop.best_state, stop.best_loss, stop.bad, epoch, hist, gen,
                             fingerprint, device)
        if hist.stopped_early:
            break
    del net, compiled
    if world > 1:
        ddp.barrier()  # rank 0's last checkpoint is written before any rank returns
    if val is not None and stop.best_state is not None:
        model.load_state_dict(stop.best_state)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    hist.seconds = time.perf_counter() - t0
    return hist


def _set_trainable(model: nn.Module, trainable: list[str] | None) -> set[str]:
    """Freeze every parameter not in ``trainable`` (``None``: train all); return the trained names."""
    names = [n for n, _ in model.named_parameters()]
    train_set = set(names) if trainable is None else set(trainable)
    unknown = train_set - set(names)
    if unknown:
        raise EEGTransferError(f"trainable parameter(s) not in the model: {sorted(unknown)}")
    if not train_set:
        raise EEGTransferError("nothing to train: the trainable parameter list is empty")
    for n, p in model.named_parameters():
        p.requires_grad_(n in train_set)
    return train_set


# torch.compile on the CPU, measured on 2 shared cores (load 4-7), one thread, batch 64, EEGNet and
# ShallowFBCSPNet (benchmarks/results/speed.md, README "Speed"): epochs 1.1-1.5x faster, i.e. 50-76 ns
# saved per input value (trial x channel x sample) of a full batch, for 16-40 s of compilation (up
# to 65 s seen under heavier load). "auto" compiles when 40 ns per value repays 60 s.
AUTO_COMPILE_SECONDS = 60.0
AUTO_SAVED_SECONDS_PER_VALUE = 40e-9
AUTO_MIN_VALUES = AUTO_COMPILE_SECONDS / AUTO_SAVED_SECONDS_PER_VALUE  # 1.5e9


def compile_pays(shape: tuple[int, ...], batch_size: int, epochs: int, device: str | torch.device) -> bool:
    """Whether ``compile="auto"`` compiles: the CPU rule, from this repository's measurements.

    On the CPU, when the full batches of ``epochs`` epochs carry at least
    :data:`AUTO_MIN_VALUES` (1.5e9) input values (``batch_size`` x channels x samples per
    batch): at the ~40 ns per value that compilation saved here, that saves more than the
    ~60 s it can take. Callers pass the fewest epochs the run can last (with early stopping,
    ``min(epochs, patience + 1)``), so it compiles only where it surely pays. The rule depends on
    shapes and settings only, never on timings, so a seed still gives the same weights and a
    resumed run compiles as the first did. On CUDA and MPS it says no: not measured yet.

    Parameters
    ----------
    shape : tuple of int
        Shape of the training data, ``(n_trials, ...)``.
    batch_size, epochs : int
    device : str | torch.device

    Returns
    -------
    pays : bool
    """
    if torch.device(device).type != "cpu" or not shape or batch_size < 1:
        return False
    per_trial = int(np.prod(shape[1:], dtype=np.int64))
    full_batches = int(shape[0]) // batch_size
    return epochs * full_batches * batch_size * per_trial >= AUTO_MIN_VALUES


def _compile_mode(compile: bool | str) -> str:
    """``compile=`` as one of "on", "off", "auto"."""
    if compile is True or compile is False:
        return "on" if compile else "off"
    value = str(compile).lower()
    if value in ("on", "true"):
        return "on"
    if value in ("off", "false", "none"):
        return "off"
    if value == "auto":
        return "auto"
    raise EEGTransferError(f"compile= must be True, False, 'auto', 'on' or 'off', got {compile!r}")


def _compile_step(net: nn.Module, model: nn.Module, batches: _Batcher | _StreamBatcher, batch_size: int,
                  device: torch.device, world: int, rank: int, trainable: set[str] | None, desc: str
                  ) -> tuple[nn.Module | None, float | None]:
    """``torch.compile(net)``, compiled now on one full batch; ``(None, None)`` when that fails.

    The forward and backward graphs are compiled by one training pass whose effects are undone:
    gradients are dropped, and the weights, batch-norm statistics and random state are restored,
    so the run then trains as an eager one would (up to the compiled kernels' rounding). Any
    failure (no C++ compiler, an operator dynamo cannot trace) is logged once as a warning and
    the run goes on eager.
    """
    t0 = time.perf_counter()
    state = _copy_state(model, None)
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    try:
        compiled = torch.compile(net, dynamic=False)  # one batch shape: the full batch
        set_train_mode(model, trainable)
        idx = torch.arange(batch_size)
        if world > 1:
            idx = idx.tensor_split(world)[rank]
        xb, yb = batches(idx)
        with autocast:
            loss = nn.functional.cross_entropy(compiled(xb).float(), yb)
        loss.backward()
    except Exception as err:  # noqa: BLE001 - whatever broke the compilation, eager still works
        first = (str(err).strip().splitlines() or [""])[0][:200]
        logger.warning("%s: torch.compile failed (%s: %s); training eager", desc, type(err).__name__, first)
        compiled = None
    finally:
        for p in model.parameters():
            p.grad = None
        model.load_state_dict(state)
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)
    if compiled is None:
        return None, None
    seconds = time.perf_counter() - t0
    logger.info("%s: compiled the training step in %.1f s", desc, seconds)
    return compiled, seconds


class _EarlyStopping:
    """Keep the weights of the epoch with the best validation score; stop after ``patience`` worse ones.

    The score is minimised: the loss, or for ``monitor="val_acc"`` minus the accuracy plus a
    ten-thousandth of the loss (ties go to the lower loss). Without validation
    (``patience=None`` and no loss given) the last epoch is the best.
    """

    def __init__(self, patience: int | None, monitor: str = "val_loss") -> None:
        self.patience, self.monitor = patience, monitor
        self.best_loss, self.best_state, self.bad = float("inf"), None, 0

    def update(self, val_loss: float | None, epoch: int, model: nn.Module, val_acc: float | None = None) -> bool:
        """Record an epoch; True when it is the best so far."""
        if val_loss is None:
            return True
        score = val_loss if self.monitor == "val_loss" else -float(val_acc) + 1e-4 * min(val_loss, 100.0)
        if score < self.best_loss - 1e-6:
            self.best_loss, self.bad = score, 0
            self.best_state = _copy_state(model, self.best_state)
            return True
        self.bad += 1
        return False

    def should_stop(self) -> bool:
        return self.patience is not None and self.bad >= self.patience


def _run_epoch(model: nn.Module, opt: torch.optim.Optimizer, batches: _Batcher | _StreamBatcher,
               gen: torch.Generator, batch_size: int, device: torch.device, world: int = 1, rank: int = 0,
               compiled: nn.Module | None = None) -> dict[str, float]:
    """One pass over shuffled minibatches: mean training loss and accuracy.

    ``compiled`` (``torch.compile(model)``), when given, runs the full batches; the
    last, smaller one runs eager.

    With ``world`` > 1 processes, ``model`` is wrapped in ``DistributedDataParallel``:
    this rank trains on its share of each global batch, with a loss scaled so that
    the gradient averaged over ranks is the mean over the whole global batch, and
    the scores are summed over ranks.
    """
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    n = len(batches.y)
    perm = torch.randperm(n, generator=gen).to(batches.index_device)
    # (global batch size, this rank's share of its indices), decided before reading any
    plan = [(len(idx), idx.tensor_split(world)[rank] if world > 1 else idx)
            for idx in perm.split(batch_size)
            if len(idx) >= 2 or n < 2]  # a batch of one breaks batch-norm
    # Sums stay on the device: one host sync per epoch, not two per batch.
    total = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    total_f, correct_f, seen = 0.0, 0, 0
    for (m, idx), (xb, yb) in zip(plan, batches.iterate([idx for _, idx in plan])):
        with autocast:
            out = (compiled if compiled is not None and m == batch_size else model)(xb)
            if world == 1:
                loss = nn.functional.cross_entropy(out.float(), yb)
            else:  # this share's summed loss * world / m: DDP's mean over ranks is the global batch's mean
                loss = nn.functional.cross_entropy(out.float(), yb, reduction="sum") * (world / m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # the summed loss of this share: loss * m / world
            if cuda:  # no host sync per batch
                total += loss.detach() * (m / world)
                correct += (out.argmax(1) == yb).sum()
            else:  # on the CPU a float is cheaper than a tensor op
                total_f += float(loss) * m / world
                correct_f += int((out.argmax(1) == yb).sum())
        seen += len(idx)
    sums = [float(total) + total_f, float(int(correct) + correct_f), float(seen)]
    if world > 1:
        from .distributed import all_sum

        sums = all_sum(sums, device)
    return {"train_loss": sums[0] / max(sums[2], 1), "train_acc": sums[1] / max(sums[2], 1)}


def data_digest(X: Any, y: Any, *, full_below: int = 1 << 26, n_blocks: int = 1024,
                block: int = 1 << 16) -> str:
    """A cheap, stable SHA-256 of trials and labels: shapes, dtypes and (a strided sample of) bytes.

    ``X`` is digested as float32 and ``y`` as int64, whatever they came as.
    Up to ``full_below`` bytes are hashed whole; beyond, ``n_blocks`` blocks
    of ``block`` bytes evenly spread over the array (a checkpoint of a
    multi-gigabyte population must not cost a full read at every start).
    """
    h = hashlib.sha256()
    for a, dtype in ((X, np.float32), (y, np.int64)):
        if isinstance(a, DiskTrials):  # the same bytes as in memory, read a piece at a time
            size, piece = a.nbytes, a.flat_bytes
            h.update(f"{np.dtype(dtype).str}{a.shape};".encode())
        else:
            if isinstance(a, torch.Tensor):
                a = a.detach().cpu().numpy()
            a = np.ascontiguousarray(np.asarray(a, dtype=dtype))  # no copy for a float32 memmap
            h.update(f"{a.dtype.str}{a.shape};".encode())
            raw = a.reshape(-1).view(np.uint8)
            size, piece = raw.size, (lambda lo, hi, raw=raw: raw[lo:hi].data)
        if size <= full_below:
            for lo in range(0, size, 1 << 24):
                h.update(piece(lo, min(size, lo + (1 << 24))))
            continue
        step = (size - block) // (n_blocks - 1)
        for i in range(n_blocks):
            h.update(piece(i * step, i * step + block))
    return h.hexdigest()


_FINGERPRINT_NAMES = {"params": "the model's parameters", "trainable": "the trainable parameters",
                      "data.train": "the training data (X, y)", "data.val": "the validation data"}


def _fingerprint_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, by name, with values where they are short."""
    def flat(fp: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in fp.items():
            if k == "data" and isinstance(v, dict):
                out.update({f"data.{kk}": vv for kk, vv in v.items()})
            elif k == "extra" and isinstance(v, dict):  # the caller's settings, by their own names
                out.update(v)
            else:
                out[k] = v
        return out

    a, b = flat(old), flat(new)
    diffs = []
    for k in sorted(set(a) | set(b), key=lambda k: (k in _FINGERPRINT_NAMES, k)):
        if a.get(k, "<absent>") == b.get(k, "<absent>"):
            continue
        if k in _FINGERPRINT_NAMES:
            diffs.append(_FINGERPRINT_NAMES[k])
        else:
            was, now = repr(a.get(k, "<absent>")), repr(b.get(k, "<absent>"))
            short = len(was) + len(now) < 120
            diffs.append(f"{k} (checkpoint {was}, now {now})" if short else k)
    return diffs


def _load_checkpoint(ckpt: Path, fingerprint: dict[str, Any], model: nn.Module,
                     opt: torch.optim.Optimizer, gen: torch.Generator, device: torch.device
                     ) -> tuple[Any, float, int, int, History]:
    """Restore a run from ``ckpt`` after checking it is this run; the loop's state."""
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise EEGTransferError(f"checkpoint {ckpt} is unreadable ({type(err).__name__}: "
                               f"{str(err).splitlines()[0][:100]}); delete it or give another path") from None
    old = state.get("fingerprint") if isinstance(state, dict) else None
    if old != fingerprint:
        diffs = _fingerprint_diff(old or {}, fingerprint)
        raise EEGTransferError(
            f"checkpoint {ckpt} was written by a different training run ({'; '.join(diffs)} differ); "
            "delete it or give another checkpoint path")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    best = None if state["best"] is None else {k: v.to(device) for k, v in state["best"].items()}
    hist = History(**{**state["history"], "seconds": 0.0})
    gen.set_state(state["gen"])
    torch.set_rng_state(state["rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return best, state["best_loss"], state["bad"], state["epoch"] + 1, hist


def _copy_state(model: nn.Module, into: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """Copy the model's state into ``into`` in place (allocated once), on the model's device."""
    state = model.state_dict()
    if into is None or into.keys() != state.keys():
        return {k: v.detach().clone() for k, v in state.items()}
    with torch.no_grad():
        for k, v in state.items():
            into[k].copy_(v)
    return into


def _save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, best: Any,
                     best_loss: float, bad: int, epoch: int, hist: History,
                     gen: torch.Generator, fingerprint: dict[str, Any], device: torch.device) -> None:
    """Write the training state atomically (a flushed temporary file, then a rename)."""
    from ..bundle import write_file_atomic

    buf = io.BytesIO()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "best": best,
                "best_loss": best_loss, "bad": bad, "epoch": epoch,
                "history": {"epochs": hist.epochs, "best_epoch": hist.best_epoch,
                            "stopped_early": hist.stopped_early},
                "gen": gen.get_state(), "rng": torch.get_rng_state(), "cuda_rng": cuda_rng,
                "fingerprint": fingerprint}, buf)
    write_file_atomic(path, buf.getvalue())


def predict_logits(model: nn.Module, X: np.ndarray | torch.Tensor, *,
                   device: str | torch.device | None = None, batch_size: int = 256) -> np.ndarray:
    """Logits of ``model`` in eval mode, shape (n_trials, n_classes).

    ``device=None`` runs where the model already is; another device moves the model there.
    """
    device = model_device(model) if device is None else resolve_device(device)
    if not same_device(model_device(model), device):
        model.to(device)
    model.eval()
    Xt = torch.as_tensor(X, dtype=torch.float32)
    outs = []
    with torch.inference_mode():
        for i in range(0, len(Xt), batch_size):
            outs.append(model(Xt[i:i + batch_size].to(device, non_blocking=True)).float())
    if not outs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outs).cpu().numpy()  # one device-to-host copy


def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *,
             device: torch.device, batch_size: int = 256) -> tuple[float, float]:
    """Mean cross-entropy and accuracy, in eval mode (restores the caller's modes).

    On CUDA it runs under the same bf16 autocast as training; the sums stay
    on the device until the end (one host sync).
    """
    total, correct = _eval_sums(model, X, y, device=torch.device(device), batch_size=batch_size)
    return total / len(y), correct / len(y)


def _validate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, device: torch.device, batch_size: int,
              world: int, rank: int) -> tuple[float, float]:
    """:func:`evaluate`; with ``world`` > 1, each rank scores its contiguous share and the sums are added."""
    if world == 1:
        return evaluate(model, X, y, device=device, batch_size=batch_size)
    from .distributed import all_sum

    share = torch.arange(len(y)).tensor_split(world)[rank]
    lo, hi = (int(share[0]), int(share[-1]) + 1) if len(share) else (0, 0)
    Xs = X.subset(np.arange(lo, hi)) if isinstance(X, DiskTrials) else X[lo:hi]
    total, correct = _eval_sums(model, Xs, y[lo:hi], device=device, batch_size=batch_size)
    total, correct, n = all_sum([total, float(correct), float(hi - lo)], device)
    return total / n, correct / n


def _eval_sums(model: nn.Module, X: torch.Tensor | DiskTrials, y: torch.Tensor, *, device: torch.device,
               batch_size: int) -> tuple[float, int]:
    """Summed cross-entropy and number of correct predictions, in eval mode (restores the modes).

    Trials on disk (:class:`DiskTrials`) are read in order, a batch ahead, like training batches.
    """
    modes = {m: m.training for m in model.modules()}
    model.eval()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    total = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    if isinstance(X, DiskTrials):
        batches = _StreamBatcher(X, y, device, batch_size).iterate(list(torch.arange(len(y)).split(batch_size)))
    else:
        batches = ((X[i:i + batch_size].to(device, non_blocking=True),
                    y[i:i + batch_size].to(device, non_blocking=True)) for i in range(0, len(y), batch_size))
    with torch.inference_mode(), autocast:
        for xb, yb in batches:
            out = model(xb).float()
            total += nn.functional.cross_entropy(out, yb, reduction="sum")
            correct += (out.argmax(1) == yb).sum()
    for m, mode in modes.items():
        m.training = mode
    return float(total), int(correct)


def head_inputs(model: nn.Module, X: np.ndarray | torch.Tensor, head: str = "final_layer", *,
                device: str | torch.device | None = None, batch_size: int = 256) -> torch.Tensor:
    """The frozen trunk's output: what ``model.<head>`` receives, in eval mode.

    Head-only adaptation trains on these cached features, so the trunk runs
    once instead of once per epoch. The result stays on the model's device
    and is an ordinary tensor (not an inference-mode one), so it can be trained on.
    """
    return module_inputs(model, X, [head], device=device, batch_size=batch_size)[0][0]


def module_inputs(model: nn.Module, X: np.ndarray | torch.Tensor, names: list[str], *,
                  device: str | torch.device | None = None, batch_size: int = 256
                  ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """What each named module receives (its first input) in one eval-mode pass, and the model's logits.

    Returns ``(inputs, logits)``: ``inputs[j]`` stacks, over the trials, the input of ``names[j]``
    (a module must run once per forward pass); ``logits`` is the model's output for the same
    pass, float32. All stay on the model's device as ordinary tensors (not inference-mode ones),
    so they can be trained on.
    """
    modules = dict(model.named_modules())
    seen: list[list[torch.Tensor]] = [[] for _ in names]
    hooks = [modules[n].register_forward_hook(lambda m, inp, out, j=j: seen[j].append(inp[0].detach().float()))
             for j, n in enumerate(names)]
    logits = []

    def keep(m: nn.Module, inp: Any, out: torch.Tensor) -> None:
        logits.append(out.detach().float())

    hooks.append(model.register_forward_hook(keep))
    try:
        predict_logits(model, X, device=device, batch_size=batch_size)
    finally:
        for h in hooks:
            h.remove()
    if any(len(s) != len(logits) for s in seen):
        raise EEGTransferError(f"modules {names} did not each run once per forward pass of {type(model).__name__}")
    return ([torch.cat(s).clone() if s else torch.zeros(0) for s in seen],
            torch.cat(logits).clone() if logits else torch.zeros(0))
