"""Evaluation: scores, the one protocol, baselines, paired statistics and the benchmark runners.

Accuracy is computed on trials **after** the calibration data in recording time, never on a
random sample of them.

- :mod:`~eegtransfer.evaluation.protocol`: which trials calibrate and which test, for every
  method alike (the first run's first minutes, grown until every class has 2 trials; the later
  runs; populations without duplicated recordings).
- :mod:`~eegtransfer.evaluation.baselines`: what a user would otherwise run (TS+LR, MDM, RCT,
  RPA, CCA, scratch); :mod:`~eegtransfer.evaluation.stats`: paired Wilcoxon tests, effect sizes
  and the tables.
- :mod:`~eegtransfer.evaluation.loso`: the protocol over a MOABB dataset (``eegtransfer benchmark``);
  :mod:`~eegtransfer.evaluation.curve`: the calibration curve and the stop rule.
- :mod:`~eegtransfer.evaluation.moabb` and :mod:`~eegtransfer.evaluation.pipelines`: MOABB's
  ``CrossSubjectEvaluation`` with our estimator and its pipelines;
  :mod:`~eegtransfer.evaluation.cross_dataset`: a population of one dataset adapted to another's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..bundle import Bundle


def scores(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str] | None = None) -> dict[str, Any]:
    """Accuracy, balanced accuracy, confusion matrix and counts per class.

    Parameters
    ----------
    y_true, y_pred : ndarray of str, shape (n_trials,)
    classes : list of str | None
        Row/column order of the confusion matrix.

    Returns
    -------
    dict with ``accuracy``, ``balanced_accuracy``, ``confusion`` (list of
    lists, rows true, columns predicted), ``classes``, ``counts`` and ``n``.
    """
    from sklearn.metrics import confusion_matrix

    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    classes = list(classes) if classes is not None else sorted(set(y_true) | set(y_pred))
    n = len(y_true)
    cm = confusion_matrix(y_true, y_pred, labels=classes) if n else np.zeros((len(classes),) * 2, int)
    # balanced accuracy over the classes present in y_true (scikit-learn's definition)
    recalls = [cm[i, i] / cm[i].sum() for i in range(len(classes)) if cm[i].sum() > 0]
    return {
        "accuracy": float((y_true == y_pred).mean()) if n else float("nan"),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
        "confusion": cm.tolist(),
        "classes": classes,
        "counts": {c: int((y_true == c).sum()) for c in classes},
        "n": n,
    }


def score_bundle(bundle: Bundle, X: np.ndarray, labels: np.ndarray, *, device: str | None = None) -> dict[str, Any]:
    """:func:`scores` of ``bundle``'s predictions on labelled trials."""
    labels = np.asarray(labels).astype(str)
    pred = bundle.predict(X, device=device)
    classes = list(bundle.classes) + sorted(set(labels.tolist()) - set(bundle.classes))
    return scores(labels, pred, classes)


def population_for(target: int, subjects: list[int]) -> list[int]:
    """Every subject but ``target``: the leave-one-subject-out population.

    Known duplicated recordings are removed when loading
    (:func:`eegtransfer.io.moabb.load_dataset`), not here.
    """
    return [int(s) for s in subjects if int(s) != int(target)]
