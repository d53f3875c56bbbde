"""The negative-transfer guard: keep an adapted model only when unseen trials say it helps.

Cross-fitting over the calibration set. The trials of each class are cut, in time order, into
``n_folds`` consecutive blocks; fold *k* holds the *k*-th block of every class. For each fold,
every candidate (the adapted chain, the zero-shot model, and for a combination such as
``align+head`` its label-free steps alone) is fitted on the **other** folds — its early stopping,
if any, on the latest trials of those — and scored on fold *k*. So each calibration trial is
scored once, by models that neither fitted nor early-stopped on it. The adapted model is kept
when its pooled log-loss beats the best fallback's by at least ``margin`` nats per trial;
otherwise the best fallback is kept. Accuracies are reported alongside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..bundle import Bundle
from .report import GuardDecision

MARGIN = 0.02  # nats per trial: log 4 = 1.39 at chance for four classes


def chronological_folds(labels: np.ndarray, n_folds: int = 2) -> np.ndarray:
    """Fold index of each trial: per class, consecutive blocks in time order.

    Parameters
    ----------
    labels : ndarray, shape (n_trials,)
        Labels of trials already in time order.
    n_folds : int

    Returns
    -------
    folds : ndarray of int, shape (n_trials,)
    """
    labels = np.asarray(labels).astype(str)
    folds = np.zeros(len(labels), dtype=int)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        for k, block in enumerate(np.array_split(idx, n_folds)):
            folds[block] = k
    return folds


def _log_loss(bundle: Bundle, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Summed log-loss and number correct of ``bundle`` on labelled trials."""
    return _score(bundle.predict_proba(X), bundle.encode(y))


def _score(proba: np.ndarray, idx: np.ndarray) -> tuple[float, float]:
    """Summed log-loss and number correct of class probabilities against class indices."""
    proba = np.clip(proba, 1e-7, 1.0)
    return float(-np.log(proba[np.arange(len(idx)), idx]).sum()), float((proba.argmax(1) == idx).sum())


def cross_fit(candidates: dict[str, Callable[[np.ndarray], Bundle]], X: np.ndarray, y: np.ndarray, *,
              n_folds: int = 2) -> dict[str, dict[str, float]]:
    """Pooled out-of-fold log-loss and accuracy of each candidate.

    Parameters
    ----------
    candidates : dict
        Name -> function that takes a boolean mask of the calibration trials to fit on and
        returns the fitted bundle.
    X : ndarray, shape (n_trials, n_chans, n_times)
        Calibration trials in time order; ``y`` their labels.
    n_folds : int

    Returns
    -------
    scores : dict
        Name -> ``{"log_loss": mean per trial, "accuracy": ...}`` over all the trials.
    """
    folds = chronological_folds(y, n_folds)
    totals = {name: [0.0, 0.0] for name in candidates}
    for k in range(n_folds):
        held = folds == k
        for name, fit in candidates.items():
            loss, correct = _log_loss(fit(~held), X[held], y[held])
            totals[name][0] += loss
            totals[name][1] += correct
    return {name: {"log_loss": t[0] / len(y), "accuracy": t[1] / len(y)} for name, t in totals.items()}


def cross_fit_head(bundle: Bundle, step: Any, X: np.ndarray, y: np.ndarray, *, name: str = "head",
                   n_folds: int = 2, device: Any = None) -> dict[str, dict[str, float]] | None:
    """:func:`cross_fit` of a lone head step (``name``) and the zero-shot model, the trunk run once.

    The head step changes the head only, so every candidate of every fold shares the population's
    trunk: its features (and the zero-shot logits) come from one pass over all the calibration
    trials; each fold fits a copy of the head on the other folds' features, as
    :class:`~eegtransfer.adaptation.Head` would, and scores it on its own. The scores are those
    of ``cross_fit({name: ..., "zero-shot": ...})`` up to float rounding, without a copy of the
    bundle or a pass of the trunk per fold and candidate. ``None`` where the head does not run on
    cached features (use :func:`cross_fit`).
    """
    import copy

    import torch

    from ..training.engine import model_device, same_device
    from .headfit import fit_head
    from .steps import _cached_head_features

    model = bundle.model
    if device is not None and not same_device(model_device(model), device):
        model = copy.deepcopy(model).to(device)  # the population stays where it is
    cached = _cached_head_features(model, bundle.prepare_input(X), device, with_logits=True)
    if cached is None:
        return None
    head, feats, zero_shot = cached
    idx = bundle.encode(y)
    folds = chronological_folds(y, n_folds)
    totals = {name: [0.0, 0.0], "zero-shot": [0.0, 0.0]}
    for k in range(n_folds):
        held = folds == k
        fitted = copy.deepcopy(head.module)
        fit_head(fitted, feats[~held], idx[~held], l2=step.l2, prior="start", balanced=step.balanced)
        with torch.no_grad():
            logits = {name: fitted(feats[held]), "zero-shot": zero_shot[held]}
        for cand, lg in logits.items():
            loss, correct = _score(bundle.proba_from_logits(lg, X[held]), idx[held])
            totals[cand][0] += loss
            totals[cand][1] += correct
    return {cand: {"log_loss": t[0] / len(y), "accuracy": t[1] / len(y)} for cand, t in totals.items()}


def decide(scores: dict[str, dict[str, float]], adapted: str, *, n_compared: int, margin: float = MARGIN,
           n_folds: int = 2) -> GuardDecision:
    """Keep ``adapted`` if its log-loss beats every fallback's by ``margin``, else the best fallback."""
    fallbacks = {k: v for k, v in scores.items() if k != adapted}
    best = min(fallbacks, key=lambda k: fallbacks[k]["log_loss"])
    gain = fallbacks[best]["log_loss"] - scores[adapted]["log_loss"]
    kept = adapted if gain >= margin else best
    verb = "beat" if kept == adapted else "did not beat"
    reason = (f"{adapted} {verb} {best} by the margin on unseen calibration trials (cross-fitted log-loss "
              f"{scores[adapted]['log_loss']:.3f} vs {fallbacks[best]['log_loss']:.3f}, margin {margin:g}; "
              f"accuracy {scores[adapted]['accuracy']:.2f} vs {fallbacks[best]['accuracy']:.2f})")
    return GuardDecision(kept=kept, compared=scores, margin=margin, n_folds=n_folds, n_compared=n_compared,
                         reason=f"kept the {kept} model: {reason}")
