"""A scikit-learn estimator for MOABB pipelines: pretrain on the population, adapt to the target.

:class:`SubjectAdaptiveClassifier` takes trials as MOABB paradigms give them,
arrays of shape ``(n_trials, n_chans, n_times)``. In a MOABB pipeline the
**paradigm does the MNE preprocessing** (band-pass, epoching, resampling); the
estimator then only z-scores each channel of each trial and builds a
:class:`~eegtransfer.preprocessing.Recipe` that describes the input (channels,
sampling rate, window) so the bundles it makes are complete.

Calibration data arrives through scikit-learn metadata routing. MOABB 1.7's
``CrossSubjectEvaluation(cv_kwargs={"calibration_size": f,
"calibration_labeled": True})`` cuts the first ``f`` of each held-out
subject/session into a calibration slice and passes it to ``fit`` as
``X_target_labeled``/``y_target_labeled`` (``X_target_unlabeled`` when
``calibration_labeled=False``), together with ``subjects`` of the training
trials, to every step that requests them. This estimator requests all four
by default, so no ``set_fit_request`` call is needed; call
``set_fit_request(X_target_labeled=False, ...)`` to turn one off.

``fit`` then

1. pretrains a braindecode model on ``X, y`` (the population), through the
   pretrain cache (:mod:`eegtransfer.training.cache`) so every strategy and every
   calibration size of a fold reuses one population model;
2. adapts it to the target slice with :func:`eegtransfer.adaptation.adapt` and
   ``strategy``.

Without target data (e.g. in ``WithinSessionEvaluation``) step 2 is skipped,
which is plain training on ``X, y``. ``strategy="scratch"`` trains a fresh
model on the target's labelled calibration trials only (on ``X, y`` when none
is routed): the from-scratch baseline.
"""

from __future__ import annotations

import logging
import os
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval

from .errors import EEGTransferError

logger = logging.getLogger("eegtransfer")


class SubjectAdaptiveClassifier(ClassifierMixin, BaseEstimator):
    """Population-pretrained braindecode model adapted to one subject, as a scikit-learn classifier.

    Parameters
    ----------
    model : str
        braindecode model name (see :func:`eegtransfer.models.known_models`).
    strategy : str
        Adaptation strategy (see :mod:`eegtransfer.adaptation`): ``"none"``
        (zero-shot), ``"head"``, ``"last-k"``, ``"full"``, ``"bn"``, ``"align"``,
        combinations such as ``"bn+head"``, ``"auto"``; or ``"scratch"``.
    epochs : int
        Maximum pretraining epochs.
    adapt_epochs : int
        Maximum adaptation epochs.
    batch_size : int
    lr : float
        Pretraining learning rate.
    adapt_lr : float | None
        Adaptation learning rate (``None``: the strategy's default).
    patience : int
        Early-stopping patience (pretraining and adaptation).
    val_fraction : float
        Fraction of training subjects held out for early stopping in
        pretraining (needs ``subjects``; without it nothing is held out).
    k : int
        Blocks before the head trained by ``last-k``.
    align : bool
        Euclidean-align each training subject in pretraining (for ``align``
        strategies).
    guard : bool
        Keep the zero-shot model when adaptation does not beat it on held-out
        calibration trials.
    min_calibration_per_class : int
        Supervised adaptation needs this many labelled calibration trials of
        every class of the model; with fewer (e.g. a short calibration slice
        that saw only one class) the supervised part is skipped, the
        unsupervised part (``bn``/``align``) still runs, and
        ``adaptation_["fallback"]`` says why.
    sfreq : float
        Sampling rate of the input in Hz (the paradigm's ``resample``).
    channels : list of str | None
        Channel names in input order (``None``: ``ch0, ch1, ...``).
    model_kwargs : dict | None
        braindecode model hyper-parameters.
    seed : int
    device : {"auto", "cpu", "cuda", "mps"}
    cache_dir : path | False | None
        Pretrain cache folder; ``None`` uses ``$EEGTRANSFER_CACHE`` or
        ``~/.cache/eegtransfer``; ``False`` disables the cache.

    Attributes
    ----------
    classes_ : ndarray
        Class labels, in the order of ``predict_proba``'s columns.
    population_ : Bundle
        The pretrained population model.
    bundle_ : Bundle
        The model that predicts (``population_`` when nothing was adapted).
    recipe_ : Recipe
        Describes the input.
    adaptation_ : dict | None
        ``bundle_.adaptation`` plus any fallback note.
    n_target_labeled_, n_target_unlabeled_ : int
        Calibration trials received through metadata routing.
    pretrain_cache_hit_ : bool | None
        Whether the population model came from the cache (``None``: no cache).
    """

    __metadata_request__fit = {"subjects": True, "X_target_labeled": True,
                               "y_target_labeled": True, "X_target_unlabeled": True}

    # Checked by sklearn's _validate_params at the start of fit (and by its estimator checks).
    _parameter_constraints: dict = {
        "model": [str],
        "strategy": [str],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "adapt_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 2, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "adapt_lr": [Interval(Real, 0, None, closed="neither"), None],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "val_fraction": [Interval(Real, 0, 1, closed="left")],
        "k": [Interval(Integral, 0, None, closed="left")],
        "align": ["boolean"],
        "guard": ["boolean"],
        "min_calibration_per_class": [Interval(Integral, 1, None, closed="left")],
        "sfreq": [Interval(Real, 0, None, closed="neither")],
        "channels": [list, None],
        "model_kwargs": [dict, None],
        "seed": [Interval(Integral, 0, None, closed="left")],
        "device": [str],
        "cache_dir": [str, os.PathLike, "boolean", None],
    }

    def __init__(
        self,
        model: str = "EEGNet",
        strategy: str = "head",
        *,
        epochs: int = 100,
        adapt_epochs: int = 200,
        batch_size: int = 64,
        lr: float = 3e-3,
        adapt_lr: float | None = None,
        patience: int = 30,
        val_fraction: float = 0.2,
        k: int = 1,
        align: bool = False,
        guard: bool = True,
        min_calibration_per_class: int = 2,
        sfreq: float = 128.0,
        channels: list[str] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        seed: int = 0,
        device: str = "auto",
        cache_dir: str | os.PathLike | bool | None = None,
    ) -> None:
        self.model = model
        self.strategy = strategy
        self.epochs = epochs
        self.adapt_epochs = adapt_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.adapt_lr = adapt_lr
        self.patience = patience
        self.val_fraction = val_fraction
        self.k = k
        self.align = align
        self.guard = guard
        self.min_calibration_per_class = min_calibration_per_class
        self.sfreq = sfreq
        self.channels = channels
        self.model_kwargs = model_kwargs
        self.seed = seed
        self.device = device
        self.cache_dir = cache_dir

    # --- helpers -------------------------------------------------------------
    def _recipe(self, n_chans: int, n_times: int) -> Any:
        from .preprocessing import Recipe

        channels = list(self.channels) if self.channels is not None else [f"ch{i}" for i in range(n_chans)]
        if len(channels) != n_chans:
            raise EEGTransferError(f"channels names {len(channels)} channels but X has {n_chans}")
        return Recipe(channels=channels, sfreq=float(self.sfreq), tmin=0.0,
                      tmax=n_times / float(self.sfreq), l_freq=None, h_freq=None, notch=[],
                      reference=None, scale=1.0, standardize="trial")

    @staticmethod
    def _trials(X: Any, what: str = "X") -> np.ndarray:
        from .preprocessing import standardize

        X = np.asarray(X)
        if X.ndim != 3:
            raise EEGTransferError(f"{what} must be trials of shape (n_trials, n_chans, n_times), "
                                   f"got shape {X.shape}")
        return standardize(X, "trial")

    def _pretrain(self, X: np.ndarray, labels: np.ndarray, subjects: np.ndarray | None,
                  recipe: Any, classes: list[str]) -> tuple[Any, bool | None]:
        import pandas as pd

        from .training.pretraining import pretrain

        subj = (np.asarray(subjects).astype(str) if subjects is not None
                else np.full(len(X), "population"))
        meta = pd.DataFrame({"subject": subj})
        kw = dict(model=self.model, model_kwargs=self.model_kwargs, classes=classes,
                  epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                  patience=self.patience, val_fraction=self.val_fraction, align=self.align,
                  seed=self.seed)
        if self.cache_dir is False:
            return pretrain(X, labels, meta, recipe, device=self.device, **kw), None
        from .training.cache import cached_pretrain

        cache_dir = None if self.cache_dir in (None, True) else self.cache_dir
        return cached_pretrain(X, labels, meta, recipe, cache_dir=cache_dir, device=self.device, **kw)

    # --- scikit-learn API ----------------------------------------------------
    def fit(self, X: Any, y: Any, *, subjects: Any = None, X_target_labeled: Any = None,
            y_target_labeled: Any = None, X_target_unlabeled: Any = None) -> SubjectAdaptiveClassifier:
        """Pretrain on ``X, y``; adapt to the target trials if any are given.

        Parameters
        ----------
        X : array, shape (n_trials, n_chans, n_times)
            Population trials (every training subject of the fold).
        y : array, shape (n_trials,)
        subjects : array, shape (n_trials,) | None
            Subject of each trial of ``X``, for a by-subject validation split.
        X_target_labeled, y_target_labeled : array | None
            The target's labelled calibration trials, in time order.
        X_target_unlabeled : array | None
            The target's unlabelled calibration trials.

        Returns
        -------
        self
        """
        from .adaptation import parse_strategy

        self._validate_params()
        Xs = self._trials(X)
        y = np.asarray(y)
        if len(y) != len(Xs):
            raise EEGTransferError(f"X has {len(Xs)} trials but y has {len(y)}")
        strategy = str(self.strategy)
        if strategy not in ("scratch", "auto"):
            parse_strategy(strategy)
        Xl = None if X_target_labeled is None else self._trials(X_target_labeled, "X_target_labeled")
        yl = None if y_target_labeled is None else np.asarray(y_target_labeled)
        if (Xl is None) != (yl is None) or (Xl is not None and len(Xl) != len(yl)):
            raise EEGTransferError("X_target_labeled and y_target_labeled must come together, "
                                   "one label per trial")
        Xu = None if X_target_unlabeled is None else self._trials(X_target_unlabeled, "X_target_unlabeled")
        for name, A in (("X_target_labeled", Xl), ("X_target_unlabeled", Xu)):
            if A is not None and A.shape[1:] != Xs.shape[1:]:
                raise EEGTransferError(f"{name} has trials of shape {A.shape[1:]}, X {Xs.shape[1:]}")
        self.n_target_labeled_ = 0 if Xl is None else int(len(Xl))
        self.n_target_unlabeled_ = 0 if Xu is None else int(len(Xu))
        self.classes_ = np.unique(np.concatenate([y, yl]) if yl is not None else y)
        self.recipe_ = self._recipe(Xs.shape[1], Xs.shape[2])
        self.n_features_in_ = int(Xs.shape[1])

        if strategy == "scratch":
            Xt, yt = (Xl, yl) if Xl is not None and len(Xl) else (Xs, y)
            self.population_, self.pretrain_cache_hit_ = self._pretrain(
                Xt, np.asarray([str(v) for v in yt]), None, self.recipe_, None)
            self.bundle_ = self.population_
            self.adaptation_ = {"strategy": "scratch", "n_train_trials": int(len(Xt))}
            return self

        pop_labels = np.asarray([str(v) for v in y])
        self.population_, self.pretrain_cache_hit_ = self._pretrain(
            Xs, pop_labels, subjects, self.recipe_, sorted(set(pop_labels.tolist())))
        self.bundle_ = self.population_
        self.adaptation_ = None
        if strategy == "none" or (Xl is None and Xu is None):
            if strategy == "none":
                self.adaptation_ = {"strategy": "none", "note": "zero-shot"}
            return self
        self._adapt(strategy, Xl, yl, Xu)
        return self

    def _adapt(self, strategy: str, Xl: np.ndarray | None, yl: np.ndarray | None,
               Xu: np.ndarray | None) -> None:
        from .adaptation import adapt, parse_strategy

        pop = self.population_
        kw = dict(k=self.k, epochs=self.adapt_epochs, lr=self.adapt_lr, batch_size=min(self.batch_size, 32),
                  patience=self.patience, guard=self.guard, device=self.device, seed=self.seed)
        labels = None if yl is None else np.asarray([str(v) for v in yl])
        fallback = None
        if labels is not None:
            counts = {c: int((labels == c).sum()) for c in sorted(set(labels.tolist()) | set(pop.classes))}
            new_task = bool(set(labels.tolist()) - set(pop.classes))
            need = sorted(set(labels.tolist())) if new_task else pop.classes
            low = {c: counts.get(c, 0) for c in need if counts.get(c, 0) < self.min_calibration_per_class}
            if low:
                fallback = (f"supervised adaptation skipped: fewer than {self.min_calibration_per_class} "
                            f"labelled calibration trials of class(es) {low}")
        if strategy == "auto":
            sup_needed, unsup = True, set()
        else:
            steps = parse_strategy(strategy)
            unsup = {s.name for s in steps if not s.supervised}
            sup_needed = any(s.supervised for s in steps)
        if sup_needed and labels is None:
            fallback = "supervised adaptation skipped: no labelled calibration trials"
        if fallback is not None and labels is not None and set(labels.tolist()) - set(pop.classes):
            raise EEGTransferError(
                f"the calibration classes {sorted(set(labels.tolist()))} differ from the population's "
                f"{pop.classes}, so a new head must be trained, but {fallback}; give more calibration trials"
            )
        if fallback is None:
            self.bundle_ = adapt(pop, Xl, labels, strategy=strategy, X_unlabeled=Xu, **kw)
            self.adaptation_ = self.bundle_.adaptation.to_dict()
            return
        logger.warning(fallback)
        pool = [A for A in (Xl, Xu) if A is not None and len(A)]
        if unsup and pool:
            ustrat = "+".join(s for s in ("align", "bn") if s in unsup)
            self.bundle_ = adapt(pop, np.concatenate(pool), None, strategy=ustrat, **kw)
            self.adaptation_ = self.bundle_.adaptation.to_dict()
        else:
            self.bundle_ = pop
            self.adaptation_ = {"strategy": "none"}
        self.adaptation_.update(requested_strategy=strategy, fallback=fallback)

    def _check_fitted(self) -> None:
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "bundle_")

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_trials, n_classes), columns in ``classes_`` order.

        Classes the predicting model does not know (seen only in ``y`` but not
        in the target's new class set, or the reverse) get probability 0.
        """
        self._check_fitted()
        proba = self.bundle_.predict_proba(self._trials(X))
        index = {c: i for i, c in enumerate(self.bundle_.classes)}
        out = np.zeros((len(proba), len(self.classes_)), dtype=np.float64)
        for j, c in enumerate(self.classes_.tolist()):
            i = index.get(str(c))
            if i is not None:
                out[:, j] = proba[:, i]
        return out

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels, shape (n_trials,)."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(1)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.two_d_array = False
        tags.non_deterministic = str(self.device) != "cpu"
        return tags
