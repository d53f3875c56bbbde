"""Pipelines for MOABB evaluations, the way MOABB keeps ``moabb/pipelines/``.

Ours: :class:`~eegtransfer.estimator.SubjectAdaptiveClassifier` with each strategy (and
zero-shot). Baselines: pyRiemann tangent space + logistic regression and MDM, as MOABB runs them
(population only) and given the same calibration trials as ours (:class:`CalibratedBaseline`,
pooled with the population).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from ..errors import EEGTransferError

if TYPE_CHECKING:  # pragma: no cover

    pass

logger = logging.getLogger("eegtransfer")

BASELINES = ("TS+LR", "MDM")


# --- pipelines ---------------------------------------------------------------

class CalibratedBaseline(ClassifierMixin, BaseEstimator):
    """Give a scikit-learn pipeline the target's labelled calibration trials.

    In a MOABB transfer evaluation, ``fit`` receives ``X_target_labeled`` and
    ``y_target_labeled`` through metadata routing (requested by default) and
    fits ``estimator`` on the population trials plus the calibration trials
    (``use="pooled"``, calibration trials repeated ``weight`` times) or on the
    calibration trials only (``use="target"``).

    Parameters
    ----------
    estimator : estimator
        Any scikit-learn classifier taking MOABB's arrays.
    use : {"pooled", "target"}
    weight : int
        Copies of each calibration trial in ``pooled`` mode.
    """

    __metadata_request__fit = {"X_target_labeled": True, "y_target_labeled": True}

    def __init__(self, estimator: Any, use: str = "pooled", weight: int = 1) -> None:
        self.estimator = estimator
        self.use = use
        self.weight = weight

    def fit(self, X: Any, y: Any, *, X_target_labeled: Any = None,
            y_target_labeled: Any = None) -> CalibratedBaseline:
        """Fit on the population plus (or only) the calibration trials."""
        if self.use not in ("pooled", "target"):
            raise EEGTransferError(f"use must be 'pooled' or 'target', got {self.use!r}")
        X, y = np.asarray(X), np.asarray(y)
        n_cal = 0 if X_target_labeled is None else len(X_target_labeled)
        if n_cal:
            Xc, yc = np.asarray(X_target_labeled), np.asarray(y_target_labeled)
            if self.use == "target":
                X, y = Xc, yc
            else:
                reps = max(int(self.weight), 1)
                X = np.concatenate([X] + [Xc] * reps)
                y = np.concatenate([y] + [yc] * reps)
        self.n_target_labeled_ = int(n_cal)
        self.estimator_ = clone(self.estimator).fit(X, y)
        self.classes_ = np.unique(np.concatenate([y, np.asarray(y_target_labeled)]) if n_cal else y)
        return self

    def _align(self, proba: np.ndarray) -> np.ndarray:
        own = list(self.estimator_.classes_)
        out = np.zeros((len(proba), len(self.classes_)))
        for j, c in enumerate(self.classes_):
            if c in own:
                out[:, j] = proba[:, own.index(c)]
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        return self._align(self.estimator_.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        return self.estimator_.predict(X)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.two_d_array = False
        return tags


def baseline_pipelines(names: tuple[str, ...] | list[str] = BASELINES, *,
                       calibrated: bool = True, plain: bool = True) -> dict[str, Any]:
    """pyRiemann baselines by name: ``"TS+LR"`` and ``"MDM"`` on OAS covariances.

    Parameters
    ----------
    names : list of str
    calibrated : bool
        Add ``"<name>+cal"``: the pipeline fitted on the population plus the
        target's labelled calibration trials (:class:`CalibratedBaseline`).
    plain : bool
        Add ``"<name>"``: the pipeline as MOABB runs it, population only.
    """
    from pyriemann.classification import MDM
    from pyriemann.estimation import Covariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    makers = {
        "TS+LR": lambda: make_pipeline(Covariances("oas"), TangentSpace(metric="riemann"),
                                       LogisticRegression(max_iter=1000)),
        "MDM": lambda: make_pipeline(Covariances("oas"), MDM(metric="riemann")),
    }
    out: dict[str, Any] = {}
    for name in names:
        if name not in makers:
            raise EEGTransferError(f"unknown baseline {name!r}; choose from {', '.join(makers)}")
        if plain:
            out[name] = makers[name]()
        if calibrated:
            out[f"{name}+cal"] = CalibratedBaseline(makers[name]())
    return out


def our_pipelines(strategies: tuple[str, ...] | list[str] = ("head", "last-k"), *,
                  zero_shot: bool = True, model: str = "EEGNet", **params: Any) -> dict[str, Any]:
    """:class:`SubjectAdaptiveClassifier` pipelines named ``"<model> <strategy>"``.

    ``zero_shot`` adds ``"<model> zero-shot"`` (strategy ``none``). ``params``
    go to every estimator (epochs, seed, sfreq, cache_dir, device, ...).
    """
    from ..estimator import SubjectAdaptiveClassifier

    out: dict[str, Any] = {}
    if zero_shot:
        out[f"{model} zero-shot"] = SubjectAdaptiveClassifier(model=model, strategy="none", **params)
    for s in strategies:
        out[f"{model} {s}"] = SubjectAdaptiveClassifier(model=model, strategy=s, **params)
    return out


