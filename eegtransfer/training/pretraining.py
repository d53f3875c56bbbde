"""Population pretraining: one braindecode model trained on many subjects.

Validation is split **by subject**, so early stopping measures what we care
about, generalisation to people the model has not seen.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from ..bundle import Bundle, package_versions
from ..errors import EEGTransferError
from ..logs import verbose
from ..preprocessing import Recipe

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

logger = logging.getLogger("eegtransfer")


def split_by_subject(subjects: np.ndarray, *, val_fraction: float = 0.2,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, val) that put whole subjects in validation.

    At least one subject goes to validation when there are two or more;
    with a single subject, validation is empty.
    """
    subjects = np.asarray(subjects).astype(str)
    uniq = np.unique(subjects)
    if len(uniq) < 2 or val_fraction <= 0:
        return np.ones(len(subjects), bool), np.zeros(len(subjects), bool)
    n_val = min(len(uniq) - 1, max(1, int(round(val_fraction * len(uniq)))))
    rng = np.random.default_rng(seed)
    val_subj = rng.choice(uniq, size=n_val, replace=False)
    val = np.isin(subjects, val_subj)
    return ~val, val


def scale_lr(lr: float, batch_size: int, base_batch_size: int = 64) -> float:
    """The learning rate for a larger (or smaller) batch: square-root scaling, for AdamW.

    ``lr * sqrt(batch_size / base_batch_size)``: a rule of thumb for adaptive optimisers
    (Malladi et al., 2022, "On the SDEs and scaling rules for adaptive gradient algorithms";
    Hoffer et al., 2017), where SGD's linear rule (Goyal et al., 2017) over-shoots. ``pretrain``'s
    defaults (lr 3e-3 at batch 64) give 6e-3 at 256 and 1.2e-2 at 1024. Not validated here on
    large GPU batches (no GPU was lent); beyond ~8x the base batch, check the validation curve.

    Parameters
    ----------
    lr : float
        Learning rate tuned at ``base_batch_size``.
    batch_size, base_batch_size : int

    Returns
    -------
    lr : float
    """
    if batch_size < 1 or base_batch_size < 1:
        raise EEGTransferError(f"batch sizes must be >= 1, got {batch_size} and {base_batch_size}")
    return float(lr) * (batch_size / base_batch_size) ** 0.5


def _resume_settings(model: str, model_kwargs: dict[str, Any] | None, classes: list[str], align: bool,
                     subjects: np.ndarray, val: np.ndarray, val_fraction: float) -> dict[str, Any]:
    """What a checkpoint must match besides the data: a resumed run is refused when any differs.

    The data digest alone would catch most of these, but not name them.
    """
    return {"model": model, "model_kwargs": dict(model_kwargs or {}), "classes": list(classes),
            "align": bool(align), "subjects": sorted(np.unique(subjects).tolist()),
            "validation_subjects": sorted(np.unique(subjects[val]).tolist()),
            "val_fraction": float(val_fraction)}


def chance_test(accuracy: float | None, y_val: np.ndarray, n_classes: int) -> dict[str, float | None]:
    """Chance level of a validation set and a one-sided binomial test of ``accuracy`` against it.

    Chance is the larger of ``1 / n_classes`` and the share of the most
    frequent class among the validation trials: a model that always answers
    that class reaches it without learning anything.

    Parameters
    ----------
    accuracy : float | None
        Validation accuracy (``None`` without validation subjects).
    y_val : ndarray of int, shape (n_val_trials,)
        Validation labels.
    n_classes : int

    Returns
    -------
    result : dict
        ``val_chance`` and ``val_above_chance_p`` (``None`` when there was
        no validation set), the p-value of "accuracy > chance".
    """
    y_val = np.asarray(y_val)
    n = len(y_val)
    share = float(np.bincount(y_val, minlength=n_classes).max() / n) if n else 0.0
    chance = max(1.0 / n_classes, share)
    if accuracy is None or n == 0:
        return {"val_chance": round(chance, 4), "val_above_chance_p": None}
    from scipy.stats import binomtest

    k = int(round(float(accuracy) * n))
    return {"val_chance": round(chance, 4),
            "val_above_chance_p": float(binomtest(k, n, chance, alternative="greater").pvalue)}


@verbose
def pretrain(
    X: np.ndarray,
    labels: np.ndarray,
    meta: pd.DataFrame,
    recipe: Recipe,
    *,
    model: str = "EEGNet",
    classes: list[str] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    epochs: int = 100,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 0.0,
    patience: int = 40,
    monitor: str = "val_acc",
    val_fraction: float = 0.2,
    align: bool = False,
    device: str = "auto",
    seed: int = 0,
    progress: bool = False,
    checkpoint: str | None = None,
    compile: bool | str = "auto",
    provenance: dict[str, Any] | None = None,
    verbose: bool | str | int | None = None,
) -> Bundle:
    """Train a population model and return it as a :class:`Bundle`.

    ``metrics`` holds the best epoch's scores, ``val_chance`` and
    ``val_above_chance_p`` (:func:`chance_test`); a model not above chance
    (p >= 0.05) is returned all the same, with a logged warning: whether to
    keep it is the caller's decision (the command line refuses it unless
    ``--allow-chance``).

    Parameters
    ----------
    X : ndarray of float32 | np.memmap | DiskTrials, shape (n_trials, n_chans, n_times)
        Preprocessed trials (see :mod:`eegtransfer.preprocessing`). Trials on
        disk (a ``np.memmap``, e.g. from ``load_dataset(..., cache=True)``, or
        a :class:`~eegtransfer.training.streaming.DiskTrials`) are never loaded
        whole: training, validation and the CCA expert read them a batch at a time.
    labels : ndarray of str, shape (n_trials,)
        Class names.
    meta : pandas.DataFrame
        Per-trial metadata with a ``subject`` column (for the validation split).
    recipe : Recipe
        The recipe that made ``X``; stored in the bundle.
    model : str
        A name from :func:`eegtransfer.models.known_models`.
    classes : list of str | None
        Output order; defaults to the sorted unique labels.
    monitor : {"val_acc", "val_loss"}
        What picks the kept epoch on the validation subjects (see
        :func:`eegtransfer.training.engine.train`). Accuracy: validation loss can stay near
        ln(n_classes) for dozens of epochs while accuracy climbs, and the lowest loss then
        keeps a model at chance.
    align : bool
        Euclidean-align each subject with its own reference before training,
        so that patients can be aligned the same way (strategy ``align``).
        Trials on disk are not rewritten: each subject's reference is computed
        from its trials, one subject in memory at a time, and trials are
        aligned as batches are read (:meth:`DiskTrials.aligned`).
    device : {"auto", "cpu", "cuda", "mps"}
    seed : int
        Seeds initialisation, dropout, batch order and the subject split.
    checkpoint : path | None
        Resume an interrupted run from this file (see :func:`eegtransfer.training.engine.train`).
        A checkpoint of other data, subjects, alignment, classes or settings
        is refused with an error naming what differs.
    compile : bool | {"auto", "on", "off"}
        Train through ``torch.compile`` (see :func:`eegtransfer.training.engine.train`); a
        failed compilation logs a warning and trains eager. ``"auto"`` compiles on the CPU
        only for runs long enough to repay the compile time
        (:func:`eegtransfer.training.engine.compile_pays`: at least 1.5e9 input values in the
        full batches of ``min(epochs, patience + 1)`` epochs); the bundle's model is the plain
        module either way, and ``provenance["compile_seconds"]`` says whether it compiled.
    verbose : bool | str | int | None
        Log level for this call, as in MNE (``None``: the ``eegtransfer``
        logger's level).

    Returns
    -------
    bundle : Bundle

    Notes
    -----
    Under ``torchrun`` with several processes (``torchrun --nproc-per-node 2 script.py``),
    each process calls ``pretrain`` with the same arguments: it joins the process group
    (:func:`eegtransfer.training.distributed.setup`: gloo on the CPU, NCCL with one GPU per
    process), trains data-parallel with ``DistributedDataParallel`` (each process takes its
    share of every global batch of ``batch_size`` trials) and returns the same bundle in
    every process; save it from rank 0 only
    (``if eegtransfer.training.distributed.is_main(): bundle.save(...)``). The population's CCA
    expert (SSVEP classes) is fitted after training by every process alike: a repeated minute
    of CPU work per process on a large population, not a different result.
    """
    from ..models import build_model, check_model_name
    from . import distributed
    from .engine import resolve_device, seed_everything, train
    from .streaming import DiskTrials, is_on_disk

    model = check_model_name(model)
    on_disk = is_on_disk(X)
    X = (X if isinstance(X, DiskTrials) else DiskTrials(X)) if on_disk else np.asarray(X, dtype=np.float32)
    labels = np.asarray(labels).astype(str)
    if X.ndim != 3 or X.shape[1:] != (recipe.n_chans, recipe.n_times):
        raise EEGTransferError(
            f"X must have shape (n_trials, {recipe.n_chans}, {recipe.n_times}) for this recipe, got {X.shape}"
        )
    if len(labels) != len(X) or len(meta) != len(X):
        raise EEGTransferError(f"X has {len(X)} trials but labels {len(labels)} and meta {len(meta)}")
    classes = sorted(set(labels.tolist())) if classes is None else [str(c) for c in classes]
    if len(classes) < 2:
        raise EEGTransferError(f"pretraining needs at least 2 classes, got {classes}")
    distributed.setup(device)  # under torchrun: first, so that CUDA means this process's GPU
    dev = resolve_device(device)
    seed_everything(seed)
    subjects = meta["subject"].astype(str).to_numpy()
    if align:
        from ..adaptation.alignment import align_per_group

        X = X.aligned(subjects) if on_disk else align_per_group(X, subjects)
    tr, va = split_by_subject(subjects, val_fraction=val_fraction, seed=seed)
    X_tr, X_va = (X.subset(tr), X.subset(va)) if on_disk else (X[tr], X[va])
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(labels.tolist()) - set(classes))
    if unknown:
        raise EEGTransferError(f"labels {unknown} are not in classes {classes}")
    y = np.array([index[v] for v in labels], dtype=np.int64)
    net = build_model(model, recipe.n_chans, len(classes), recipe.n_times, recipe.sfreq,
                      ch_names=recipe.channels, **(model_kwargs or {}))
    logger.info("pretraining %s on %d trials (%d subjects, %d for validation) on %s",
                model, int(tr.sum()), len(np.unique(subjects)), len(np.unique(subjects[va])), dev)
    t0 = time.perf_counter()
    hist = train(net, X_tr, y[tr], X_val=X_va if va.any() else None,
                 y_val=y[va] if va.any() else None, epochs=epochs, batch_size=batch_size,
                 lr=lr, weight_decay=weight_decay, patience=patience, device=dev, seed=seed,
                 progress=progress, desc=f"pretrain {model}", checkpoint=checkpoint, autotune=True,
                 monitor=monitor, compile=compile,
                 fingerprint_extra=_resume_settings(model, model_kwargs, classes, align, subjects, va,
                                                    val_fraction))
    seconds = time.perf_counter() - t0
    best = hist.epochs[hist.best_epoch - hist.epochs[0]["epoch"]] if hist.epochs else {}
    prov = {
        "subjects": sorted(np.unique(subjects).tolist()),
        "validation_subjects": sorted(np.unique(subjects[va]).tolist()),
        "n_trials": int(len(X)),
        "seed": seed,
        "device": str(dev),
        "euclidean_alignment": bool(align),
        "hyperparameters": {"epochs": epochs, "batch_size": batch_size, "lr": lr,
                            "weight_decay": weight_decay, "patience": patience, "monitor": monitor,
                            "val_fraction": val_fraction},
        "train_seconds": round(seconds, 3),
        "compile_seconds": None if hist.compile_seconds is None else round(hist.compile_seconds, 3),
        "processes": distributed.world_size(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": package_versions(),
        **(provenance or {}),
    }
    metrics = {k: v for k, v in best.items() if k != "epoch"}
    metrics.update(chance_test(metrics.get("val_acc"), y[va], len(classes)))
    if metrics["val_above_chance_p"] is not None and metrics["val_above_chance_p"] >= 0.05:
        logger.warning("validation accuracy %.3f on %d trials of subjects %s is not above chance (%.3f; "
                       "binomial p = %.2g): this population model is no better than guessing",
                       metrics["val_acc"], int(va.sum()), prov["validation_subjects"],
                       metrics["val_chance"], metrics["val_above_chance_p"])
    return Bundle(net, model, recipe, classes, model_kwargs=model_kwargs, provenance=prov,
                  metrics=metrics, history=hist.to_dict(),
                  cca=population_cca(X, labels, classes, recipe, net=net, val=va, device=dev))


def _log_proba(net: Any, X: Any, device: Any, chunk: int = 256) -> np.ndarray:
    """The network's log-probabilities, ``chunk`` trials at a time (``X`` may be trials on disk)."""
    import torch

    from .engine import predict_logits

    logits = np.concatenate([predict_logits(net, np.asarray(X[i:i + chunk]), device=device)
                             for i in range(0, len(X), chunk)])
    return torch.log_softmax(torch.as_tensor(logits, dtype=torch.float64), dim=1).numpy()


def population_cca(X: np.ndarray, labels: np.ndarray, classes: list[str], recipe: Recipe, *,
                   net: Any = None, val: np.ndarray | None = None, device: Any = "cpu") -> Any:
    """The population's CCA expert for SSVEP classes (a prior for the ``cca`` step), else ``None``.

    Kept with weight 0: the population bundle predicts with its network alone. With the
    trained ``net`` and a mask ``val`` of validation trials (subjects it never trained on), the
    expert's and the network's exponents in the product are fitted there
    (``CCAExpert.fit_weight``): the ``cca`` step's defaults.
    """
    from ..ssvep import REST_EVIDENCE, CCAExpert

    expert = CCAExpert.for_classes(classes, recipe.sfreq, max_freq=recipe.h_freq, weight=0.0,
                                   rest_evidence=REST_EVIDENCE)
    if expert is None:
        return None
    expert.fit(X, labels, l2=1e-3)
    if net is not None and val is not None and val.any():
        X_va = X.subset(val) if hasattr(X, "subset") else X[val]
        expert.fit_weight(_log_proba(net, X_va, device), X_va, np.asarray(labels)[val])
        logger.info("CCA expert: exponent %.2f in the product with the network's %.2f, fitted on %d "
                    "validation trials", expert.fitted_weight_, expert.fitted_net_weight_, int(val.sum()))
    return expert


def pretrain_on_dataset(
    dataset: Any,
    subjects: list[int],
    *,
    recipe: Recipe | None = None,
    trial_cache: bool | str | None = None,
    **kwargs: Any,
) -> Bundle:
    """Load MOABB ``subjects`` with one recipe and call :func:`pretrain`.

    Known duplicated recordings are removed on load
    (see :data:`eegtransfer.io.moabb.KNOWN_DUPLICATES`). ``trial_cache``
    (``True`` or a folder) goes to :func:`~eegtransfer.io.load_dataset` as
    ``cache=``: the trials are preprocessed once into an on-disk cache and
    training streams them from there, for populations larger than memory.
    """
    from ..io.moabb import dataset_provenance, get_dataset, load_dataset

    if isinstance(dataset, str):
        dataset = get_dataset(dataset)
    X, meta, recipe = load_dataset(dataset, subjects, recipe, cache=trial_cache)
    prov = dataset_provenance(dataset)  # its event codes travel with the model
    prov.update(kwargs.pop("provenance", None) or {})
    return pretrain(X, meta["label"].to_numpy(), meta, recipe, provenance=prov, **kwargs)
