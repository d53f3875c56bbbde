"""Euclidean alignment (He & Wu, 2019): whiten a subject's trials by its mean covariance.

After alignment the subject's mean spatial covariance is the identity, which
removes much of the between-subject shift without any label. The reference
is estimated from unlabelled trials and stored with the model.

A patient's mean covariance may be singular: average reference removes one
dimension, a copied or bridged channel another. Its eigenvalues below
``EIGEN_FLOOR`` times their mean are raised to that floor before the inverse
square root, so those directions are scaled by a bounded factor instead of
by ``1/sqrt(0)``; the other directions are whitened exactly, and a
well-conditioned covariance is not changed at all.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import EEGTransferError

logger = logging.getLogger("eegtransfer")

# Relative to the mean eigenvalue (trace / n_chans). Scalp EEG's spatial spectrum
# rarely spans 1000:1 on the channels a model uses; numerical rank loss is < 1e-6.
EIGEN_FLOOR = 1e-3


def mean_covariance(X: np.ndarray) -> np.ndarray:
    """Arithmetic mean of per-trial spatial covariances.

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_chans, n_times)

    Returns
    -------
    C : ndarray, shape (n_chans, n_chans)
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 3 or len(X) == 0:
        raise EEGTransferError(f"expected trials of shape (n_trials, n_chans, n_times), got {X.shape}")
    Xc = X - X.mean(axis=-1, keepdims=True)
    return np.einsum("nct,ndt->cd", Xc, Xc) / (X.shape[0] * X.shape[-1])


def inverse_sqrt(C: np.ndarray, eps: float = 1e-10) -> np.ndarray:
    """Symmetric inverse square root ``C^{-1/2}``."""
    w, V = np.linalg.eigh((C + C.T) / 2)
    if w.min() <= eps * max(w.max(), eps):
        raise EEGTransferError(
            "mean covariance is singular (rank-deficient channels, e.g. after average "
            "reference or a copied channel); alignment needs full-rank data"
        )
    return (V / np.sqrt(w)) @ V.T


def regularized_inverse_sqrt(C: np.ndarray, floor: float = EIGEN_FLOOR) -> np.ndarray:
    """``C^{-1/2}`` with eigenvalues below ``floor * mean eigenvalue`` raised to it.

    Parameters
    ----------
    C : ndarray, shape (n, n)
        A symmetric positive semi-definite matrix.
    floor : float
        Smallest eigenvalue kept, relative to ``trace(C) / n``.

    Returns
    -------
    W : ndarray, shape (n, n)

    Raises
    ------
    EEGTransferError
        If ``C`` is not finite or is zero (no signal to align).
    """
    C = (np.asarray(C, dtype=np.float64) + np.asarray(C, dtype=np.float64).T) / 2
    if not np.all(np.isfinite(C)):
        raise EEGTransferError("mean covariance has NaN or infinite entries; alignment needs finite data")
    w, V = np.linalg.eigh(C)
    level = floor * max(float(np.trace(C)) / len(C), 0.0)
    if level <= 0:
        raise EEGTransferError("mean covariance is zero (flat trials); alignment needs a signal")
    low = int((w < level).sum())
    if low:
        logger.info("alignment: %d of %d directions of the mean covariance are (nearly) rank-deficient, "
                    "e.g. after average reference; regularised to %g of the mean eigenvalue",
                    low, len(w), floor)
    return (V / np.sqrt(np.maximum(w, level))) @ V.T


def alignment_matrix(X: np.ndarray) -> np.ndarray:
    """``R^{-1/2}`` for the trials ``X``, shape (n_chans, n_chans).

    Regularised by :func:`regularized_inverse_sqrt`, so a rank-deficient
    ``R`` (average reference, few trials) still gives a finite matrix.
    """
    return regularized_inverse_sqrt(mean_covariance(X))


def apply_alignment(X: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Left-multiply each trial by ``W``: shape (n_trials, n_chans, n_times), float32."""
    return np.einsum("cd,ndt->nct", W, np.asarray(X, dtype=np.float64)).astype(np.float32)


def align_per_group(X: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Align each group (subject) with its own reference; used in pretraining."""
    out = np.empty_like(X, dtype=np.float32)
    for g in np.unique(groups):
        idx = groups == g
        out[idx] = apply_alignment(X[idx], alignment_matrix(X[idx]))
    return out
