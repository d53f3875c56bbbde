"""Spatial covariances of trials and the patient's own tangent-space classifier.

For SSVEP the covariances are those of MOABB's *extended* signal: the trials band-passed around
each stimulation frequency and stacked along the channels, so that a covariance holds each
frequency's power and its spread over the scalp (Kalunga et al. 2016). For other tasks they are
the trials' own. :class:`TangentSpaceExpert` is the standard within-subject classifier on them
(pyRiemann's tangent space and a logistic regression, as in MOABB's ``TS+LR``) fitted on a
patient's calibration trials; the ``ts`` adaptation step (:class:`eegtransfer.adaptation.TS`)
multiplies its probabilities into the bundle's product with the network (and the CCA expert).
It reads what the CCA expert cannot: a subject whose responses to the flicker are not locked
to its phase, or a task without stimulation frequencies.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .errors import EEGTransferError, check_number
from .ssvep import _log_softmax, ssvep_frequencies

logger = logging.getLogger("eegtransfer")

BAND_WIDTH = 1.0  # Hz on each side of a stimulation frequency in the extended signal
TS_C = 1.0  # inverse L2 strength of the logistic regression (scikit-learn's default)


def filter_bank(X: np.ndarray, sfreq: float, freqs: list[float], width: float = BAND_WIDTH) -> np.ndarray:
    """MOABB's extended SSVEP signal: the trials band-passed around each stimulation frequency.

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_chans, n_times)
    sfreq : float
    freqs : list of float
        Stimulation frequencies in Hz.
    width : float
        Half-width of each band in Hz.

    Returns
    -------
    ext : ndarray, shape (n_trials, n_chans * len(freqs), n_times)
    """
    import mne

    bands = [mne.filter.filter_data(np.asarray(X, dtype=np.float64), sfreq, f - width, f + width, verbose=False)
             for f in freqs]
    return np.concatenate(bands, axis=1)


def covariances(ext: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf shrunk covariances of (filter-bank) trials.

    Parameters
    ----------
    ext : ndarray, shape (n_trials, n, n_times)
        Trials, or their extended signal (:func:`filter_bank`).

    Returns
    -------
    C : ndarray, shape (n_trials, n, n)
    """
    from pyriemann.estimation import Covariances

    return Covariances(estimator="lwf").fit_transform(np.asarray(ext, dtype=np.float64))


class TangentSpaceExpert:
    """Class probabilities from a patient's covariances: tangent space + logistic regression.

    Covariances (of the extended signal when some classes are stimulation frequencies) are
    projected on the tangent space at their Riemannian mean over the calibration trials and
    classified by a multinomial logistic regression with balanced class weights (a
    chronological calibration window is mostly one class). The arithmetic of prediction is
    stored as arrays, so a bundle saves it without pickling.

    Parameters
    ----------
    classes : list of str
        Output order (the bundle's classes); every one must be in the calibration trials.
    sfreq : float
        Sampling rate of the trials.
    weight : float
        Exponent of these probabilities in the bundle's product.
    C : float
        Inverse L2 strength of the logistic regression.
    """

    def __init__(self, classes: list[str], sfreq: float, *, weight: float = 1.0, C: float = TS_C) -> None:
        check_number("TangentSpaceExpert weight=", weight)
        check_number("TangentSpaceExpert C=", C, positive=True)
        self.classes = [str(c) for c in classes]
        self.sfreq, self.weight, self.C = float(sfreq), float(weight), float(C)
        self.freqs = _band_frequencies(self.classes, self.sfreq)  # [] : broadband covariances
        self.reference_: np.ndarray | None = None
        self.coef_: np.ndarray | None = None
        self.intercept_: np.ndarray | None = None

    def covariances(self, X: np.ndarray) -> np.ndarray:
        """Covariances of trials (n_trials, n_chans, n_times), of the extended signal for SSVEP."""
        return covariances(filter_bank(X, self.sfreq, self.freqs) if self.freqs else X)

    def _tangent(self, C: np.ndarray) -> np.ndarray:
        from pyriemann.utils.tangentspace import tangent_space

        return tangent_space(C, self.reference_, metric="riemann")

    def fit(self, X: np.ndarray, y: np.ndarray) -> TangentSpaceExpert:
        """Fit on trials ``X`` (n_trials, n_chans, n_times) with class names ``y``; returns self."""
        from pyriemann.utils.mean import mean_riemann
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(y).astype(str)
        missing = [c for c in self.classes if c not in set(y.tolist())]
        unknown = sorted(set(y.tolist()) - set(self.classes))
        if missing or unknown:
            raise EEGTransferError(f"step 'ts' needs calibration trials of every class {self.classes} and no "
                                   f"other; missing {missing}, unknown {unknown}")
        C = self.covariances(X)
        self.reference_ = mean_riemann(C)
        lr = LogisticRegression(C=self.C, class_weight="balanced", max_iter=1000).fit(self._tangent(C), y)
        order = [list(lr.classes_).index(c) for c in self.classes]
        if len(lr.classes_) == 2:  # scikit-learn keeps one row for two classes: logits (0, z)
            coef = np.vstack([np.zeros_like(lr.coef_), lr.coef_])
            intercept = np.concatenate([[0.0], lr.intercept_])
        else:
            coef, intercept = lr.coef_, lr.intercept_
        self.coef_, self.intercept_ = coef[order], intercept[order]
        return self

    def log_proba(self, X: np.ndarray) -> np.ndarray:
        """Log-probabilities, shape (n_trials, n_classes), columns in ``classes`` order."""
        if self.reference_ is None:
            raise EEGTransferError("this TangentSpaceExpert is not fitted: call fit() first")
        return _log_softmax(self._tangent(self.covariances(X)) @ self.coef_.T + self.intercept_)

    def to_dict(self) -> dict[str, Any]:
        """Parameters and fitted arrays as JSON-ready lists (a bundle's ``ts`` field)."""
        return {"classes": self.classes, "sfreq": self.sfreq, "weight": self.weight, "C": self.C,
                "reference": None if self.reference_ is None else self.reference_.tolist(),
                "coef": None if self.coef_ is None else self.coef_.tolist(),
                "intercept": None if self.intercept_ is None else self.intercept_.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> TangentSpaceExpert | None:
        """The expert :meth:`to_dict` wrote; ``None`` for a bundle without one."""
        if not d:
            return None
        e = cls(d["classes"], d["sfreq"], weight=d["weight"], C=d["C"])
        for name in ("reference", "coef", "intercept"):
            setattr(e, f"{name}_", None if d[name] is None else np.asarray(d[name], float))
        return e

    def __repr__(self) -> str:
        bands = f"{len(self.freqs)} bands" if self.freqs else "broadband"
        return f"TangentSpaceExpert(classes={self.classes}, {bands}, weight={self.weight:g}, C={self.C:g})"


def _band_frequencies(classes: list[str], sfreq: float) -> list[float]:
    """The stimulation frequencies whose bands the extended signal holds, or ``[]`` for broadband.

    Every band must fit between 0 Hz and Nyquist; otherwise (numeric labels that are not
    frequencies, such as motor-imagery codes ``"1"`` to ``"4"``) the trials' own covariances are used.
    """
    freqs = list(ssvep_frequencies(classes).values())
    if all(BAND_WIDTH < f < sfreq / 2 - BAND_WIDTH for f in freqs):
        return freqs
    logger.info("class names %s read as frequencies do not all fit a %g Hz band under Nyquist (%g Hz): "
                "the tangent-space expert uses broadband covariances", freqs, BAND_WIDTH, sfreq / 2)
    return []
