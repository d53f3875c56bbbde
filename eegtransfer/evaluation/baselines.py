"""Baselines that a user would otherwise run, each with its standard recipe.

All take the same calibration and test trials as our methods (see
:mod:`eegtransfer.evaluation.protocol`); none sees a test label.

- ``TS+LR`` and ``MDM`` (within subject): covariances (filter-bank ones for SSVEP: a band
  around each stimulation frequency, MOABB's extended SSVEP signal, from
  :mod:`eegtransfer.covariance`), then tangent space and logistic regression (balanced class
  weights), or minimum distance to mean.
- ``RCT MDM``, ``RCT TS+LR`` (population and calibration): re-centring (pyRiemann
  ``TLCenter``) of each subject's covariances, then MDM or TS+LR fitted on the population and
  the calibration trials together.
- ``RPA MDM``, ``RPA TS+LR`` (population and calibration): Riemannian Procrustes analysis,
  re-centring, stretching (``TLScale``) and rotation (``TLRotate``), then the same classifiers.
- ``CCA`` (calibration, for a rest threshold only): canonical correlation with sine/cosine
  references at each stimulation frequency and its harmonics; ``rest`` when the best
  correlation is under a threshold fitted on the calibration trials.
- ``FBCCA`` (the same, with a filter bank): Chen et al. (2015)'s filter-bank CCA, sub-band
  ``n`` from ``n`` times the lowest frequency (less 2 Hz) to the data's top, scores
  ``sum_n (n ** -1.25 + 0.25) * rho_n ** 2``.
- ``scratch`` (within subject): the same braindecode network trained on the calibration trials.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ..errors import EEGTransferError
from ..ssvep import band_top, filter_bank_correlations, ssvep_frequencies


def within_subject_pipelines() -> dict[str, Any]:
    """TS+LR and MDM on covariances (filter-bank ones for SSVEP), fitted on one subject's calibration."""
    from pyriemann.classification import MDM
    from pyriemann.tangentspace import TangentSpace
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    # Balanced class weights: a chronological calibration window is mostly one class (the same
    # logistic regression as the ts step's, TangentSpaceExpert).
    return {"TS+LR": make_pipeline(TangentSpace(metric="riemann"),
                                   LogisticRegression(class_weight="balanced", max_iter=1000)),
            "MDM": MDM(metric="riemann")}


def transfer_predict(C_pop: np.ndarray, y_pop: np.ndarray, domains: np.ndarray, C_cal: np.ndarray,
                     y_cal: np.ndarray, C_test: np.ndarray, *, rotate: bool = True,
                     test_runs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Riemannian transfer with the population: re-centring (RCT) or Procrustes analysis (RPA).

    Each population subject (``domains``) and the target are re-centred to the identity
    (``TLCenter``); with ``rotate`` they are also stretched (``TLScale``) and the population's
    class means rotated onto the target's (``TLRotate``, from the labelled calibration trials),
    which is RPA. MDM and TS+LR are then fitted on the population and the calibration trials
    together (``TLClassifier``), sharing one transform.

    Parameters
    ----------
    C_pop : ndarray, shape (n_pop, n, n)
        Population covariances; ``y_pop`` their labels, ``domains`` their subjects.
    C_cal : ndarray, shape (n_cal, n, n)
        The target's calibration covariances, ``y_cal`` their labels.
    C_test : ndarray, shape (n_test, n, n)
    test_runs : ndarray, shape (n_test,) | None
        The recording of each test trial. Given, each classifier also predicts with every
        recording re-centred on its own unlabelled mean, re-centring's original, transductive form
        (Zanini et al. 2018), instead of on the calibration trials' mean, and from those
        probabilities balanced per recording (:func:`~eegtransfer.adaptation.balance_classes`).

    Returns
    -------
    predictions : dict
        ``{"MDM": y_pred, "TS+LR": y_pred}``, each of shape (n_test,); with ``test_runs`` also
        ``"MDM, recording re-centred"``, ``"MDM, recording re-centred and balanced"`` and the same
        for ``"TS+LR"``.
    """
    from pyriemann.classification import MDM
    from pyriemann.tangentspace import TangentSpace
    from pyriemann.transfer import TLCenter, TLClassifier, TLRotate, TLScale, encode_domains
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if test_runs is not None and len(test_runs) != len(C_test):
        raise EEGTransferError(f"test_runs must give one recording per test trial ({len(C_test)}), "
                               f"got {len(test_runs)}")
    target = "__target__"
    X = np.concatenate([C_pop, C_cal])
    y = np.concatenate([np.asarray(y_pop, str), np.asarray(y_cal, str)])
    d = np.concatenate([np.asarray(domains, str), np.full(len(C_cal), target)])
    X_enc, y_enc = encode_domains(X, y, d)
    steps = [TLCenter(target_domain=target)]
    if rotate:
        steps += [TLScale(target_domain=target, centered_data=True), TLRotate(target_domain=target, metric="euclid")]
    prep = make_pipeline(*steps)
    Z = prep.fit_transform(X_enc, y_enc)
    tests = {"": prep.transform(C_test)}
    if test_runs is not None:  # the target's stretch (RPA) still comes from its calibration trials
        Z_own = _recentred(C_test, test_runs)
        tests[", recording re-centred"] = prep[1:].transform(Z_own) if rotate else Z_own
    out = {}
    for name, est in (("MDM", MDM(metric="riemann")),
                      ("TS+LR", make_pipeline(TangentSpace(metric="riemann"), LogisticRegression(max_iter=1000)))):
        clf = TLClassifier(target_domain=target, estimator=est, domain_weight=None).fit(Z, y_enc)
        for suffix, Z_test in tests.items():
            out[name + suffix] = np.asarray(clf.predict(Z_test)).astype(str)
        if test_runs is not None:
            out[name + ", recording re-centred and balanced"] = balanced_predict(
                clf.estimator, tests[", recording re-centred"], test_runs)  # TLClassifier fits it in place
    return out


def balanced_predict(clf: Any, X: np.ndarray, runs: np.ndarray) -> np.ndarray:
    """``clf``'s classes from its probabilities on ``X`` balanced per recording (``runs``), without labels."""
    return balanced_labels(clf.predict_proba(X), clf.classes_, runs)


def balanced_labels(proba: np.ndarray, classes: Any, runs: np.ndarray) -> np.ndarray:
    """The class names of ``proba`` (columns ``classes``) once each recording (``runs``) is balanced."""
    from ..adaptation import balance_classes

    return np.asarray(classes)[balance_classes(proba, groups=runs).argmax(1)].astype(str)


def _recentred(C: np.ndarray, runs: np.ndarray) -> np.ndarray:
    """Each run's covariances whitened by that run's own Riemannian mean (to the identity)."""
    from pyriemann.utils.base import invsqrtm
    from pyriemann.utils.mean import mean_riemann

    out = np.empty_like(C)
    for r in np.unique(runs):
        w = invsqrtm(mean_riemann(C[runs == r]))
        out[runs == r] = w @ C[runs == r] @ w
    return out


def fbcca_bands(freqs: list[float], sfreq: float, *, max_freq: float | None = None) -> list[tuple[float, float]]:
    """FBCCA's sub-bands (Chen et al. 2015): band ``n`` from ``n * min(freqs) - 2`` Hz to the top.

    The top is ``max_freq`` (the recipe's low-pass) or 95 % of Nyquist; bands need 2 Hz of width.
    """
    high = band_top(sfreq, max_freq)
    lows = [n * min(freqs) - 2 for n in range(1, 11)]
    return [(float(lo), float(high)) for lo in lows if lo < high - 2]


class CCADetector(ClassifierMixin, BaseEstimator):
    """SSVEP detection by canonical correlation with sine/cosine references.

    Needs no training for the stimulation classes; a class named ``rest_label`` (no
    stimulation) is predicted when the best correlation falls under a threshold fitted
    on the calibration trials (the midpoint that maximises their accuracy).

    Parameters
    ----------
    sfreq : float
        Sampling rate of the trials in Hz.
    freqs : dict | None
        Class name -> stimulation frequency; ``None`` reads them from numeric class names.
    n_harmonics : int
        Harmonics per frequency (1 = the fundamental only).
    max_freq : float | None
        Harmonics at or above it are left out (the recipe's low-pass).
    rest_label : str | None
        The class without stimulation, if any.
    filter_bank : bool
        Filter-bank CCA (FBCCA, Chen et al. 2015): scores are the weighted sums of squared
        correlations over :func:`fbcca_bands`; plain CCA otherwise.
    """

    def __init__(self, sfreq: float = 128.0, freqs: dict[str, float] | None = None, n_harmonics: int = 3,
                 max_freq: float | None = None, rest_label: str | None = "rest", filter_bank: bool = False) -> None:
        self.sfreq = sfreq
        self.freqs = freqs
        self.n_harmonics = n_harmonics
        self.max_freq = max_freq
        self.rest_label = rest_label
        self.filter_bank = filter_bank

    def fit(self, X: np.ndarray, y: np.ndarray) -> CCADetector:
        """Build the references; fit the rest threshold when ``y`` holds ``rest_label``."""
        y = np.asarray(y).astype(str)
        self.classes_ = np.array(sorted(set(y.tolist())))
        self.freqs_ = dict(self.freqs) if self.freqs is not None else ssvep_frequencies(list(self.classes_))
        if not self.freqs_:
            raise EEGTransferError(f"CCADetector: no stimulation frequency in classes {list(self.classes_)}")
        freqs = list(self.freqs_.values())
        self.bands_ = fbcca_bands(freqs, self.sfreq, max_freq=self.max_freq) if self.filter_bank else [None]
        self.threshold_ = -np.inf
        if self.rest_label is not None and self.rest_label in self.classes_:
            scores = self.scores(X)
            cands = np.sort(scores.max(axis=1))
            cands = np.concatenate([[cands[0] - 1e-6], (cands[1:] + cands[:-1]) / 2, [cands[-1] + 1e-6]])
            accs = [(self._predict_from(scores, t) == y).mean() for t in cands]
            self.threshold_ = float(cands[int(np.argmax(accs))])
        return self

    def correlations(self, X: np.ndarray) -> np.ndarray:
        """First canonical correlations per band and frequency: (n_trials, n_bands * n_freqs), band-major."""
        return filter_bank_correlations(X, self.sfreq, list(self.freqs_.values()), self.bands_,
                                        n_harmonics=self.n_harmonics, max_freq=self.max_freq)

    def scores(self, X: np.ndarray) -> np.ndarray:
        """Each frequency's score, (n_trials, n_freqs): its correlation, or FBCCA's weighted sum."""
        rho = self.correlations(X)
        if len(self.bands_) == 1:
            return rho
        w = np.arange(1, len(self.bands_) + 1) ** -1.25 + 0.25
        return np.einsum("b,nbf->nf", w, rho.reshape(len(rho), len(self.bands_), -1) ** 2)

    def _predict_from(self, corr: np.ndarray, threshold: float) -> np.ndarray:
        names = np.array(list(self.freqs_), dtype=object)
        pred = names[corr.argmax(axis=1)]
        if np.isfinite(threshold):
            pred = np.where(corr.max(axis=1) < threshold, self.rest_label, pred)
        return pred.astype(str)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted class names, shape (n_trials,)."""
        return self._predict_from(self.scores(X), self.threshold_)


def scratch_predict(model: str, recipe: Any, classes: list[str], X_cal: np.ndarray, y_cal: np.ndarray,
                    X_test: np.ndarray, *, epochs: int = 150, seed: int = 0, device: str = "cpu") -> np.ndarray:
    """The braindecode network trained from scratch on the calibration trials only.

    The budget is fixed in advance: AdamW, batch 8 (several steps per epoch on ~30 trials),
    up to ``epochs`` epochs with early stopping on the latest quarter of each class's
    calibration trials (as for adaptation).
    """
    from ..adaptation import chronological_split
    from ..models import build_model
    from ..training.engine import predict_logits, seed_everything, train

    seed_everything(seed)
    net = build_model(model, recipe.n_chans, len(classes), recipe.n_times, recipe.sfreq,
                      ch_names=recipe.channels)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[v] for v in np.asarray(y_cal, str)])
    fit, val = chronological_split(np.asarray(y_cal, str), 0.25)
    train(net, X_cal[fit], y[fit], X_val=X_cal[val], y_val=y[val], epochs=epochs, batch_size=8,
          lr=1e-3, patience=max(10, epochs // 3), device=device, seed=seed)
    return np.asarray(classes)[predict_logits(net, X_test).argmax(1)]
