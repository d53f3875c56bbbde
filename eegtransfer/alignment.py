"""Euclidean alignment (He & Wu, 2019): whiten a subject's trials by its mean covariance.

After alignment the subject's mean spatial covariance is the identity, which
removes much of the between-subject shift without any label. The reference
is estimated from unlabelled trials and stored with the model.
"""

from __future__ import annotations

import numpy as np

from .errors import EEGTransferError


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


def alignment_matrix(X: np.ndarray) -> np.ndarray:
    """``R^{-1/2}`` for the trials ``X``, shape (n_chans, n_chans)."""
    return inverse_sqrt(mean_covariance(X))


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
