"""The training engine shared by pretraining and adaptation.

Trials already sit in memory as arrays, so they go to the device once as
tensors and minibatches are drawn by indexing: no DataLoader, no per-batch
collation. On CUDA it uses bf16 autocast and ``cudnn.benchmark``; when the
data does not fit on the device it stays in pinned host memory and batches
move with ``non_blocking=True``. Shuffling uses its own seeded generator, so
a seed gives bit-identical weights on the CPU.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import EEGTransferError

logger = logging.getLogger("eegtransfer")


def select_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; other values are checked."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EEGTransferError("device='cuda' requested but no CUDA GPU is available; use 'auto' or 'cpu'")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise EEGTransferError("device='mps' requested but MPS is not available; use 'auto' or 'cpu'")
    return dev


def configure_threads(n: int | None = None) -> None:
    """Use the cores we are given (``OMP_NUM_THREADS`` wins), not more."""
    if n is None:
        env = os.environ.get("OMP_NUM_THREADS")
        n = int(env) if env else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(max(1, n))


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

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "best_epoch": self.best_epoch,
                "seconds": self.seconds, "stopped_early": self.stopped_early}


def _to_tensor(a: np.ndarray | torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    t = torch.as_tensor(a, dtype=dtype)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if t.element_size() * t.nelement() < 0.5 * free:
            return t.to(device)
        return t.pin_memory()
    return t.to(device)


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
) -> History:
    """Train ``model`` in place with cross-entropy, keeping the best epoch.

    Parameters
    ----------
    model : torch.nn.Module
        Maps (batch, ...) inputs to (batch, n_classes) logits.
    X : ndarray, shape (n_trials, ...)
    y : ndarray of int, shape (n_trials,)
    X_val, y_val : ndarray | None
        Validation data for early stopping on validation loss; without it
        the last epoch is kept.
    trainable : list of str | None
        Parameter names to train; the others are frozen (``None``: all).
    epochs, batch_size, lr, weight_decay : training hyper-parameters (AdamW).
    patience : int | None
        Stop after this many epochs without a better validation loss.
    device : str | torch.device
    seed : int
        Seeds dropout and the batch order.
    checkpoint : path | None
        If given, training state is saved there after each epoch and a run
        that finds it resumes where it stopped.

    Returns
    -------
    history : History
        The model is left holding the weights of ``history.best_epoch``.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    configure_threads()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    all_names = [n for n, _ in model.named_parameters()]
    train_set = set(all_names) if trainable is None else set(trainable)
    unknown = train_set - set(all_names)
    if unknown:
        raise EEGTransferError(f"trainable parameter(s) not in the model: {sorted(unknown)}")
    for n, p in model.named_parameters():
        p.requires_grad_(n in train_set)
    params = [p for n, p in model.named_parameters() if n in train_set]
    if not params:
        raise EEGTransferError("nothing to train: the trainable parameter list is empty")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    Xt, yt = _to_tensor(X, device, torch.float32), _to_tensor(y, device, torch.long)
    n = len(yt)
    if n == 0:
        raise EEGTransferError("no training trials")
    has_val = X_val is not None and y_val is not None and len(y_val) > 0
    if has_val:
        Xv, yv = _to_tensor(X_val, device, torch.float32), _to_tensor(y_val, device, torch.long)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else nullcontext())
    loss_fn = nn.CrossEntropyLoss()
    hist = History()
    best_loss, best_state, bad, start = float("inf"), None, 0, 0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        best_state = state["best"]
        best_loss, bad, start = state["best_loss"], state["bad"], state["epoch"] + 1
        hist = History(**{**state["history"], "seconds": 0.0})
        gen.set_state(state["gen"])
        torch.set_rng_state(state["rng"])
        logger.info("%s: resumed from %s at epoch %d", desc, ckpt, start)

    from tqdm.auto import tqdm

    bar = tqdm(range(start, epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        set_train_mode(model, None if trainable is None else train_set)
        perm = torch.randperm(n, generator=gen)
        total, correct = 0.0, 0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            if len(idx) < 2 and n >= 2:  # a batch of one breaks batch-norm
                continue
            xb = Xt[idx.to(Xt.device)].to(device, non_blocking=True)
            yb = yt[idx.to(yt.device)].to(device, non_blocking=True)
            with autocast:
                out = model(xb)
                loss = loss_fn(out.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == yb).sum())
        rec = {"epoch": epoch, "train_loss": total / n, "train_acc": correct / n}
        if has_val:
            vl, va = evaluate(model, Xv, yv, device=device, batch_size=max(batch_size, 256))
            rec.update(val_loss=vl, val_acc=va)
            if vl < best_loss - 1e-6:
                best_loss, bad = vl, 0
                best_state = copy.deepcopy(model.state_dict())
                hist.best_epoch = epoch
            else:
                bad += 1
        else:
            hist.best_epoch = epoch
        hist.epochs.append(rec)
        bar.set_postfix({k: round(v, 3) for k, v in rec.items() if k != "epoch"})
        if ckpt is not None:
            _save_checkpoint(ckpt, model, opt, best_state, best_loss, bad, epoch, hist, gen)
        if has_val and patience is not None and bad >= patience:
            hist.stopped_early = True
            break
    if has_val and best_state is not None:
        model.load_state_dict(best_state)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    hist.seconds = time.perf_counter() - t0
    return hist


def _save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, best: Any,
                     best_loss: float, bad: int, epoch: int, hist: History,
                     gen: torch.Generator) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "best": best,
                "best_loss": best_loss, "bad": bad, "epoch": epoch,
                "history": {"epochs": hist.epochs, "best_epoch": hist.best_epoch,
                            "stopped_early": hist.stopped_early},
                "gen": gen.get_state(), "rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def predict_logits(model: nn.Module, X: np.ndarray | torch.Tensor, *,
                   device: str | torch.device = "cpu", batch_size: int = 256) -> np.ndarray:
    """Logits of ``model`` in eval mode, shape (n_trials, n_classes)."""
    device = torch.device(device)
    model.to(device).eval()
    Xt = torch.as_tensor(X, dtype=torch.float32)
    outs = []
    for i in range(0, len(Xt), batch_size):
        outs.append(model(Xt[i:i + batch_size].to(device)).float().cpu())
    if not outs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outs).numpy()


@torch.no_grad()
def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *,
             device: torch.device, batch_size: int = 256) -> tuple[float, float]:
    """Mean cross-entropy and accuracy, in eval mode (restores the caller's modes)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    total, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        xb = X[i:i + batch_size].to(device, non_blocking=True)
        yb = y[i:i + batch_size].to(device, non_blocking=True)
        out = model(xb).float()
        total += float(nn.functional.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(1) == yb).sum())
    for m, mode in modes.items():
        m.training = mode
    return total / len(y), correct / len(y)


@torch.no_grad()
def head_inputs(model: nn.Module, X: np.ndarray | torch.Tensor, head: str = "final_layer", *,
                device: str | torch.device = "cpu", batch_size: int = 256) -> torch.Tensor:
    """The frozen trunk's output: what ``model.<head>`` receives, in eval mode.

    Head-only adaptation trains on these cached features, so the trunk runs
    once instead of once per epoch.
    """
    device = torch.device(device)
    module = dict(model.named_modules())[head]
    feats: list[torch.Tensor] = []
    hook = module.register_forward_hook(lambda m, inp, out: feats.append(inp[0].detach().float().cpu()))
    try:
        predict_logits(model, X, device=device, batch_size=batch_size)
    finally:
        hook.remove()
    return torch.cat(feats) if feats else torch.zeros(0)
