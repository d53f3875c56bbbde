"""Per-subject adaptation: a population bundle in, a new patient bundle out.

Calibration trials are chosen **chronologically** (:func:`select_calibration`),
so later data is always the test. The population bundle is never modified.

Strategies (``strategy=``), combinable with ``+``:

========== ============================================================ ======
name       what changes                                                 labels
========== ============================================================ ======
none       nothing (zero-shot)                                          no
head       the classification head, trained on cached trunk features    yes
last-k     the last ``k`` blocks and the head                           yes
full       every layer, with a small learning rate                      yes
bn         batch-norm running statistics re-estimated (AdaBN)           no
align      Euclidean alignment to the patient's mean covariance         no
auto       the best of the above by inner validation on calibration     yes
========== ============================================================ ======

With labels, a **negative-transfer guard** compares the adapted model with the
zero-shot model on held-out calibration trials and keeps the better one.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from .bundle import Bundle
from .errors import EEGTransferError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

logger = logging.getLogger("eegtransfer")

SUPERVISED = ("head", "last-k", "full")
UNSUPERVISED = ("bn", "align")
STRATEGIES = ("none", "head", "last-k", "full", "bn", "align",
              "align+head", "bn+head", "align+last-k", "auto")


# --- which trials calibrate --------------------------------------------------

def timeline(meta: pd.DataFrame) -> np.ndarray:
    """Seconds from the start of the first recording, recordings in the order given.

    Each recording's trials are offset by the summed length of the recordings
    before it (column ``recording_seconds``; without it, by the last onset).
    """
    keys = list(zip(meta["subject"].astype(str), meta["session"].astype(str), meta["run"].astype(str)))
    offsets: dict[tuple[str, str, str], float] = {}
    total = 0.0
    onset = meta["onset"].to_numpy(dtype=float)
    has_len = "recording_seconds" in meta.columns
    for i, key in enumerate(keys):
        if key not in offsets:
            offsets[key] = total
            rows = [j for j, k in enumerate(keys) if k == key]
            total += float(meta["recording_seconds"].iloc[i]) if has_len else float(onset[rows].max()) + 1.0
    return np.array([offsets[k] for k in keys]) + onset


def select_calibration(
    meta: pd.DataFrame,
    *,
    minutes: float | None = None,
    trials: int | None = None,
    per_class: bool = False,
    trial_seconds: float = 0.0,
    source: str = "recording",
) -> np.ndarray:
    """Boolean mask of calibration trials, taken in recording-time order.

    Parameters
    ----------
    meta : pandas.DataFrame
        Trial metadata (``onset``, ``label``, ``subject``, ``session``, ``run``).
    minutes : float | None
        Keep trials that end within the first ``minutes`` of recording
        (with ``per_class``: each class's first trials whose summed length
        ``trial_seconds`` fits in ``minutes``).
    trials : int | None
        Keep the first ``trials`` trials (with ``per_class``: per class).
    trial_seconds : float
        Trial length (``recipe.tmax``), to test whether a trial has ended.

    Returns
    -------
    mask : ndarray of bool, shape (n_trials,)
    """
    if (minutes is None) == (trials is None):
        raise EEGTransferError("give exactly one of minutes= or trials= for the calibration set")
    t = timeline(meta)
    order = np.argsort(t, kind="stable")
    mask = np.zeros(len(meta), bool)
    labels = meta["label"].astype(str).to_numpy()
    if minutes is not None:
        if minutes <= 0:
            raise EEGTransferError(f"--minutes must be > 0, got {minutes}")
        total = timeline_length(meta)
        if minutes * 60 > total + 1e-6:
            raise EEGTransferError(
                f"--minutes {minutes:g} is longer than the {source} ({total / 60:.2f} min); "
                "nothing would be left to test"
            )
        if per_class:
            length = max(trial_seconds, 1e-9)
            for c in np.unique(labels):
                idx = order[labels[order] == c]
                mask[idx[: int(minutes * 60 // length)]] = True
        else:
            mask = t + trial_seconds <= minutes * 60
    else:
        if trials <= 0:
            raise EEGTransferError(f"--trials must be > 0, got {trials}")
        if per_class:
            for c in np.unique(labels):
                mask[order[labels[order] == c][:trials]] = True
        else:
            if trials > len(meta):
                raise EEGTransferError(f"--trials {trials} is more than the {len(meta)} trials in the {source}")
            mask[order[:trials]] = True
    return mask


def timeline_length(meta: pd.DataFrame) -> float:
    """Total seconds of the recordings in ``meta``."""
    if "recording_seconds" in meta.columns:
        runs = meta.drop_duplicates(["subject", "session", "run"])
        return float(runs["recording_seconds"].sum())
    return float(timeline(meta).max())


def check_class_counts(labels: np.ndarray, *, minimum: int = 2, classes: list[str] | None = None,
                       what: str = "calibration set") -> None:
    """Raise, naming the counts per class, when a class has fewer than ``minimum`` trials."""
    labels = np.asarray(labels).astype(str)
    names = list(classes) if classes is not None else sorted(set(labels.tolist()))
    counts = {c: int((labels == c).sum()) for c in names}
    if len(labels) == 0:
        raise EEGTransferError(f"the {what} is empty; give more --minutes or --trials")
    low = {c: n for c, n in counts.items() if n < minimum}
    if low:
        raise EEGTransferError(
            f"the {what} needs at least {minimum} trials of every class; counts per class: {counts}. "
            "Give more --minutes or --trials, or --per-class"
        )


def chronological_split(labels: np.ndarray, val_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Split calibration trials (already in time order) into fit and validation.

    The **last** ``val_fraction`` of each class's trials go to validation, so
    the model is always validated on later data and every class is seen in
    both parts (each class needs 2 trials).
    """
    labels = np.asarray(labels).astype(str)
    val = np.zeros(len(labels), bool)
    if val_fraction <= 0:
        return ~val, val
    for c in np.unique(labels):
        idx = np.where(labels == c)[0]
        n_val = int(np.clip(round(len(idx) * val_fraction), 1, len(idx) - 1)) if len(idx) >= 2 else 0
        if n_val:
            val[idx[-n_val:]] = True
    return ~val, val


# --- the strategies ----------------------------------------------------------

def parse_strategy(strategy: str) -> tuple[set[str], str | None]:
    """``"align+head"`` -> ({"align"}, "head"). Raises on unknown names."""
    parts = [p.strip().lower() for p in str(strategy).split("+") if p.strip()]
    known = set(SUPERVISED) | set(UNSUPERVISED) | {"none"}
    bad = [p for p in parts if p not in known]
    sup = [p for p in parts if p in SUPERVISED]
    if bad or not parts or len(sup) > 1 or ("none" in parts and len(parts) > 1):
        raise EEGTransferError(
            f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)} "
            "(unsupervised steps bn/align combine with one of head, last-k, full)"
        )
    return {p for p in parts if p in UNSUPERVISED}, (sup[0] if sup else None)


def adabn(model: Any, X: np.ndarray, *, device: Any = "cpu", batch_size: int = 256) -> list[str]:
    """Re-estimate every batch-norm layer's running statistics on ``X`` (no labels).

    Only the ``running_mean``/``running_var`` buffers change; weights do not.
    Returns the names of the updated layers.
    """
    import torch
    from torch import nn

    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return []
    model.to(device).eval()
    saved = {}
    for _, m in bns:
        saved[m] = m.momentum
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
        m.train()
    with torch.no_grad():
        Xt = torch.as_tensor(X, dtype=torch.float32)
        for i in range(0, len(Xt), batch_size):
            model(Xt[i:i + batch_size].to(device))
    for _, m in bns:
        m.momentum = saved[m]
        m.eval()
    return [n for n, _ in bns]


def _train_supervised(bundle: Bundle, part: str, X: np.ndarray, y: np.ndarray, fit: np.ndarray,
                      val: np.ndarray, *, k: int, epochs: int, lr: float | None, batch_size: int,
                      patience: int, device: Any, seed: int, progress: bool) -> tuple[list[str], dict]:
    """Train the part of ``bundle.model`` that ``part`` names, in place."""
    from .engine import head_inputs, train
    from .models import HEAD, final_parameter_names

    model = bundle.model
    Xv = X[val] if val.any() else None
    yv = y[val] if val.any() else None
    if part == "head" and _head_is_callable(model):
        # The frozen trunk gives the same features every epoch: compute them once.
        feats = head_inputs(model, X, HEAD, device=device)
        head = getattr(model, HEAD)
        hist = train(head, feats[fit], y[fit], X_val=None if Xv is None else feats[val], y_val=yv,
                     epochs=epochs, batch_size=batch_size, lr=lr or 1e-2, patience=patience,
                     device=device, seed=seed, progress=progress, desc="adapt head (cached features)")
        head.to("cpu")
        return [f"{HEAD}.{n}" for n, _ in head.named_parameters()], hist.to_dict()
    if part == "full":
        names = [n for n, _ in model.named_parameters()]
        lr = lr or 1e-4
    else:
        names = final_parameter_names(model, bundle.model_name, k=0 if part == "head" else k)
        lr = lr or (1e-2 if part == "head" else 1e-3)
    hist = train(model, X[fit], y[fit], X_val=Xv, y_val=yv, trainable=names, epochs=epochs,
                 batch_size=batch_size, lr=lr, patience=patience, device=device, seed=seed,
                 progress=progress, desc=f"adapt {part}")
    model.to("cpu")
    return names, hist.to_dict()


def _head_is_callable(model: Any) -> bool:
    from torch import nn

    from .models import HEAD

    head = getattr(model, HEAD, None)
    children = [n for n, _ in model.named_children()]
    # ATCNet's head is a ModuleList applied per window; it cannot run on cached features.
    return (isinstance(head, nn.Module) and not isinstance(head, nn.ModuleList)
            and children and children[-1] == HEAD)


def _accuracy(bundle: Bundle, X: np.ndarray, y: np.ndarray) -> float:
    if len(y) == 0:
        return float("nan")
    return float((bundle.predict_proba(X).argmax(1) == y).mean())


def adapt(
    bundle: Bundle,
    X: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    strategy: str = "head",
    k: int = 1,
    X_unlabeled: np.ndarray | None = None,
    epochs: int = 200,
    lr: float | None = None,
    batch_size: int = 32,
    val_fraction: float = 0.25,
    patience: int = 30,
    guard: bool = True,
    device: str = "auto",
    seed: int = 0,
    progress: bool = False,
    calibration: dict[str, Any] | None = None,
) -> Bundle:
    """Adapt a population bundle to one subject; return a new bundle.

    Parameters
    ----------
    bundle : Bundle
        The population model. It is not modified.
    X : ndarray of float32, shape (n_trials, n_chans, n_times)
        The subject's calibration trials **in time order** (see
        :func:`select_calibration`), preprocessed with ``bundle.recipe``.
    labels : ndarray of str, shape (n_trials,) | None
        Class names. ``None`` for an unlabelled recording (``bn``, ``align``).
        Labels outside ``bundle.classes`` make a new head for the subject's
        classes (a new task).
    strategy : str
        See the module docstring.
    k : int
        Blocks before the head to train with ``last-k``.
    X_unlabeled : ndarray | None
        More trials without labels, used by ``bn`` and ``align`` only.
    epochs, lr, batch_size, patience : training settings; ``lr`` defaults
        to 1e-2 for the head, 1e-3 for last-k, 1e-4 for full.
    val_fraction : float
        Fraction of each class's latest calibration trials held out for early
        stopping and for the guard.
    guard : bool
        Keep the zero-shot model when adaptation does not beat it on the
        held-out calibration trials.
    device : {"auto", "cpu", "cuda", "mps"}
    seed : int
    calibration : dict | None
        Facts about the calibration data to record (minutes, files, hashes).

    Returns
    -------
    patient : Bundle
        ``patient.adaptation`` records the strategy, the trainable
        parameters, the held-out scores and the guard's decision.
    """
    from .engine import seed_everything, select_device

    t0 = time.perf_counter()
    dev = select_device(device)
    seed_everything(seed)
    X = bundle.check_input(X)
    if strategy == "auto":
        return _auto(bundle, X, labels, k=k, X_unlabeled=X_unlabeled, epochs=epochs, lr=lr,
                     batch_size=batch_size, val_fraction=val_fraction, patience=patience,
                     device=dev, seed=seed, progress=progress, calibration=calibration, t0=t0)
    steps, part = parse_strategy(strategy)
    if part is not None and labels is None:
        raise EEGTransferError(f"strategy {strategy!r} needs labelled calibration trials; "
                               "use 'bn' or 'align' for an unlabelled recording")
    if "align" in steps and not bundle.provenance.get("euclidean_alignment"):
        logger.warning("strategy 'align' on a population model pretrained without alignment; "
                       "pretrain with align=True for it to help")
    new = bundle.copy()
    new.model.to("cpu")
    info: dict[str, Any] = {"strategy": strategy, "k": k if part == "last-k" else None,
                            "n_calibration_trials": int(len(X)), "note": ""}
    pool = X if X_unlabeled is None else np.concatenate([X, np.asarray(X_unlabeled, np.float32)])
    if "align" in steps:
        from .alignment import alignment_matrix

        new.align = alignment_matrix(pool)
    Xa = new.prepare_input(X)
    if "bn" in steps:
        from .alignment import apply_alignment

        pa = pool if new.align is None else apply_alignment(pool, new.align)
        info["bn_layers"] = adabn(new.model, pa, device=dev)
        new.model.to("cpu")
    trainable: list[str] = []
    y = fit = val = None
    if labels is not None:
        labels = np.asarray(labels).astype(str)
        check_class_counts(labels)
        new_task = bool(set(labels.tolist()) - set(bundle.classes))
        if new_task:
            if part is None:
                raise EEGTransferError(
                    f"the calibration classes {sorted(set(labels.tolist()))} differ from the model's "
                    f"{bundle.classes}; a new head must be trained: use strategy 'head'"
                )
            from .models import with_new_head

            new.classes = sorted(set(labels.tolist()))
            r = new.recipe
            new.model = with_new_head(new.model, new.model_name, len(new.classes), r.n_chans,
                                      r.n_times, r.sfreq, ch_names=r.channels, **new.model_kwargs)
            info["note"] = (f"new head for classes {new.classes} (model was trained on "
                            f"{bundle.classes})")
            logger.warning(info["note"])
        y = new.encode(labels)
        fit, val = chronological_split(labels, val_fraction)
        info.update(n_fit=int(fit.sum()), n_val=int(val.sum()), new_head=new_task)
    if part is not None:
        trainable, hist = _train_supervised(new, part, Xa, y, fit, val, k=k, epochs=epochs, lr=lr,
                                            batch_size=batch_size, patience=patience, device=dev,
                                            seed=seed, progress=progress)
        new.history = hist
    info["trainable"] = trainable
    if y is not None and val.any():
        info["val_accuracy_adapted"] = _accuracy(new, X[val], y[val])
        if not info.get("new_head"):
            info["val_accuracy_zero_shot"] = _accuracy(bundle, X[val], y[val])
    if guard and y is not None and val.any() and not info.get("new_head") and strategy != "none":
        if info["val_accuracy_adapted"] < info["val_accuracy_zero_shot"]:
            info["guard"] = "kept the zero-shot model"
            info["note"] = (f"adaptation did not help on held-out calibration trials "
                            f"({info['val_accuracy_adapted']:.3f} < zero-shot "
                            f"{info['val_accuracy_zero_shot']:.3f}); kept the zero-shot model")
            logger.warning(info["note"])
            kept = bundle.copy()
            kept.history = new.history
            new = kept
            info["trainable"] = []
        else:
            info["guard"] = "kept the adapted model"
    elif labels is None:
        info["guard"] = "not applied: no labels"
    info.update(calibration or {})
    info["device"] = str(dev)
    info["seconds"] = round(time.perf_counter() - t0, 4)
    new.adaptation = info
    new.provenance = {**bundle.provenance, "parent": _parent_id(bundle)}
    new.metrics = {}
    if "val_accuracy_adapted" in info:
        new.metrics["calibration_val_accuracy"] = info["val_accuracy_adapted"]
    return new


def _parent_id(bundle: Bundle) -> str:
    return str(bundle.path) if bundle.path else f"{bundle.model_name} (in memory)"


def _auto(bundle: Bundle, X: np.ndarray, labels: np.ndarray | None, *, t0: float, **kw: Any) -> Bundle:
    """Choose a strategy by inner validation on the calibration data."""
    if labels is None:
        raise EEGTransferError("strategy 'auto' needs labelled calibration trials")
    labels = np.asarray(labels).astype(str)
    check_class_counts(labels)
    _, val = chronological_split(labels, kw["val_fraction"])
    candidates = ["none", "bn", "head", "bn+head", "last-k"]
    if bundle.provenance.get("euclidean_alignment"):
        candidates += ["align", "align+head", "align+last-k"]
    if set(labels.tolist()) - set(bundle.classes):
        candidates = ["head", "bn+head"] + (["align+head"] if "align" in " ".join(candidates) else [])
    scores: dict[str, float] = {}
    best, best_acc = None, -1.0
    for cand in candidates:
        b = adapt(bundle, X, labels, strategy=cand, guard=False, **kw)
        acc = b.adaptation.get("val_accuracy_adapted", float("nan"))
        if cand == "none":
            acc = _accuracy(bundle, X[val], bundle.encode(labels[val]))
        scores[cand] = acc
        if acc > best_acc + 1e-9:  # ties keep the earlier, simpler candidate
            best, best_acc = b, acc
    chosen = min((c for c in candidates if scores[c] == best_acc), key=candidates.index)
    if chosen == "none":
        best = bundle.copy()
        best.adaptation = {"n_calibration_trials": int(len(X))}
    best.adaptation.update(
        strategy="auto", chosen=chosen, auto_scores=scores,
        note=(f"auto chose {chosen!r}: best held-out calibration accuracy {best_acc:.3f} among "
              + ", ".join(f"{c}={s:.3f}" for c, s in scores.items())),
        seconds=round(time.perf_counter() - t0, 4),
    )
    best.provenance = {**bundle.provenance, "parent": _parent_id(bundle)}
    return best
