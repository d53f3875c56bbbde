"""Adaptation steps, one idea each, composed by :func:`parse_strategy`.

Every step has its own parameters and one method, ``fit(bundle, X, y) -> bundle``: it adapts
``bundle`` **in place** (the driver :func:`eegtransfer.adaptation.adapt` hands it a copy of the
population bundle) and records what it did in ``facts_``. Label-free steps run first:

- ``Align`` (no labels): Euclidean alignment to the patient's mean covariance; the matrix is
  stored in the bundle, no weight changes.
- ``AdaBN`` (no labels): batch-norm running statistics re-estimated on the patient.
- ``Head`` (labels): the classification head, an L2-SP logistic regression on cached trunk
  features (:func:`~eegtransfer.adaptation.headfit.fit_head`: Newton or L-BFGS), or AdamW epochs.
- ``LastK`` (labels): the last ``k`` blocks and the head (AdamW, early stopping).
- ``Full`` (labels): every layer, with a small learning rate.
- ``CCA`` (labels, SSVEP classes): a canonical-correlation expert (:class:`eegtransfer.ssvep.CCAExpert`)
  fitted on the calibration trials, pulled towards the population's; the bundle then multiplies
  its probabilities with the network's. It runs after the network's steps and combines with any.
- ``TS`` (labels, any classes): the patient's own tangent-space + logistic-regression classifier
  on covariances (:class:`eegtransfer.covariance.TangentSpaceExpert`), also multiplied into
  the product. It runs last.

Labels outside the population's classes train a **new head** for exactly the classes found
(a new task), pulled towards zero rather than towards its random initial weights. A user step
is any object with ``name``, ``supervised`` and ``fit(bundle, X, y, **context)``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..bundle import Bundle
from ..covariance import TS_C
from ..errors import EEGTransferError, check_number
from .calibration import chronological_split
from .headfit import HEAD_L2, fit_head

logger = logging.getLogger("eegtransfer")
CCA_L2 = 1.0
SUPERVISED = ("head", "last-k", "full")
UNSUPERVISED = ("align", "bn")  # in the order they run
EXPERTS = ("cca", "ts")  # after the network's steps, in this order
STRATEGIES = ("none", "head", "last-k", "full", "bn", "align",
              "align+head", "bn+head", "align+last-k", "cca", "bn+cca", "head+cca", "align+cca", "align+head+cca",
              "ts", "cca+ts", "bn+cca+ts", "align+cca+ts", "auto")


class Step:
    """Base class: ``fit(bundle, X, y=None, *, X_unlabeled=None, device=None, seed=0) -> bundle``."""

    name = "step"
    supervised = False

    def fit(self, bundle: Bundle, X: np.ndarray, y: np.ndarray | None = None, *,
            X_unlabeled: np.ndarray | None = None, device: Any = None, seed: int = 0) -> Bundle:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        return f"{type(self).__name__}({params})"


def _pool(X: np.ndarray, X_unlabeled: np.ndarray | None, bundle: Bundle) -> np.ndarray:
    return X if X_unlabeled is None else np.concatenate([X, bundle.check_input(X_unlabeled)])


class Align(Step):
    """Euclidean alignment: whiten trials by the patient's mean covariance (no labels)."""

    name = "align"

    def fit(self, bundle: Bundle, X: np.ndarray, y: np.ndarray | None = None, *,
            X_unlabeled: np.ndarray | None = None, device: Any = None, seed: int = 0) -> Bundle:
        from .alignment import alignment_matrix

        pool = _pool(X, X_unlabeled, bundle)
        bundle.align = alignment_matrix(pool).astype(np.float32)  # as saved in safetensors
        self.facts_ = {"align_trials": int(len(pool))}
        return bundle


class AdaBN(Step):
    """Re-estimate every batch-norm layer's running statistics on the patient (no labels)."""

    name = "bn"

    def __init__(self, batch_size: int = 256) -> None:
        self.batch_size = batch_size

    def fit(self, bundle: Bundle, X: np.ndarray, y: np.ndarray | None = None, *,
            X_unlabeled: np.ndarray | None = None, device: Any = None, seed: int = 0) -> Bundle:
        self.facts_ = {"bn_layers": adabn(bundle.model, bundle.prepare_input(_pool(X, X_unlabeled, bundle)),
                                          device=device, batch_size=self.batch_size)}
        return bundle


def adabn(model: Any, X: np.ndarray, *, device: Any = None, batch_size: int = 256) -> list[str]:
    """Re-estimate the running statistics of ``model``'s batch-norm layers on ``X``, in place.

    Only the ``running_mean``/``running_var`` buffers change; weights do not. Returns the
    names of the updated layers. ``device=None``: where the model is.
    """
    import torch

    from ..models import batchnorm_modules
    from ..training.engine import model_device

    bns = batchnorm_modules(model)
    if not bns:
        return []
    device = model_device(model) if device is None else device
    model.to(device).eval()
    saved = {}
    for _, m in bns:
        saved[m] = m.momentum
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
        m.train()
    with torch.no_grad():
        Xt = torch.as_tensor(X, dtype=torch.float32)
        for i in range(0, len(Xt), batch_size):
            model(Xt[i:i + batch_size].to(device, non_blocking=True))
    for _, m in bns:
        m.momentum = saved[m]
        m.eval()
    return [n for n, _ in bns]


class _Supervised(Step):
    """Shared by the supervised steps: classes (a new head for a new task) and early stopping."""

    supervised = True

    def __init__(self, *, epochs: int = 200, lr: float | None = None, batch_size: int = 32,
                 patience: int = 30, val_fraction: float = 0.25, progress: bool = False) -> None:
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size
        self.patience, self.val_fraction, self.progress = patience, val_fraction, progress

    def _labels(self, bundle: Bundle, y: np.ndarray | None, device: Any) -> tuple[np.ndarray, bool]:
        """Encoded labels; a new head replaces the model's when ``y`` holds new classes."""
        if y is None:
            raise EEGTransferError(f"step {self.name!r} needs labelled calibration trials")
        y = np.asarray(y).astype(str)
        found = sorted(set(y.tolist()))
        new = bool(set(found) - set(bundle.classes))
        if new:
            from ..models import with_new_head

            r = bundle.recipe
            bundle.classes = found
            bundle.model = with_new_head(bundle.model, bundle.model_name, len(found), r.n_chans, r.n_times,
                                         r.sfreq, ch_names=r.channels, **bundle.model_kwargs).to(device)
        return bundle.encode(y), new

    def _train(self, bundle: Bundle, X: np.ndarray, y: np.ndarray, names: list[str] | None, lr: float,
               device: Any, seed: int) -> dict[str, Any]:
        """AdamW epochs on ``names`` with early stopping on the latest trials of each class."""
        from ..training.engine import train

        fit, val = chronological_split(y, self.val_fraction)
        hist = train(bundle.model, X[fit], y[fit], X_val=X[val] if val.any() else None,
                     y_val=y[val] if val.any() else None, trainable=names, epochs=self.epochs,
                     batch_size=self.batch_size, lr=self.lr or lr, patience=self.patience, device=device,
                     seed=seed, progress=self.progress, desc=f"adapt {self.name}",
                     distributed=False)  # a patient's few trials: every process adapts alone
        bundle.history = hist.to_dict()
        return {"n_fit": int(fit.sum()), "n_early_stopping": int(val.sum())}


class Head(_Supervised):
    """Train the classification head only.

    Parameters
    ----------
    l2 : float
        Full-batch solver: strength of the pull towards the pretrained head (towards zero for a
        new head), per parameter on the summed squares; the data term is a mean over trials.
    balanced : bool
        Full-batch solver: every class weighs the same in the data term (see :func:`fit_head`).
    solver : {"lbfgs", "sgd"}
        ``"lbfgs"``: a full-batch, deterministic fit on cached trunk features, no epochs
        (:func:`fit_head`: exact Newton for a head that is affine in them, L-BFGS otherwise, as
        for ATCNet's per-window layers); ``"sgd"``: AdamW epochs through the frozen network, with
        early stopping.
    """

    name = "head"

    def __init__(self, l2: float = HEAD_L2, solver: str = "lbfgs", balanced: bool = True,
                 **train_params: Any) -> None:
        super().__init__(**train_params)
        if solver not in ("lbfgs", "sgd"):
            raise EEGTransferError(f"solver= must be 'lbfgs' or 'sgd', got {solver!r}")
        self.l2, self.solver, self.balanced = l2, solver, balanced

    def fit(self, bundle: Bundle, X: np.ndarray, y: np.ndarray | None = None, *,
            X_unlabeled: np.ndarray | None = None, device: Any = None, seed: int = 0) -> Bundle:
        from ..models import final_parameter_names

        yi, new = self._labels(bundle, y, device)
        Xa = bundle.prepare_input(X)
        model = bundle.model
        self.facts_ = {"new_head": new, "trainable": final_parameter_names(model, bundle.model_name, k=0)}
        if self.solver == "lbfgs":
            cached = _cached_head_features(model, Xa, device)
            if cached is not None:
                # The frozen trunk gives the same features every iteration: they were computed once.
                head, feats = cached
                bundle.history = fit_head(head.module, feats, yi, l2=self.l2, prior="zero" if new else "start",
                                          balanced=self.balanced)
                head.commit()
                return bundle
        self.facts_.update(self._train(bundle, Xa, yi, self.facts_["trainable"], 1e-2, device, seed))
        return bundle


def _cached_head_features(model: Any, X: np.ndarray, device: Any, *, with_logits: bool = False
                          ) -> tuple[Any, ...] | None:
    """``(cached head, features)``: the head as a function of the frozen trunk's output on ``X``
    (:class:`eegtransfer.models.CachedHead`) and that output; ``with_logits``: and the model's logits.

    ``None`` when the model has no such head (:func:`eegtransfer.models.cached_head`), or when the
    head on those features does not give the model's own logits; the head is then trained
    through the frozen network.
    """
    import torch

    from ..models import cached_head
    from ..training.engine import module_inputs

    ch = cached_head(model)
    if ch is None:
        return None
    inputs, logits = module_inputs(model, X, ch.inputs, device=device)
    feats = ch.features(inputs)
    with torch.no_grad():
        out = ch.module.to(feats.device)(feats).float()
    scale = 1.0 + float(logits.abs().max()) if logits.numel() else 1.0
    if out.shape != logits.shape or not torch.allclose(out, logits, rtol=1e-3, atol=1e-4 * scale):
        logger.warning("%s's head on cached features does not give the model's logits; training it through "
                       "the frozen network instead (slower)", type(model).__name__)
        return None
    return (ch, feats, logits) if with_logits else (ch, feats)


class LastK(_Supervised):
    """Train the last ``k`` blocks before the head, and the head (AdamW, early stopping)."""

    name = "last-k"

    def __init__(self, k: int = 1, **train_params: Any) -> None:
        super().__init__(**train_params)
        self.k = k

    def fit(self, bundle: Bundle, X: np.ndarray, y: np.ndarray | None = None, *,
            X_unlabeled: np.ndarray | None = None, device: Any = None, seed: int = 0) -> Bundle:
        from ..models import final_parameter_names

        yi, new = self._labels(bundle, y, device)
        names = final_parameter_names(bundle.model, bundle.model_name, k=self.k)
        self.facts_ = {"new_head": new, "trainable": names, "k": self.k}
        self.facts_.update(self._train(bundle, bundle.prepare_input(X), yi, names, 1e-3, device, seed))
        return bundle


class Full(_Supervised):
    """Fine-tune every layer with a small learning rate (AdamW, early stopping)."""

    name = "full"

    def fit(self, bundle: Bundle, X: np.ndarray, y: np.ndarray | None = None, *,
            X_unlabeled: np.ndarray | None = None, device: Any = None, seed: int = 0) -> Bundle:
        yi, new = self._labels(bundle, y, device)
        names = [n for n, _ in bundle.model.named_parameters()]
        self.facts_ = {"new_head": new, "trainable": names}
        self.facts_.update(self._train(bundle, bundle.prepare_input(X), yi, None, 1e-4, device, seed))
        return bundle


class CCA(Step):
    """Fuse a canonical-correlation expert with the network (SSVEP classes named by frequency).

    The expert's logistic regression on canonical correlations is fitted on the calibration
    trials and pulled towards the population's (``bundle.cca``, fitted at pretraining) or
    towards zero for a new class set; predictions multiply its probabilities and the network's,
    each raised to its exponent (:meth:`eegtransfer.bundle.Bundle.proba_from_logits`).

    Parameters
    ----------
    l2 : float
        Strength of the pull towards the population's expert (the data term is a mean).
    weight : float | "population"
        Exponent of the expert in the product, the network's being 1. ``"population"``: the
        prior's exponents, i.e. the expert's and the network's fitted together on the
        population's validation subjects at pretraining (``CCAExpert.fit_weight``; a bundle
        written before the network's was fitted gives its expert's and 1), or those a patient's
        expert was used with when a patient bundle is adapted again; 1 and 1 without a prior.
    """

    name = "cca"
    supervised = True

    def __init__(self, l2: float = CCA_L2, weight: float | str = "population") -> None:
        self.l2, self.weight = l2, weight

    def fit(self, bundle: Bundle, X: np.ndarray, y: np.ndarray | None = None, *,
            X_unlabeled: np.ndarray | None = None, device: Any = None, seed: int = 0) -> Bundle:
        from ..ssvep import CCAExpert

        if y is None:
            raise EEGTransferError("step 'cca' needs labelled calibration trials")
        y = np.asarray(y).astype(str)
        if set(y.tolist()) - set(bundle.classes):
            raise EEGTransferError(f"the calibration classes {sorted(set(y.tolist()))} are not the model's "
                                   f"{bundle.classes}: train a new head too, with strategy 'head+cca'")
        r = bundle.recipe
        prior = bundle.cca if bundle.cca is not None and bundle.cca.classes == bundle.classes else None
        weight, net_weight = self._exponents(prior)
        # The patient's expert reads what the population's read (a bundle may predate the filter bank),
        # and keeps its say on rest. Without a prior it keeps its full say (the default): halving it,
        # right with a population's fitted exponents, cost auto 2.5 points on the new set-up's
        # development set (benchmarks/results/dev_new_setup).
        expert = (prior.unfitted(weight=weight, net_weight=net_weight) if prior is not None else
                  CCAExpert.for_classes(bundle.classes, r.sfreq, max_freq=r.h_freq, weight=weight))
        if expert is None:
            raise EEGTransferError(f"step 'cca' needs SSVEP classes named by frequency (such as '13' or "
                                   f"'13Hz'); this model's classes are {bundle.classes}")
        bundle.cca = expert.fit(X, y, l2=self.l2, prior=prior)
        self.facts_ = {"cca_prior": "population" if prior is not None else "none",
                       "cca_weight": round(float(weight), 4), "cca_net_weight": round(float(net_weight), 4)}
        return bundle

    def _exponents(self, prior: Any) -> tuple[float, float]:
        """The expert's and the network's exponents: the prior's (see ``weight``), or ``weight`` and 1."""
        if self.weight == "population":
            if prior is not None and prior.fitted_weight_ is not None:
                net = prior.fitted_net_weight_  # None in bundles that fitted the expert's exponent alone
                return prior.fitted_weight_, 1.0 if net is None else net
            if prior is not None and prior.weight > 0:  # a patient's expert, adapted again
                return prior.weight, prior.net_weight
            return 1.0, 1.0
        if isinstance(self.weight, str) or not self.weight >= 0:
            raise EEGTransferError(f"CCA(weight=) (cca_weight=) must be a number >= 0 or 'population', "
                                   f"got {self.weight!r}")
        return float(self.weight), 1.0


class TS(Step):
    """Multiply the patient's own tangent-space classifier into the product (any class set).

    A :class:`~eegtransfer.covariance.TangentSpaceExpert` (covariances of the extended signal
    for SSVEP classes, of the trials otherwise; tangent space at their mean; logistic regression
    with balanced class weights) is fitted on the calibration trials of the bundle's classes
    (after a new head, the new ones). It learns from this patient alone, so it needs many
    calibration trials to help: ``auto`` keeps it only where cross-fitting says it does.

    Parameters
    ----------
    C : float
        Inverse L2 strength of its logistic regression (scikit-learn's default 1).
    weight : float
        Its exponent in the product.
    """

    name = "ts"
    supervised = True

    def __init__(self, C: float = TS_C, weight: float = 1.0) -> None:
        check_number("TS(C=) (ts_C=)", C, positive=True)
        check_number("TS(weight=) (ts_weight=)", weight)
        self.C, self.weight = C, weight

    def fit(self, bundle: Bundle, X: np.ndarray, y: np.ndarray | None = None, *,
            X_unlabeled: np.ndarray | None = None, device: Any = None, seed: int = 0) -> Bundle:
        from ..covariance import TangentSpaceExpert

        if y is None:
            raise EEGTransferError("step 'ts' needs labelled calibration trials")
        found = set(np.asarray(y).astype(str).tolist())
        if found - set(bundle.classes):
            raise EEGTransferError(f"the calibration classes {sorted(found)} are not the model's {bundle.classes}: "
                                   "train a new head too, with strategy 'head+ts'")
        bundle.ts = TangentSpaceExpert(bundle.classes, bundle.sfreq, weight=self.weight, C=self.C).fit(X, y)
        self.facts_ = {"ts_weight": float(self.weight), "ts_C": float(self.C)}
        return bundle


_STEP_PARAMS = {"head": ("l2", "solver", "balanced"), "last-k": ("k",), "full": ()}
_TRAIN_PARAMS = ("epochs", "lr", "batch_size", "patience", "val_fraction", "progress")


def parse_strategy(strategy: str, **params: Any) -> list[Step]:
    """The chain of steps that a strategy name stands for, label-free steps first.

    ``parse_strategy("align+head", l2=0.1)`` -> ``[Align(), Head(l2=0.1)]``. ``params`` go to
    the supervised step that accepts them (``k`` for last-k, ``l2``/``solver`` for head, and
    ``epochs``, ``lr``, ``batch_size``, ``patience``, ``val_fraction``, ``progress``); ``cca_l2`` and
    ``cca_weight`` go to the CCA expert, ``ts_C`` and ``ts_weight`` to the tangent-space one.
    """
    parts = [p.strip().lower() for p in str(strategy).split("+") if p.strip()]
    known = set(SUPERVISED) | set(UNSUPERVISED) | set(EXPERTS) | {"none"}
    sup = [p for p in parts if p in SUPERVISED]
    if (any(p not in known for p in parts) or not parts or len(sup) > 1 or len(set(parts)) < len(parts)
            or ("none" in parts and len(parts) > 1)):
        raise EEGTransferError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)} "
                               "(the label-free steps bn and align combine with one of head, last-k, full, "
                               "and the experts cca and ts with any of them)")
    steps: list[Step] = [Align() for p in parts if p == "align"] + [AdaBN() for p in parts if p == "bn"]
    if sup:
        cls = {"head": Head, "last-k": LastK, "full": Full}[sup[0]]
        kw = {k: v for k, v in params.items() if k in _TRAIN_PARAMS + _STEP_PARAMS[sup[0]] and v is not None}
        steps.append(cls(**kw))
    if "cca" in parts:
        kw = {"l2": params.get("cca_l2"), "weight": params.get("cca_weight")}
        steps.append(CCA(**{k: v for k, v in kw.items() if v is not None}))
    if "ts" in parts:
        kw = {"C": params.get("ts_C"), "weight": params.get("ts_weight")}
        steps.append(TS(**{k: v for k, v in kw.items() if v is not None}))
    return steps
