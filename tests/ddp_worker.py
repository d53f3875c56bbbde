"""One rank of the data-parallel tests: ``torchrun --nproc-per-node 2 tests/ddp_worker.py OUT``.

Trains the runs of :data:`RUNS` (and an interrupted run resumed from a checkpoint) on the
problem of :func:`problem`, and saves each rank's history and weights in ``OUT``;
``tests/test_distributed.py`` compares them with one process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

N_CHANS, N_TIMES, SFREQ, N_CLASSES = 4, 128, 128.0, 3
# Shallow ConvNet without batch norm or dropout: data parallelism changes nothing but float
# rounding. EEGNet: batch norm over each process's share, and dropout masks of its own.
MODELS = {"plain": ("ShallowFBCSPNet", {"batch_norm": False, "drop_prob": 0.0}), "eegnet": ("EEGNet", {})}
TRAIN = {"batch_size": 16, "lr": 3e-3, "patience": 50, "seed": 3, "device": "cpu"}
EPOCHS = 4


def problem() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """61 training trials (batches of 16, 16, 16 and 13: a last batch shared 7 + 6) and 23
    validation trials; the class sets a sine's frequency, plus noise."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, N_CLASSES, 84)
    t = np.arange(N_TIMES) / SFREQ
    X = rng.standard_normal((84, N_CHANS, N_TIMES)).astype(np.float32)
    X[:, :2] += np.sin(2 * np.pi * (6 + 6 * y)[:, None, None] * t).astype(np.float32)
    return X[:61], y[:61], X[61:], y[61:]


def model(name: str) -> nn.Module:
    from eegtransfer.models import build_model

    torch.manual_seed(1)
    arch, kwargs = MODELS[name]
    return build_model(arch, N_CHANS, N_CLASSES, N_TIMES, SFREQ, **kwargs)


def fit(name: str, epochs: int = EPOCHS, **kw: Any) -> tuple[nn.Module, Any]:
    from eegtransfer.training import engine

    X, y, Xv, yv = problem()
    net = model(name)
    hist = engine.train(net, X, y, X_val=Xv, y_val=yv, epochs=epochs, **TRAIN, **kw)
    return net, hist


def main(out: Path) -> None:
    from eegtransfer.training import distributed, engine

    assert distributed.setup("cpu") and distributed.world_size() == 2
    rank = distributed.rank()
    writers: list[int] = []
    save = engine._save_checkpoint

    def spy(*a: Any, **k: Any) -> None:
        writers.append(rank)
        save(*a, **k)

    engine._save_checkpoint = spy
    for name in MODELS:
        net, hist = fit(name)
        torch.save({"history": hist.to_dict(), "state": net.state_dict()}, out / f"{name}.{rank}.pt")
    ckpt = out / "eegnet.ckpt"
    fit("eegnet", epochs=2, checkpoint=ckpt)  # interrupted after 2 epochs
    net, hist = fit("eegnet", checkpoint=ckpt)  # a fresh model, resumed from the checkpoint
    torch.save({"history": hist.to_dict(), "state": net.state_dict()}, out / f"resumed.{rank}.pt")
    # DDP's hooks leave with it: the same model trains on alone in this process afterwards
    X, y, _, _ = problem()
    engine.train(net, X, y, epochs=1, batch_size=16, patience=None, distributed=False)
    (out / f"writers.{rank}.json").write_text(json.dumps(writers))
    distributed.teardown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
