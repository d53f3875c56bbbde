"""SSVEP knowledge that needs no training: canonical correlation with the stimulation frequencies.

A steady-state visual evoked potential follows the flicker's frequency and its harmonics, so
the canonical correlation of a trial with sine/cosine references at each frequency says a
lot before any learning (Lin et al. 2006). Correlations on sub-bands that start under each
frequency (a filter bank, after Chen et al. 2015) keep the low-frequency background out of the
higher frequencies' correlations. :class:`CCAExpert` turns those correlations into
class probabilities with a small multinomial logistic regression: fitted on the population
when a network is pretrained (a prior), then pulled towards the patient's calibration trials.
A bundle multiplies the network's probabilities by the expert's (a product of experts, see
:meth:`eegtransfer.bundle.Bundle.predict_proba`); the adaptation step ``cca``
(:class:`eegtransfer.adaptation.CCA`) fits it.

Canonical correlations do not change under an invertible spatial filter or a per-channel
scale, so the expert reads the same trials as the network, aligned or not.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np

from .errors import EEGTransferError, check_number

logger = logging.getLogger("eegtransfer")

RANK_TOL = 1e-4  # singular values under this share of a trial's largest are rank deficiency
RULE_WEIGHT = 2.0  # logit per standard deviation of a class's own correlation, without a population
MAX_WEIGHT = 10.0  # the largest exponent fit_weight considers
MIN_NET_WEIGHT = 0.05  # fit_weight warns when the network's exponent is under this share of the expert's
CHUNK = 256  # trials per batch of cca_correlations
SUBBAND_MARGIN = 1.0  # Hz: each sub-band of the filter bank starts this far under its frequency
FILTER_ORDER = 4  # Butterworth order of the sub-band filters (applied forwards and backwards)
N_COMPONENTS = 2  # canonical correlations per band and frequency that the expert reads
# Share of its own evidence a population's expert (pretraining's, and the patients' fitted from it) keeps
# on classes without a frequency (rest): the overall level of the correlations, from which it learns
# rest, falls between a person's runs. On validation subjects' later runs
# (benchmarks/results/dev_rest_evidence) half cut auto's harmed cells from 7 to 5 and kept its accuracy
# (+1.2 / +1.0 / +0.4 points); none (0) cut them to 2 and cost 3.8 / 3.8 / 2.7 points. An expert without
# a population (a new class set) keeps its full say (1, CCAExpert's default): there half cost 2.5
# points (benchmarks/results/dev_new_setup).
REST_EVIDENCE = 0.5

Band = tuple[float, float] | None  # (low, high) in Hz; None: the trials as they are


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
                     max_freq: float | None = None, n_components: int = 1) -> np.ndarray:
    """The first canonical correlations of each trial with each frequency's references.

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
    n_components : int
        Canonical correlations per frequency, largest first (zeros where there are fewer).

    Returns
    -------
    rho : ndarray, shape (n_trials, n_components * n_freqs)
        Column ``c * n_freqs + j``: the ``c``-th correlation with frequency ``j``.

    Notes
    -----
    Trials are processed ``CHUNK`` at a time (each trial's correlations depend on it
    alone), so memory does not grow with the number of trials and ``X`` may be trials
    on disk (:class:`~eegtransfer.training.streaming.DiskTrials`).
    """
    return _in_chunks(lambda x: _correlations(x, sfreq, freqs, n_harmonics, max_freq, n_components), X)


def _in_chunks(fn: Any, X: np.ndarray) -> np.ndarray:
    """``fn`` on ``CHUNK`` trials at a time, as float64 arrays (``X`` may be trials on disk)."""
    return np.concatenate([fn(np.asarray(X[i:i + CHUNK], dtype=np.float64))
                           for i in range(0, max(len(X), 1), CHUNK)])


def _correlations(X: np.ndarray, sfreq: float, freqs: list[float], n_harmonics: int, max_freq: float | None,
                  n_components: int) -> np.ndarray:
    """:func:`cca_correlations` of one chunk of trials."""
    Xc = X - X.mean(axis=2, keepdims=True)
    # An orthonormal basis of each trial's channel space. Interpolated channels are linear
    # combinations of recorded ones: their directions of (near) zero variance are dropped,
    # or rounding noise would correlate with the references.
    u, sv = np.linalg.svd(np.swapaxes(Xc, 1, 2), full_matrices=False)[:2]  # (n, n_times, n_chans)
    qx = u * (sv > RANK_TOL * sv[:, :1])[:, None, :]
    out = np.zeros((len(X), n_components, len(freqs)))
    for j, r in enumerate(references(freqs, X.shape[2], sfreq, n_harmonics=n_harmonics, max_freq=max_freq)):
        qy = np.linalg.qr(r - r.mean(axis=0))[0]
        rho = np.linalg.svd(np.swapaxes(qx, 1, 2) @ qy, compute_uv=False)[:, :n_components]
        out[:, :rho.shape[1], j] = rho
    return out.reshape(len(X), -1)


def subbands(freqs: list[float], sfreq: float, *, max_freq: float | None = None) -> list[Band]:
    """The filter bank: the trials as they are, then one sub-band per frequency.

    Sub-band ``k`` runs from ``SUBBAND_MARGIN`` Hz under the ``k``-th lowest frequency to
    ``max_freq`` (at most 95 % of Nyquist), so that each frequency and its harmonics are seen without the
    lower-frequency background; frequencies too close to the top get none.
    """
    high = band_top(sfreq, max_freq)
    starts = sorted({round(f - SUBBAND_MARGIN, 6) for f in freqs})
    return [None] + [(lo, float(high)) for lo in starts if 0 < lo < high - 2]


def band_top(sfreq: float, max_freq: float | None = None) -> float:
    """The top of every filter-bank band: ``max_freq`` (the recipe's low-pass), at most 95 % of Nyquist."""
    return float(min(max_freq, 0.95 * sfreq / 2) if max_freq is not None else 0.95 * sfreq / 2)


def band_pass(X: np.ndarray, sfreq: float, band: Band) -> np.ndarray:
    """Zero-phase Butterworth band-pass of trials along time; ``band=None`` returns ``X``."""
    if band is None:
        return X
    from scipy.signal import butter, sosfiltfilt

    sos = butter(FILTER_ORDER, band, btype="bandpass", fs=sfreq, output="sos")
    padlen = min(3 * (2 * len(sos) + 1), X.shape[-1] - 1)  # scipy's default, shortened for short trials
    return sosfiltfilt(sos, np.asarray(X, dtype=np.float64), axis=-1, padlen=padlen)


def filter_bank_correlations(X: np.ndarray, sfreq: float, freqs: list[float], bands: list[Band], *,
                             n_harmonics: int = 3, max_freq: float | None = None,
                             n_components: int = 1) -> np.ndarray:
    """:func:`cca_correlations` on each band of a filter bank, side by side.

    Returns
    -------
    rho : ndarray, shape (n_trials, n_bands * n_components * n_freqs)
        Band-major: columns ``(b * n_components + c) * n_freqs + j`` hold band ``b``,
        component ``c``, frequency ``j``.
    """
    def chunk(x: np.ndarray) -> np.ndarray:
        return np.concatenate([_correlations(band_pass(x, sfreq, b), sfreq, freqs, n_harmonics, max_freq,
                                             n_components) for b in bands], axis=1)

    return _in_chunks(chunk, X)


class CCAExpert:
    """Class probabilities from canonical correlations: a multinomial logistic regression.

    The features are the first two canonical correlations with each stimulation frequency on
    each band of a filter bank (:func:`subbands`), standardised with the statistics of the data
    it is fitted on, or the prior's. A class without a frequency (``rest``) is learnt from the
    overall level of the correlations; that level drifts between a person's runs, so in
    :meth:`log_proba` the expert keeps only ``rest_evidence`` of its say on such a class (see
    ``REST_EVIDENCE``). Fitting minimises the class-balanced
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
    net_weight : float
        Exponent of the network's probabilities in that product (an inverse temperature): a
        network trained by cross-entropy is overconfident on new subjects, and this tempers it.
    bands : "auto" | list of (low, high) or None
        The filter bank: ``"auto"`` is :func:`subbands`; ``[None]`` is the trials as they are
        (plain CCA, as in bundles written before the filter bank).
    n_components : int
        Canonical correlations per band and frequency (bundles written before it: 1).
    rest_evidence : float
        Between 0 and 1: the share of the expert's own log-probabilities used for classes
        without a frequency; the rest is its softmax over the stimulation classes, with
        ``1 / n_stimulation_classes`` for the others (no evidence either way). 1 (the full say)
        by default, as for bundles written before it; a population's expert gets
        ``REST_EVIDENCE`` at pretraining, and the patients' experts fitted from it inherit it.
    """

    def __init__(self, classes: list[str], freqs: dict[str, float], sfreq: float, *, n_harmonics: int = 3,
                 max_freq: float | None = None, weight: float = 1.0, bands: str | list[Band] = "auto",
                 n_components: int = N_COMPONENTS, net_weight: float = 1.0,
                 rest_evidence: float = 1.0) -> None:
        if not freqs:
            raise EEGTransferError(f"no stimulation frequency among the classes {classes}: "
                                   "CCA needs SSVEP classes named by frequency, such as '13' or '13Hz'")
        self.classes = [str(c) for c in classes]
        self.freqs = {str(k): float(v) for k, v in freqs.items()}
        self.sfreq, self.n_harmonics, self.max_freq, self.weight = float(sfreq), n_harmonics, max_freq, weight
        check_number("CCAExpert weight=", weight)
        check_number("CCAExpert net_weight=", net_weight)
        self.net_weight = float(net_weight)
        check_number("CCAExpert rest_evidence=", rest_evidence)
        if not 0.0 <= rest_evidence <= 1.0:
            raise EEGTransferError(f"CCAExpert rest_evidence= must be between 0 and 1, got {rest_evidence}")
        self.rest_evidence = float(rest_evidence)
        self.bands = _check_bands(subbands(list(self.freqs.values()), self.sfreq, max_freq=max_freq)
                                  if isinstance(bands, str) and bands == "auto" else bands, self.sfreq)
        if int(n_components) < 1:
            raise EEGTransferError(f"n_components must be >= 1, got {n_components}")
        self.n_components = int(n_components)
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.coef_ = np.zeros((len(self.classes), len(self.bands) * self.n_components * len(self.freqs)))
        self.intercept_ = np.zeros(len(self.classes))
        self.fitted_weight_: float | None = None
        self.fitted_net_weight_: float | None = None

    @classmethod
    def for_classes(cls, classes: list[str], sfreq: float, *, max_freq: float | None = None,
                    weight: float = 1.0, bands: str | list[Band] = "auto",
                    n_components: int = N_COMPONENTS, rest_evidence: float = 1.0) -> CCAExpert | None:
        """An unfitted expert when some class names are frequencies, else ``None``."""
        freqs = ssvep_frequencies(classes)
        return cls(classes, freqs, sfreq, max_freq=max_freq, weight=weight, bands=bands,
                   n_components=n_components, rest_evidence=rest_evidence) if freqs else None

    def correlations(self, X: np.ndarray) -> np.ndarray:
        """Canonical correlations, shape (n_trials, n_features), as in :func:`filter_bank_correlations`."""
        return filter_bank_correlations(X, self.sfreq, list(self.freqs.values()), self.bands,
                                        n_harmonics=self.n_harmonics, max_freq=self.max_freq,
                                        n_components=self.n_components)

    def features(self, X: np.ndarray) -> np.ndarray:
        """Standardised correlations, shape (n_trials, n_features), with :meth:`fit`'s statistics."""
        if self.mean_ is None:
            raise EEGTransferError("this CCAExpert is not fitted: call fit() first")
        return (self.correlations(X) - self.mean_) / self.scale_

    def fit(self, X: np.ndarray, y: np.ndarray, *, l2: float = 1.0, prior: CCAExpert | None = None) -> CCAExpert:
        """Fit on trials ``X`` (n_trials, n_chans, n_times) with class names ``y``; returns self."""
        from scipy.optimize import minimize

        if prior is not None and ((prior.freqs, prior.bands, prior.sfreq, prior.n_components)
                                  != (self.freqs, self.bands, self.sfreq, self.n_components)):
            raise EEGTransferError(f"the prior {prior!r} reads other features (frequencies, bands, components "
                                   f"or sampling rate) than this expert {self!r}")
        rho = self.correlations(X)
        if prior is not None:
            self.mean_, self.scale_ = prior.mean_, prior.scale_
            w0 = np.concatenate([prior.coef_.ravel(), prior.intercept_])
        else:
            self.mean_, self.scale_ = rho.mean(axis=0), rho.std(axis=0) + 1e-3
        F = (rho - self.mean_) / self.scale_
        Y = np.eye(len(self.classes))[self._class_index(y)]
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

    def fit_weight(self, net_log_proba: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
        """The exponents of this expert and of a network in their product that fit unseen trials best.

        Minimises the mean log-loss of ``softmax(a * net_log_proba + w * log_proba(X))`` over
        ``0 <= a, w <= MAX_WEIGHT`` (a convex problem). Fitting the network's exponent ``a`` too
        (temperature scaling) matters: with ``a`` fixed at 1 an overconfident network pulls ``w``
        down, because the log-loss cannot temper the network any other way, and the product then
        follows the network more than its accuracy warrants. Pretraining calls this on the
        validation subjects, whom the network never trained on. The expert did train on them, and
        that leans the fit towards it: on the development trials of
        ``benchmarks/fusion_weights.py`` an expert that had not seen them gave a median ratio
        ``w / a`` of 1.7 instead of 3.8, and a lower accuracy (83.9 % against 86.0 % at 2 min).
        Stored in ``fitted_weight_`` and ``fitted_net_weight_`` (the ``cca`` step's defaults), which
        then apply to the network after the steps before ``cca`` (AdaBN, a new head) as well.

        Parameters
        ----------
        net_log_proba : ndarray, shape (n_trials, n_classes)
            The network's log-probabilities, columns in ``classes`` order.
        X : ndarray, shape (n_trials, n_chans, n_times)
        y : ndarray of str, shape (n_trials,)

        Returns
        -------
        weight : float
            The expert's exponent, ``fitted_weight_``.
        """
        from scipy.optimize import minimize

        cols = self._class_index(y, "fit_weight")
        if np.shape(net_log_proba) != (len(y), len(self.classes)):
            raise EEGTransferError(f"fit_weight: net_log_proba must have shape ({len(y)}, {len(self.classes)}), "
                                   f"got {np.shape(net_log_proba)}")
        rows = np.arange(len(y))
        parts = np.stack([np.asarray(net_log_proba, float), self.log_proba(X)])  # (2, n_trials, n_classes)

        def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
            logp = _log_softmax(np.tensordot(ab, parts, axes=1))
            # d/d(ab) of -mean log p[y]: E_p[part] - part[y], averaged over trials
            grad = ((np.exp(logp)[None] * parts).sum(-1) - parts[:, rows, cols]).mean(axis=1)
            return float(-logp[rows, cols].mean()), grad

        a, w = minimize(loss, np.ones(2), jac=True, method="L-BFGS-B", bounds=[(0.0, MAX_WEIGHT)] * 2).x
        self.fitted_net_weight_, self.fitted_weight_ = float(a), float(w)
        if a < MIN_NET_WEIGHT * max(w, 1.0):
            logger.warning("the network's exponent in the product came out at %.3f against the CCA expert's "
                           "%.2f: on these validation trials the network adds little to the expert", a, w)
        if max(a, w) > 0.99 * MAX_WEIGHT:
            logger.warning("an exponent of the product reached its bound %g (network %.2f, expert %.2f): the "
                           "validation trials are fitted with near certainty", MAX_WEIGHT, a, w)
        return self.fitted_weight_

    def _class_index(self, y: np.ndarray, what: str = "") -> np.ndarray:
        """Each label's column in ``classes``; a label outside them is an error (naming ``what``)."""
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted(set(np.asarray(y, str).tolist()) - set(index))
        if unknown:
            raise EEGTransferError(f"{what + ': ' if what else ''}labels {unknown} are not among the expert's "
                                   f"classes {self.classes}")
        return np.array([index[c] for c in np.asarray(y, str)], dtype=int)

    def unfitted(self, *, weight: float, net_weight: float = 1.0) -> CCAExpert:
        """A new, unfitted expert that reads the same features (frequencies, bands, components)."""
        return type(self)(self.classes, self.freqs, self.sfreq, n_harmonics=self.n_harmonics,
                          max_freq=self.max_freq, weight=weight, bands=self.bands, n_components=self.n_components,
                          net_weight=net_weight, rest_evidence=self.rest_evidence)

    def _rule(self) -> np.ndarray:
        """Weights of the training-free rule, the prior without a population: each class's
        logit grows with its own frequency's first correlation, averaged over the bands
        (``RULE_WEIGHT`` per standard deviation)."""
        W = np.zeros_like(self.coef_)
        per_band = self.n_components * len(self.freqs)
        for j, name in enumerate(self.freqs):
            W[self.classes.index(name), j::per_band] = RULE_WEIGHT / len(self.bands)
        return np.concatenate([W.ravel(), np.zeros(len(self.classes))])

    def log_proba(self, X: np.ndarray) -> np.ndarray:
        """Log-probabilities, shape (n_trials, n_classes), columns in ``classes`` order.

        Classes without a frequency get ``rest_evidence`` of the expert's own log-probability
        and the rest of ``log(1 / n_stimulation_classes)``; the stimulation classes the same
        share of their own and the rest of their softmax among themselves; then normalised
        (a geometric mixture of the two distributions).
        """
        logits = self.features(X) @ self.coef_.T + self.intercept_
        full = _log_softmax(logits)
        stim = np.array([c in self.freqs for c in self.classes])
        if self.rest_evidence == 1.0 or stim.all():
            return full
        neutral = np.full_like(full, -np.log(stim.sum()))
        neutral[:, stim] = _log_softmax(logits[:, stim])
        return _log_softmax(self.rest_evidence * full + (1.0 - self.rest_evidence) * neutral)

    def to_dict(self) -> dict[str, Any]:
        return {"classes": self.classes, "freqs": self.freqs, "sfreq": self.sfreq,
                "n_harmonics": self.n_harmonics, "max_freq": self.max_freq, "weight": self.weight,
                "bands": [None if b is None else list(b) for b in self.bands], "n_components": self.n_components,
                "mean": None if self.mean_ is None else self.mean_.tolist(),
                "scale": None if self.scale_ is None else self.scale_.tolist(),
                "coef": self.coef_.tolist(), "intercept": self.intercept_.tolist(),
                "net_weight": self.net_weight, "fitted_weight": self.fitted_weight_,
                "fitted_net_weight": self.fitted_net_weight_, "rest_evidence": self.rest_evidence}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CCAExpert | None:
        if not d:
            return None
        e = cls(d["classes"], d["freqs"], d["sfreq"], n_harmonics=d["n_harmonics"], max_freq=d["max_freq"],
                weight=d["weight"], bands=d.get("bands", [None]),  # bundles before the filter bank: plain CCA
                n_components=d.get("n_components", 1), net_weight=d.get("net_weight", 1.0),
                rest_evidence=d.get("rest_evidence", 1.0))  # bundles before it: the expert's full say
        e.mean_ = None if d["mean"] is None else np.asarray(d["mean"], float)
        e.scale_ = None if d["scale"] is None else np.asarray(d["scale"], float)
        e.coef_, e.intercept_ = np.asarray(d["coef"], float), np.asarray(d["intercept"], float)
        e.fitted_weight_ = d.get("fitted_weight")
        e.fitted_net_weight_ = d.get("fitted_net_weight")
        return e

    def __repr__(self) -> str:
        return (f"CCAExpert(freqs={self.freqs}, bands={len(self.bands)}, n_components={self.n_components}, "
                f"weight={self.weight:g}, net_weight={self.net_weight:g}, rest_evidence={self.rest_evidence:g})")


def _check_bands(bands: list[Band], sfreq: float) -> list[Band]:
    """Bands as (low, high) tuples inside (0, Nyquist), or None; a clear error names a bad one."""
    if isinstance(bands, str) or not len(bands):
        raise EEGTransferError(f"bands= must be 'auto' or a non-empty list of (low, high) or None, got {bands!r}")
    out: list[Band] = []
    for b in bands:
        if b is not None:
            try:
                lo, hi = (float(v) for v in b)
            except (TypeError, ValueError):
                raise EEGTransferError(f"bands=: each band must be (low, high) in Hz or None, got {b!r}") from None
            if not 0 < lo < hi < sfreq / 2:
                raise EEGTransferError(f"band ({lo:g}, {hi:g}) Hz must satisfy 0 < low < high < {sfreq / 2:g} "
                                       "(the Nyquist frequency)")
            b = (lo, hi)
        out.append(b)
    return out


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
