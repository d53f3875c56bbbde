"""Per-subject adaptation: a population bundle in, a new patient bundle out.

Calibration trials are chosen **chronologically** (:func:`select_calibration`),
so later data is always the test. The population bundle is never modified.

Strategies (``strategy=``), combinable with ``+``:

============ ========================================================== ======
name         what changes                                               labels
============ ========================================================== ======
none         nothing (zero-shot)                                        no
head         the classification head: an L2-SP regularised logistic    yes
             regression on cached trunk features (L-BFGS; or AdamW
             epochs with ``head_solver="sgd"``)
last-k       the last ``k`` blocks and the head                         yes
full         every layer, with a small learning rate                    yes
bn           batch-norm running statistics re-estimated (AdaBN);        no
             weights unchanged
align        Euclidean alignment to the patient's mean covariance;      no
             no weight changes, the matrix is stored in the bundle
align+head,  the label-free step first, then the supervised one         yes
bn+head,
align+last-k
auto         the best of the candidates by inner validation on the      yes
             calibration data (see :func:`auto_candidates`)
============ ========================================================== ======

Unlabelled recordings: ``adapt(bundle, X, None, strategy="bn")`` (or
``"align"``) needs no label; the held-out score is then recorded as
unavailable (``adaptation["held_out"]``) and must come from labelled data.

With labels, a **negative-transfer guard** compares the adapted model with the
zero-shot model (and, for a combination, with its label-free step alone) on
the latest held-out calibration trials of each class and keeps the better one
(``adaptation["guard"]``, ``adaptation["note"]``). A head fitted with L-BFGS
is then refit on all calibration trials, unless that would score below what
the guard kept.
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
HEAD_L2 = 1e-2
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
        Trial length (``recipe.tmax``), to test whether a trial has ended;
        required (> 0) with ``minutes`` and ``per_class``.

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
            if not trial_seconds or trial_seconds <= 0:
                # Without a trial length every trial "fits" in any number of minutes.
                raise EEGTransferError(
                    f"minutes= with per_class=True needs the trial length: pass trial_seconds= > 0 "
                    f"(e.g. recipe.tmax), got trial_seconds={trial_seconds!r}"
                )
            length = trial_seconds
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
    """Raise, naming the counts per class, when a class has fewer than ``minimum`` trials.

    ``classes`` are the classes that must all be present (the model's, when
    its head is kept: a class with no calibration trial would otherwise go
    unchecked); ``None`` checks the classes found in ``labels``.
    """
    labels = np.asarray(labels).astype(str)
    names = list(classes) if classes is not None else sorted(set(labels.tolist()))
    counts = {c: int((labels == c).sum()) for c in names}
    if len(labels) == 0:
        raise EEGTransferError(f"the {what} is empty; give more --minutes or --trials")
    low = {c: n for c, n in counts.items() if n < minimum}
    if low:
        absent = [c for c, n in counts.items() if n == 0]
        hint = (f" Class(es) {absent} have no trial: the model's head needs every one of its "
                "classes (labels outside them train a new head instead)." if absent else "")
        raise EEGTransferError(
            f"the {what} needs at least {minimum} trials of every class; counts per class: {counts}. "
            "Give more --minutes or --trials, or --per-class." + hint
        )


def required_classes(bundle: Bundle, labels: np.ndarray) -> list[str] | None:
    """The classes calibration must cover: all of the model's when its head is kept.

    ``None`` when ``labels`` hold a class the model lacks: a new head is then
    trained for exactly the classes found.
    """
    found = set(np.asarray(labels).astype(str).tolist())
    return None if found - set(bundle.classes) else list(bundle.classes)


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


def adabn(model: Any, X: np.ndarray, *, device: Any = None, batch_size: int = 256) -> list[str]:
    """Re-estimate every batch-norm layer's running statistics on ``X`` (no labels).

    Only the ``running_mean``/``running_var`` buffers change; weights do not.
    Returns the names of the updated layers. ``device=None``: where the model is.
    """
    import torch
    from torch import nn

    from .engine import model_device

    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return []
    device = model_device(model) if device is None else device
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
            model(Xt[i:i + batch_size].to(device, non_blocking=True))
    for _, m in bns:
        m.momentum = saved[m]
        m.eval()
    return [n for n, _ in bns]


def fit_head_lbfgs(head: Any, feats: Any, y: np.ndarray, *, l2: float = 1e-2, max_iter: int = 100,
                   device: Any = None, prior: str = "start") -> dict[str, Any]:
    """Fit the head as an L2-SP regularised multinomial logistic regression, in place.

    Minimises ``cross_entropy(head(feats), y) + l2 * ||theta - theta_0||^2`` over
    the head's parameters ``theta`` with full-batch L-BFGS, starting from the
    head's current weights. With ``prior="start"`` ``theta_0`` is those
    weights, the pretrained head: with few calibration trials it is the
    prior, ``l2`` large keeps zero-shot, ``l2`` small fits the subject. A new,
    randomly initialised head carries no knowledge, so it takes
    ``prior="zero"`` (plain L2, ``theta_0 = 0``). Deterministic, no epochs,
    no early stopping.

    Parameters
    ----------
    head : torch.nn.Module
        The classification head; maps ``feats`` to (n_trials, n_classes) logits.
    feats : torch.Tensor, shape (n_trials, ...)
        Cached trunk outputs (:func:`eegtransfer.engine.head_inputs`).
    y : ndarray of int, shape (n_trials,)
    l2 : float
        Strength of the pull towards the pretrained head (per parameter, on
        the summed squares; the data term is a mean over trials).
    max_iter : int
        L-BFGS iterations.
    device : str | torch.device | None
        Where to fit; ``None``: where ``feats`` are. The head stays there.
    prior : {"start", "zero"}
        What ``theta`` is pulled towards: the starting weights, or zero.

    Returns
    -------
    info : dict
        ``loss`` (final objective), ``iterations`` and ``prior``.
    """
    if prior not in ("start", "zero"):
        raise EEGTransferError(f"prior= must be 'start' or 'zero', got {prior!r}")
    import torch
    from torch import nn

    t0 = time.perf_counter()
    xf = torch.as_tensor(feats, dtype=torch.float32)
    device = xf.device if device is None else device
    xf = xf.to(device)
    head.to(device).eval()
    params = [p for p in head.parameters()]
    theta0 = [p.detach().clone() if prior == "start" else torch.zeros_like(p) for p in params]
    for p in params:
        p.requires_grad_(True)
    yt = torch.as_tensor(y, dtype=torch.long).to(device)
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")
    calls = [0]

    def closure() -> Any:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head(xf).float(), yt)
        loss = loss + l2 * sum(((p - p0) ** 2).sum() for p, p0 in zip(params, theta0))
        loss.backward()
        calls[0] += 1
        return loss

    loss = opt.step(closure)
    return {"loss": float(loss.detach()), "iterations": calls[0], "seconds": time.perf_counter() - t0,
            "solver": "lbfgs", "l2": l2, "prior": prior}


def _train_supervised(bundle: Bundle, part: str, X: np.ndarray, y: np.ndarray, fit: np.ndarray,
                      val: np.ndarray, *, k: int, epochs: int, lr: float | None, batch_size: int,
                      patience: int, device: Any, seed: int, progress: bool,
                      head_solver: str = "lbfgs", head_l2: float = 1e-2,
                      feats: Any = None, head_prior: str = "start") -> tuple[list[str], dict]:
    """Train the part of ``bundle.model`` that ``part`` names, in place.

    ``X`` is the (aligned) input, shape (n_trials, n_chans, n_times); ``fit``
    and ``val`` are boolean masks over its trials. ``feats`` are the cached
    trunk features of ``X`` when the caller already computed them; ``head_prior``
    is :func:`fit_head_lbfgs`'s ``prior`` (``"zero"`` for a new head).
    """
    from .engine import head_inputs, train
    from .models import HEAD, final_parameter_names

    model = bundle.model
    Xv = X[val] if val.any() else None
    yv = y[val] if val.any() else None
    if part == "head" and _head_is_callable(model):
        # The frozen trunk gives the same features every epoch: compute them once.
        if feats is None:
            feats = head_inputs(model, X, HEAD, device=device)
        head = getattr(model, HEAD)
        names = [f"{HEAD}.{n}" for n, _ in head.named_parameters()]
        if head_solver == "lbfgs":
            return names, fit_head_lbfgs(head, feats[fit], y[fit], l2=head_l2, device=device,
                                         prior=head_prior)
        hist = train(head, feats[fit], y[fit], X_val=None if Xv is None else feats[val], y_val=yv,
                     epochs=epochs, batch_size=batch_size, lr=lr or 1e-2, patience=patience,
                     device=device, seed=seed, progress=progress, desc="adapt head (cached features)")
        return names, hist.to_dict()
    if part == "full":
        names = [n for n, _ in model.named_parameters()]
        lr = lr or 1e-4
    else:
        names = final_parameter_names(model, bundle.model_name, k=0 if part == "head" else k)
        lr = lr or (1e-2 if part == "head" else 1e-3)
    hist = train(model, X[fit], y[fit], X_val=Xv, y_val=yv, trainable=names, epochs=epochs,
                 batch_size=batch_size, lr=lr, patience=patience, device=device, seed=seed,
                 progress=progress, desc=f"adapt {part}")
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
    head_solver: str = "lbfgs",
    head_l2: float = HEAD_L2,
    refit: bool = True,
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
        Class names. ``None`` for an unlabelled recording (``none``, ``bn``,
        ``align`` and their combinations without a supervised step); the
        held-out score is then recorded as unavailable. Labels outside
        ``bundle.classes`` make a new head for the subject's classes (a new task).
    strategy : str
        See the module docstring.
    k : int
        Blocks before the head to train with ``last-k``.
    X_unlabeled : ndarray, shape (n_more, n_chans, n_times) | None
        More trials without labels, used by ``bn`` and ``align`` only.
    epochs, lr, batch_size, patience : settings of epoch-based training
        (``last-k``, ``full``, and ``head`` with ``head_solver="sgd"``); ``lr``
        defaults to 1e-2 for the head, 1e-3 for last-k, 1e-4 for full.
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
    head_solver : {"lbfgs", "sgd"}
        ``"lbfgs"`` (default): the head is an L2-SP regularised logistic
        regression on cached trunk features (:func:`fit_head_lbfgs`);
        ``"sgd"``: AdamW epochs with early stopping, as for ``last-k``.
    head_l2 : float
        Pull towards the pretrained head for ``head_solver="lbfgs"`` (towards
        zero for a new head, whose random initial weights are no prior).
    refit : bool
        With ``head_solver="lbfgs"``, once the guard has kept the adapted
        model, refit the head on **all** calibration trials (the held-out
        ones included); the guard's scores stay those of the fit-part model.

    Returns
    -------
    patient : Bundle
        ``patient.adaptation`` records the strategy, the trainable
        parameters, the held-out scores and the guard's decision.
    """
    from .engine import resolve_device, seed_everything

    t0 = time.perf_counter()
    dev = resolve_device(device)
    seed_everything(seed)
    X = bundle.check_input(X)
    if head_solver not in ("lbfgs", "sgd"):
        raise EEGTransferError(f"head_solver must be 'lbfgs' or 'sgd', got {head_solver!r}")
    common = dict(k=k, X_unlabeled=X_unlabeled, epochs=epochs, lr=lr, batch_size=batch_size,
                  val_fraction=val_fraction, patience=patience, device=dev, seed=seed,
                  progress=progress, calibration=calibration, head_solver=head_solver,
                  head_l2=head_l2, refit=refit)
    if str(strategy).strip().lower() == "auto":
        return _auto(bundle, X, labels, t0=t0, **common)
    steps, part = parse_strategy(strategy)
    if part is not None and labels is None:
        raise EEGTransferError(f"strategy {strategy!r} needs labelled calibration trials; "
                               "use 'bn' or 'align' for an unlabelled recording")
    if len(X) == 0 and (labels is None or steps):
        raise EEGTransferError("the calibration set is empty; give more --minutes or --trials")
    if "align" in steps and not bundle.provenance.get("euclidean_alignment"):
        logger.warning("strategy 'align' on a population model pretrained without alignment; "
                       "pretrain with align=True for it to help")
    new = bundle.copy()
    new.model.to(dev)  # the patient bundle is adapted, guarded and returned on ``dev``
    info: dict[str, Any] = {"strategy": strategy, "k": k if part == "last-k" else None,
                            "n_calibration_trials": int(len(X)), "note": ""}
    pool = X if X_unlabeled is None else np.concatenate([X, bundle.check_input(X_unlabeled)])
    info["n_unlabeled_trials"] = int(len(pool))
    if "align" in steps:
        from .alignment import alignment_matrix

        new.align = alignment_matrix(pool).astype(np.float32)  # as saved in safetensors
        info["align_trials"] = int(len(pool))
    if "bn" in steps:
        from .alignment import apply_alignment

        pa = pool if new.align is None else apply_alignment(pool, new.align)
        info["bn_layers"] = adabn(new.model, pa, device=dev)
    Xa = new.prepare_input(X)
    trainable: list[str] = []
    y = fit = val = None
    if labels is not None:
        labels = np.asarray(labels).astype(str)
        need = required_classes(bundle, labels)
        check_class_counts(labels, classes=need)
        new_task = need is None
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
                                      r.n_times, r.sfreq, ch_names=r.channels, **new.model_kwargs).to(dev)
            info["note"] = (f"new head for classes {new.classes} (model was trained on "
                            f"{bundle.classes})")
            logger.warning(info["note"])
        y = new.encode(labels)
        fit, val = chronological_split(labels, val_fraction)
        info.update(n_fit=int(fit.sum()), n_val=int(val.sum()), new_head=new_task)
    lbfgs_head = part == "head" and head_solver == "lbfgs" and _head_is_callable(new.model)
    head0 = None
    feats = None
    unsup = new.copy() if (part is not None and steps and guard and y is not None) else None
    if part is not None:
        from .engine import head_inputs
        from .models import HEAD

        if lbfgs_head:
            head0 = {k_: v.clone() for k_, v in getattr(new.model, HEAD).state_dict().items()}
            feats = head_inputs(new.model, Xa, HEAD, device=dev)
        trainable, hist = _train_supervised(new, part, Xa, y, fit, val, k=k, epochs=epochs, lr=lr,
                                            batch_size=batch_size, patience=patience, device=dev,
                                            seed=seed, progress=progress, head_solver=head_solver,
                                            head_l2=head_l2, feats=feats,
                                            head_prior="zero" if info.get("new_head") else "start")
        new.history = hist
    info["trainable"] = trainable
    if y is not None and val.any():
        info["val_accuracy_adapted"] = _accuracy(new, X[val], y[val])
        if not info.get("new_head"):
            info["val_accuracy_zero_shot"] = _accuracy(bundle, X[val], y[val])
    elif labels is None:
        info["val_accuracy_adapted"] = None
        info["held_out"] = "unavailable: no labelled calibration trials"
    kept_adapted = True
    floor: float | None = None  # what the guard promised on the held-out calibration trials
    if guard and y is not None and val.any() and not info.get("new_head") and strategy != "none":
        # Fallbacks: the zero-shot model, and the label-free steps alone (e.g. 'align'
        # for 'align+head', whose zero-shot counterpart on an aligned model is 'align').
        fallbacks = [("zero-shot", bundle, info["val_accuracy_zero_shot"])]
        if unsup is not None:
            name = "+".join(sorted(steps))
            info[f"val_accuracy_{name}"] = acc = _accuracy(unsup, X[val], y[val])
            fallbacks.append((name, unsup, acc))
        best_name, best_b, best_acc = max(fallbacks, key=lambda f: f[2])
        floor = best_acc
        if info["val_accuracy_adapted"] < best_acc:
            kept_adapted = False
            info["guard"] = f"kept the {best_name} model"
            info["note"] = (f"adaptation did not help on held-out calibration trials "
                            f"({info['val_accuracy_adapted']:.3f} < {best_name} "
                            f"{best_acc:.3f}); kept the {best_name} model")
            logger.warning(info["note"])
            kept = best_b.copy()
            kept.history = new.history
            new = kept
            info["trainable"] = []
        else:
            info["guard"] = "kept the adapted model"
            info["note"] = (f"adapted {info['val_accuracy_adapted']:.3f} >= "
                            + ", ".join(f"{f[0]} {f[2]:.3f}" for f in fallbacks)
                            + f" on {int(val.sum())} held-out calibration trials; kept the adapted model")
    elif labels is None:
        info["guard"] = "not applied: no labels"
        info["note"] = ("unlabelled calibration: held-out accuracy unavailable; score the patient "
                        "bundle on labelled data to check it")
    elif not guard:
        info["guard"] = "off"
    else:
        info["guard"] = "not applied"
    if lbfgs_head and kept_adapted and refit and y is not None and val.any():
        from .models import HEAD

        head = getattr(new.model, HEAD)
        fitted = {k_: v.clone() for k_, v in head.state_dict().items()}
        head.load_state_dict(head0)
        hist = fit_head_lbfgs(head, feats, y, l2=head_l2, device=dev,
                              prior="zero" if info.get("new_head") else "start")
        if floor is not None and _accuracy(new, X[val], y[val]) < floor:  # never hand back less than the guard promised
            head.load_state_dict(fitted)
            info["refit"] = "refit on all calibration trials scored below the guard's floor; kept the fit-part head"
        else:
            new.history = hist
            info["refit"] = f"head refit on all {len(y)} calibration trials"
    info.update(calibration or {})
    info["device"] = str(dev)
    info["seconds"] = round(time.perf_counter() - t0, 4)
    new.adaptation = info
    new.provenance = {**bundle.provenance, "parent": _parent_id(bundle)}
    new.metrics = {}
    if info.get("val_accuracy_adapted") is not None:
        new.metrics["calibration_val_accuracy"] = info["val_accuracy_adapted"]
    return new


def _parent_id(bundle: Bundle) -> str:
    return str(bundle.path) if bundle.path else f"{bundle.model_name} (in memory)"


def auto_candidates(bundle: Bundle, labels: np.ndarray | None = None) -> list[str]:
    """The strategies ``auto`` compares for ``bundle``.

    A population model pretrained with Euclidean alignment is only used with
    alignment (its zero-shot counterpart is ``align``); otherwise the
    candidates are zero-shot, AdaBN and the supervised strategies.
    """
    if bundle.provenance.get("euclidean_alignment"):
        cands = ["align", "align+head", "align+last-k"]
    else:
        cands = ["none", "bn", "head", "bn+head", "last-k"]
    if labels is not None and set(np.asarray(labels).astype(str).tolist()) - set(bundle.classes):
        cands = [c for c in cands if "head" in c]
    return cands


def _auto(bundle: Bundle, X: np.ndarray, labels: np.ndarray | None, *, t0: float, **kw: Any) -> Bundle:
    """Choose a strategy by inner validation on the calibration data, then adapt with it.

    Each candidate is adapted on the earlier part of the calibration trials
    (:func:`chronological_split`) and scored on the later part, which none of
    them saw (not even for early stopping). The winner is then adapted on all
    calibration trials, with the guard. Ties go to the earlier, simpler candidate.
    """
    if labels is None:
        raise EEGTransferError("strategy 'auto' needs labelled calibration trials")
    labels = np.asarray(labels).astype(str)
    need = required_classes(bundle, labels)
    check_class_counts(labels, classes=need)
    fit, val = chronological_split(labels, kw["val_fraction"])
    candidates = auto_candidates(bundle, labels)
    scores: dict[str, float] = {}
    how = "inner validation: adapted on the first {} calibration trials, scored on the last {}"
    try:
        check_class_counts(labels[fit], classes=need, what="inner fit set")
        inner = True
    except EEGTransferError:
        inner = False
        how = ("too few trials for an unseen inner validation set: scored on the held-out "
               "calibration trials used for early stopping ({} fit, {} held out)")
    for cand in candidates:
        if inner:
            b = adapt(bundle, X[fit], labels[fit], strategy=cand, guard=False, **kw)
        else:
            b = adapt(bundle, X, labels, strategy=cand, guard=False, **kw)
        scores[cand] = _accuracy(b, X[val], b.encode(labels[val]))
    valid = {c: s for c, s in scores.items() if np.isfinite(s)}
    best_acc = max(valid.values())
    chosen = min((c for c, s in valid.items() if s >= best_acc - 1e-9), key=candidates.index)
    best = adapt(bundle, X, labels, strategy=chosen, guard=True, **kw)
    info = dict(best.adaptation)
    info.update(
        strategy="auto", chosen=chosen, auto_scores=scores, auto_method=how.format(int(fit.sum()), int(val.sum())),
        note=(f"auto chose {chosen!r}: best held-out calibration accuracy {best_acc:.3f} among "
              + ", ".join(f"{c}={s:.3f}" for c, s in scores.items())
              + f" ({how.format(int(fit.sum()), int(val.sum()))})"
              + (f"; {best.adaptation['note']}" if best.adaptation.get("note") else "")),
        seconds=round(time.perf_counter() - t0, 4),
    )
    best.adaptation = info
    logger.info(info["note"])
    return best
