"""The adaptation driver: steps, then the guard, then a report."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..bundle import Bundle
from ..errors import EEGTransferError
from .calibration import check_class_counts, required_classes
from .guard import MARGIN, cross_fit, cross_fit_head, decide
from .report import AdaptationReport
from .steps import HEAD_L2, Head, Step, parse_strategy

logger = logging.getLogger("eegtransfer")


def run_steps(bundle: Bundle, steps: Sequence[Step], X: np.ndarray, labels: np.ndarray | None, *,
              X_unlabeled: np.ndarray | None = None, device: Any = None, seed: int = 0) -> Bundle:
    """A copy of ``bundle`` on ``device`` with ``steps`` fitted in order (the population is untouched)."""
    from ..training.engine import seed_everything

    seed_everything(seed)
    new = without_ts(bundle).copy()
    new.model.to(device)
    for step in steps:
        step.fit(new, X, labels if step.supervised else None, X_unlabeled=X_unlabeled, device=device, seed=seed)
    return new


def without_ts(bundle: Bundle) -> Bundle:
    """``bundle`` without a patient's tangent-space classifier (a copy only when it has one).

    That classifier belongs to one calibration set: adapting again refits it (step ``ts``) or
    drops it, and the guard's zero-shot candidate must not be scored with it either.
    """
    if bundle.ts is None:
        return bundle
    new = bundle.copy()
    new.ts, new.path = None, bundle.path  # the parent named in provenance stays the file
    return new


def _check(bundle: Bundle, X: np.ndarray, labels: np.ndarray | None, steps: Sequence[Step],
           name: str) -> np.ndarray | None:
    """Boundary checks: labels where a step needs them, and every class calibrated."""
    supervised = any(s.supervised for s in steps)
    if supervised and labels is None:
        raise EEGTransferError(f"strategy {name!r} needs labelled calibration trials; "
                               "use 'bn' or 'align' for an unlabelled recording")
    if len(X) == 0 and steps:
        raise EEGTransferError("the calibration set is empty; give more minutes= or trials=")
    if labels is None:
        return None
    labels = np.asarray(labels).astype(str)
    if len(labels) != len(X):
        raise EEGTransferError(f"labels= has {len(labels)} entries for {len(X)} trials")
    if supervised:
        check_class_counts(labels, classes=required_classes(bundle, labels))
    elif set(labels.tolist()) - set(bundle.classes):
        raise EEGTransferError(f"the calibration classes {sorted(set(labels.tolist()))} differ from the "
                               f"model's {bundle.classes}; a new head must be trained: use strategy 'head'")
    return labels


def adapt(
    bundle: Bundle,
    X: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    strategy: str | Sequence[Step] = "head",
    X_unlabeled: np.ndarray | None = None,
    guard: bool = True,
    n_folds: int = 2,
    margin: float = MARGIN,
    device: str = "auto",
    seed: int = 0,
    calibration: dict[str, Any] | None = None,
    k: int = 1,
    epochs: int = 200,
    lr: float | None = None,
    batch_size: int = 32,
    val_fraction: float = 0.25,
    patience: int = 30,
    head_solver: str = "lbfgs",
    head_l2: float = HEAD_L2,
    progress: bool = False,
) -> Bundle:
    """Adapt a population bundle to one subject; return a new bundle.

    Parameters
    ----------
    bundle : Bundle
        The population model. It is not modified.
    X : ndarray of float32, shape (n_trials, n_chans, n_times)
        The subject's calibration trials **in time order**, preprocessed with ``bundle.recipe``.
    labels : ndarray of str, shape (n_trials,) | None
        Class names; ``None`` for an unlabelled recording (label-free steps only). Labels outside
        ``bundle.classes`` train a new head for the classes found (a new task).
    strategy : str | sequence of Step
        ``"head"``, ``"align+head"``, ``"auto"``... (:data:`~eegtransfer.adaptation.STRATEGIES`)
        or your own chain of steps.
    X_unlabeled : ndarray, shape (n_more, n_chans, n_times) | None
        More trials without labels, for the label-free steps.
    guard : bool
        Keep the adapted model only when cross-fitted log-loss on unseen calibration trials
        beats the zero-shot model (and the label-free steps alone) by ``margin``
        (:mod:`eegtransfer.adaptation.guard`).
    n_folds, margin : settings of the guard.
    device : {"auto", "cpu", "cuda", "mps"}
    seed : int
    calibration : dict | None
        Facts about the calibration data to record (minutes, files, hashes, events).
    k, epochs, lr, batch_size, val_fraction, patience, head_solver, head_l2, progress :
        Parameters of the supervised step (:func:`~eegtransfer.adaptation.parse_strategy`).

    Returns
    -------
    patient : Bundle
        ``patient.adaptation`` is an :class:`AdaptationReport`.
    """
    from ..training.engine import resolve_device

    t0 = time.perf_counter()
    dev = resolve_device(device)
    X = bundle.check_input(X)
    bundle = without_ts(bundle)
    params = dict(k=k, epochs=epochs, lr=lr, batch_size=batch_size, val_fraction=val_fraction,
                  patience=patience, solver=head_solver, l2=head_l2, progress=progress)
    if isinstance(strategy, str) and strategy.strip().lower() == "auto":
        from .auto import adapt_auto

        return adapt_auto(bundle, X, labels, X_unlabeled=X_unlabeled, n_folds=n_folds, margin=margin,
                          device=dev, seed=seed, calibration=calibration, t0=t0, params=params)
    steps = parse_strategy(strategy, **params) if isinstance(strategy, str) else list(strategy)
    name = strategy if isinstance(strategy, str) else "+".join(s.name for s in steps) or "none"
    labels = _check(bundle, X, labels, steps, name)
    aligned_steps = any(s.name == "align" for s in steps)
    if aligned_steps and not bundle.provenance.get("euclidean_alignment"):
        logger.warning("strategy 'align' on a population model pretrained without alignment; "
                       "pretrain with align=True for it to help")
    elif not aligned_steps and bundle.provenance.get("euclidean_alignment") and bundle.align is None:
        logger.warning("strategy %r without 'align' on a population model pretrained with alignment: its "
                       "network expects whitened trials; use the align strategies (or auto)", name)
    fit = _fitter(bundle, X, labels, X_unlabeled=X_unlabeled, device=dev, seed=seed)
    decision, skipped = None, _guard_skipped(bundle, labels, steps, guard, n_folds)
    kept = steps
    if not skipped:
        prefix = [s for s in steps if not s.supervised]
        scores = None
        if len(steps) == 1 and type(steps[0]) is Head and steps[0].solver == "lbfgs":
            # the head alone: every candidate shares the population's trunk, run once
            scores = cross_fit_head(bundle, steps[0], X, labels, name=name, n_folds=n_folds, device=dev)
        if scores is None:
            cands = {name: fit(steps), "zero-shot": lambda mask: bundle}
            if prefix:
                cands["+".join(s.name for s in prefix)] = fit(prefix)
            scores = cross_fit(cands, X, labels, n_folds=n_folds)
        decision = decide(scores, name, n_compared=len(X), margin=margin, n_folds=n_folds)
        kept = steps if decision.kept == name else prefix if decision.kept != "zero-shot" else []
        (logger.info if decision.kept == name else logger.warning)(decision.reason)
    new = fit(kept)(np.ones(len(X), bool))
    return _finish(bundle, new, kept, name=name, n=len(X), X_unlabeled=X_unlabeled, guard=decision,
                   skipped=skipped, calibration=calibration, device=dev, t0=t0)


def _fitter(bundle: Bundle, X: np.ndarray, labels: np.ndarray | None, **context: Any
            ) -> Callable[[Sequence[Step]], Callable[[np.ndarray], Bundle]]:
    """``fit(steps)(mask)``: the steps fitted on the calibration trials in ``mask``."""
    def with_steps(steps: Sequence[Step]) -> Callable[[np.ndarray], Bundle]:
        def on(mask: np.ndarray) -> Bundle:
            return run_steps(bundle, steps, X[mask], None if labels is None else labels[mask], **context)
        return on
    return with_steps


def _guard_skipped(bundle: Bundle, labels: np.ndarray | None, steps: Sequence[Step], guard: bool,
                   n_folds: int) -> str:
    """Why the guard does not run (an empty string when it does)."""
    if not guard:
        return "off (guard=False)"
    if not any(s.supervised for s in steps):
        return ("no supervised step: nothing to guard" if labels is not None else
                "no labels: held-out accuracy unavailable; score the patient bundle on labelled data")
    if set(labels.tolist()) - set(bundle.classes):
        return "new head: the zero-shot model has other classes, so there is nothing to compare with"
    low = min(int((labels == c).sum()) for c in set(labels.tolist()))
    if low < n_folds:
        return f"a class has {low} calibration trial(s), fewer than the {n_folds} folds of the guard"
    return ""


def _finish(bundle: Bundle, new: Bundle, kept: Sequence[Step], *, name: str, n: int,
            X_unlabeled: np.ndarray | None, guard: Any, skipped: str, calibration: dict[str, Any] | None,
            device: Any, t0: float) -> Bundle:
    """Attach the report, provenance and metrics to the patient bundle."""
    facts = {s.name: getattr(s, "facts_", {}) for s in kept}
    sup = [f for s, f in zip(kept, facts.values()) if s.supervised]
    report = AdaptationReport(
        strategy=name, steps=[s.name for s in kept], n_calibration_trials=int(n),
        n_unlabeled_trials=int(n + (0 if X_unlabeled is None else len(X_unlabeled))),
        trainable=list(sup[0].get("trainable", [])) if sup else [],
        new_head=bool(sup and sup[0].get("new_head")), guard=guard, guard_skipped=skipped,
        note=guard.reason if guard is not None else ("" if not skipped.startswith("no labels") else skipped),
        details=facts, calibration=dict(calibration or {}), device=str(device),
        seconds=round(time.perf_counter() - t0, 4))
    if report.new_head:
        report.note = f"new head for classes {new.classes} (the model was trained on {bundle.classes})"
        logger.warning(report.note)
    if not kept:
        new.history = {}
    new.adaptation = report
    new.provenance = {**bundle.provenance, "parent": str(bundle.path) if bundle.path else
                      f"{bundle.model_name} (in memory)"}
    new.metrics = ({"calibration_cv_accuracy": guard.compared[guard.kept]["accuracy"],
                    "calibration_cv_log_loss": guard.compared[guard.kept]["log_loss"]} if guard else {})
    return new
