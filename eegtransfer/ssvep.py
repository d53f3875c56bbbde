"""SSVEP knowledge that needs no training: canonical correlation with the stimulation frequencies.

A steady-state visual evoked potential follows the flicker's frequency and its harmonics, so
the canonical correlation of a trial with sine/cosine references at each frequency says a
lot before any learning (Lin et al. 2006). :class:`CCAExpert` turns those correlations into
class probabilities with a small multinomial logistic regression: fitted on the population
when a network is pretrained (a prior), then pulled towards the patient's calibration trials.
A bundle multiplies the network's probabilities by the expert's (a product of experts, see
:meth:`eegtransfer.bundle.Bundle.predict_proba`); the adaptation step ``cca``
(:class:`eegtransfer.adaptation.CCA`) fits it.

Canonical correlations do not change under an invertible spatial filter or a per-channel
scale, so the expert reads the same trials as the network, aligned or not.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from .errors import EEGTransferError

RANK_TOL = 1e-4  # singular values under this share of a trial's largest are rank deficiency
RULE_WEIGHT = 2.0  # logit per standard deviation of a class's own correlation, without a population
CHUNK = 256  # trials per batch of cca_correlations


def ssvep_frequencies(classes: list[str]) -> dict[str, float]:
    """Stimulation frequencies from class names such as ``"13"`` or ``"13Hz"``; others are skipped."""
    out = {}
    for c in classes:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:hz)?\s*", str(c), flags=re.IGNORECASE)
        if m:
            out[str(c)] = float(m.group(1))
    return out


def references(freqs: list[float], n_times: int, sfreq: float, *, n_harmonics: int = 3,
               max_freq: float | None = None) -> list[np.ndarray]:
    """Sine/cosine references per frequency, harmonics under ``max_freq``: each (n_times, 2 * n_harm)."""
    t = np.arange(n_times) / sfreq
    max_freq = sfreq / 2 if max_freq is None else min(max_freq, sfreq / 2)
    refs = []
    for f in freqs:
        harm = [k * f for k in range(1, n_harmonics + 1) if k * f < max_freq]
        if not harm:
            raise EEGTransferError(f"stimulation frequency {f:g} Hz is above the data's band (under {max_freq:g} Hz)")
        refs.append(np.stack([fn(2 * np.pi * h * t) for h in harm for fn in (np.sin, np.cos)], axis=1))
    return refs


def cca_correlations(X: np.ndarray, sfreq: float, freqs: list[float], *, n_harmonics: int = 3,
                     max_freq: float | None = None) -> np.ndarray:
    """First canonical correlation of each trial with each frequency's references.

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_chans, n_times)
    sfreq : float
        Sampling rate in Hz.
    freqs : list of float
        Stimulation frequencies in Hz.
    n_harmonics : int
        Harmonics per frequency (1: the fundamental only).
    max_freq : float | None
        Harmonics at or above it are left out (the recipe's low-pass); ``None``: Nyquist.

    Returns
    -------
    rho : ndarray, shape (n_trials, n_freqs)

    Notes
    -----
    Trials are processed ``CHUNK`` at a time (each trial's correlations depend on it
    alone), so memory does not grow with the number of trials and ``X`` may be trials
    on disk (:class:`~eegtransfer.training.streaming.DiskTrials`).
    """
    if len(X) > CHUNK:
        return np.concatenate([cca_correlations(X[i:i + CHUNK], sfreq, freqs, n_harmonics=n_harmonics,
                                                max_freq=max_freq) for i in range(0, len(X), CHUNK)])
    X = np.asarray(X, dtype=np.float64)
    Xc = X - X.mean(axis=2, keepdims=True)
    # An orthonormal basis of each trial's channel space. Interpolated channels are linear
    # combinations of recorded ones: their directions of (near) zero variance are dropped,
    # or rounding noise would correlate with the references.
    u, sv = np.linalg.svd(np.swapaxes(Xc, 1, 2), full_matrices=False)[:2]  # (n, n_times, n_chans)
    qx = u * (sv > RANK_TOL * sv[:, :1])[:, None, :]
    out = np.empty((len(X), len(freqs)))
    for j, r in enumerate(references(freqs, X.shape[2], sfreq, n_harmonics=n_harmonics, max_freq=max_freq)):
        qy = np.linalg.qr(r - r.mean(axis=0))[0]
        out[:, j] = np.linalg.svd(np.swapaxes(qx, 1, 2) @ qy, compute_uv=False)[:, 0]
    return out


class CCAExpert:
    """Class probabilities from canonical correlations: a multinomial logistic regression.

    The features are the correlations with each stimulation frequency, standardised with the
    statistics of the data it is fitted on, or the prior's. A class without a frequency (``rest``) is
    learnt from the overall level of the correlations. Fitting minimises the class-balanced
    mean cross-entropy plus ``l2 / 2`` times the squared distance of the weights and
    intercepts to ``prior`` (a fitted expert with the same classes and frequencies, usually
    the population's) or, without one, to the training-free rule of CCA (each class's logit
    grows with the correlation at its own frequency): a new set of frequencies calibrated on a
    few seconds per class starts from what a CCA detector knows.

    Parameters
    ----------
    classes : list of str
        Output order (the bundle's classes).
    freqs : dict
        Class name -> stimulation frequency in Hz; at least one.
    sfreq : float
        Sampling rate of the trials.
    n_harmonics, max_freq :
        As in :func:`cca_correlations`.
    weight : float
        Exponent of the expert in the product with the network; 0 keeps it as a prior only.
    """

    def __init__(self, classes: list[str], freqs: dict[str, float], sfreq: float, *, n_harmonics: int = 3,
                 max_freq: float | None = None, weight: float = 1.0) -> None:
        if not freqs:
            raise EEGTransferError(f"no stimulation frequency among the classes {classes}: "
                                   "CCA needs SSVEP classes named by frequency, such as '13' or '13Hz'")
        self.classes = [str(c) for c in classes]
        self.freqs = {str(k): float(v) for k, v in freqs.items()}
        self.sfreq, self.n_harmonics, self.max_freq, self.weight = float(sfreq), n_harmonics, max_freq, weight
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.coef_ = np.zeros((len(self.classes), len(self.freqs)))
        self.intercept_ = np.zeros(len(self.classes))

    @classmethod
    def for_classes(cls, classes: list[str], sfreq: float, *, max_freq: float | None = None,
                    weight: float = 1.0) -> CCAExpert | None:
        """An unfitted expert when some class names are frequencies, else ``None``."""
        freqs = ssvep_frequencies(classes)
        return cls(classes, freqs, sfreq, max_freq=max_freq, weight=weight) if freqs else None

    def correlations(self, X: np.ndarray) -> np.ndarray:
        """Canonical correlations with each of the expert's frequencies, shape (n_trials, n_freqs)."""
        return cca_correlations(X, self.sfreq, list(self.freqs.values()), n_harmonics=self.n_harmonics,
                                max_freq=self.max_freq)

    def features(self, X: np.ndarray) -> np.ndarray:
        """Standardised correlations, shape (n_trials, n_freqs), with the statistics of :meth:`fit`."""
        if self.mean_ is None:
            raise EEGTransferError("this CCAExpert is not fitted: call fit() first")
        return (self.correlations(X) - self.mean_) / self.scale_

    def fit(self, X: np.ndarray, y: np.ndarray, *, l2: float = 1.0, prior: CCAExpert | None = None) -> CCAExpert:
        """Fit on trials ``X`` (n_trials, n_chans, n_times) with class names ``y``; returns self."""
        from scipy.optimize import minimize

        rho = self.correlations(X)
        if prior is not None:
            self.mean_, self.scale_ = prior.mean_, prior.scale_
            w0 = np.concatenate([prior.coef_.ravel(), prior.intercept_])
        else:
            self.mean_, self.scale_ = rho.mean(axis=0), rho.std(axis=0) + 1e-3
        F = (rho - self.mean_) / self.scale_
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted(set(np.asarray(y, str).tolist()) - set(index))
        if unknown:
            raise EEGTransferError(f"labels {unknown} are not among the expert's classes {self.classes}")
        Y = np.eye(len(self.classes))[[index[c] for c in np.asarray(y, str)]]
        # Every class weighs the same: a chronological calibration window is mostly one class.
        sw = (Y / np.maximum(Y.sum(axis=0), 1)).sum(axis=1, keepdims=True) / (Y.sum(axis=0) > 0).sum()
        k, d = self.coef_.shape
        w0 = self._rule() if prior is None else w0

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            W, b = w[:k * d].reshape(k, d), w[k * d:]
            logp = _log_softmax(F @ W.T + b)
            g = (np.exp(logp) - Y) * sw
            diff = w - w0
            grad = np.concatenate([(g.T @ F).ravel(), g.sum(axis=0)]) + l2 * diff
            return float(-(sw * Y * logp).sum() + 0.5 * l2 * diff @ diff), grad

        w = minimize(loss, w0.copy(), jac=True, method="L-BFGS-B", options={"maxiter": 500}).x
        self.coef_, self.intercept_ = w[:k * d].reshape(k, d), w[k * d:]
        return self

    def _rule(self) -> np.ndarray:
        """Weights of the training-free rule, the prior without a population: each class's
        logit grows with its own frequency's correlation (``RULE_WEIGHT`` per standard deviation)."""
        W = np.zeros_like(self.coef_)
        for j, name in enumerate(self.freqs):
            W[self.classes.index(name), j] = RULE_WEIGHT
        return np.concatenate([W.ravel(), np.zeros(len(self.classes))])

    def log_proba(self, X: np.ndarray) -> np.ndarray:
        """Log-probabilities, shape (n_trials, n_classes), columns in ``classes`` order."""
        return _log_softmax(self.features(X) @ self.coef_.T + self.intercept_)

    def to_dict(self) -> dict[str, Any]:
        return {"classes": self.classes, "freqs": self.freqs, "sfreq": self.sfreq,
                "n_harmonics": self.n_harmonics, "max_freq": self.max_freq, "weight": self.weight,
                "mean": None if self.mean_ is None else self.mean_.tolist(),
                "scale": None if self.scale_ is None else self.scale_.tolist(),
                "coef": self.coef_.tolist(), "intercept": self.intercept_.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CCAExpert | None:
        if not d:
            return None
        e = cls(d["classes"], d["freqs"], d["sfreq"], n_harmonics=d["n_harmonics"], max_freq=d["max_freq"],
                weight=d["weight"])
        e.mean_ = None if d["mean"] is None else np.asarray(d["mean"], float)
        e.scale_ = None if d["scale"] is None else np.asarray(d["scale"], float)
        e.coef_, e.intercept_ = np.asarray(d["coef"], float), np.asarray(d["intercept"], float)
        return e

    def __repr__(self) -> str:
        return f"CCAExpert(freqs={self.freqs}, weight={self.weight:g})"


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
