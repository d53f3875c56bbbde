"""Label-free class balance over one recording (transductive).

A decoder calibrated on one run can drift towards one class on a later run: a patient's
weakened 13 Hz response is called ``rest``. When the recording is known to hold the classes in
fixed proportions (a balanced design, as in most BCI paradigms), the drift shows without
labels as a skew in the mean predicted probability. :func:`balance_classes` removes it by
rescaling each class's probability until the recording's mean matches the design's proportions:
Vidaurre et al. (2011)'s unsupervised bias adaptation of LDA, for any number of classes and
any probabilistic decoder, computed as iterative proportional fitting (Sinkhorn). It needs the
whole recording (or a batch of it) before predicting, so it is an offline or batch option, never
applied unless asked for.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import EEGTransferError

logger = logging.getLogger("eegtransfer")


def balance_classes(proba: np.ndarray, prior: np.ndarray | None = None, *, groups: np.ndarray | None = None,
                    max_iter: int = 1000, tol: float = 1e-9) -> np.ndarray:
    """Rescale one recording's class probabilities so that their mean is ``prior``.

    Each class ``k`` gets one factor ``w_k``; every trial's probabilities become
    ``p_ik w_k / sum_j p_ij w_j``. The factors are those for which the recording's mean
    probability of every class equals ``prior``. The order of the classes by each trial is
    unchanged up to one shift per class, as an LDA's bias adaptation shifts its threshold.

    Parameters
    ----------
    proba : ndarray, shape (n_trials, n_classes)
        Class probabilities of the trials of one recording (rows sum to 1).
    prior : ndarray, shape (n_classes,) | None
        The classes' proportions in the recording's design; ``None`` means equal.
    groups : ndarray, shape (n_trials,) | None
        The recording (run) of each trial: each one is balanced on its own. ``None``: one recording.
    max_iter : int
        At most this many rescalings.
    tol : float
        Stop when every class's mean is within ``tol`` of ``prior``.

    Returns
    -------
    balanced : ndarray, shape (n_trials, n_classes)
    """
    proba = np.asarray(proba, dtype=float)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise EEGTransferError(f"max_iter must be a whole number >= 1, got {max_iter!r}")
    if not tol > 0:
        raise EEGTransferError(f"tol must be > 0, got {tol!r}")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != proba.shape[:1]:
            raise EEGTransferError(f"groups must give one recording per trial ({len(proba)}), got shape {groups.shape}")
        out = np.empty_like(proba)
        for g in np.unique(groups):
            try:
                out[groups == g] = balance_classes(proba[groups == g], prior, max_iter=max_iter, tol=tol)
            except EEGTransferError as err:
                raise EEGTransferError(f"recording {g.item()!r}: {err}") from None
        return out
    if proba.ndim != 2 or proba.shape[1] < 2:
        raise EEGTransferError(f"proba must have shape (n_trials, n_classes >= 2), got {proba.shape}")
    if len(proba) < proba.shape[1]:
        raise EEGTransferError(f"balancing the classes needs at least as many trials as classes "
                               f"({proba.shape[1]}), got {len(proba)}")
    if not np.all(np.isfinite(proba)) or np.any(proba < 0):
        raise EEGTransferError("proba must hold finite, non-negative probabilities")
    k = proba.shape[1]
    prior = np.full(k, 1.0 / k) if prior is None else np.asarray(prior, dtype=float)
    if prior.shape != (k,) or np.any(prior <= 0) or not np.isclose(prior.sum(), 1.0):
        raise EEGTransferError(f"prior must be {k} positive proportions that sum to 1, got {prior}")
    prior = prior / prior.sum()  # 1/3 written as 0.333333 can still be reached
    p = np.clip(proba, 1e-12, None)  # a class no trial supports can still be rescaled
    w = np.ones(k)
    for _ in range(max_iter):
        q = p * w
        q /= q.sum(1, keepdims=True)
        mean = q.mean(0)
        if np.max(np.abs(mean - prior)) < tol:
            break
        w *= prior / mean
    else:  # near-certain probabilities converge slowly
        logger.warning("balance_classes: after %d rescalings the class means are %s, not yet the prior %s",
                       max_iter, np.round(mean, 4).tolist(), np.round(prior, 4).tolist())
    return q
