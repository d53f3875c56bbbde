"""``strategy="auto"``: choose among candidate strategies on the patient's own calibration data."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from ..bundle import Bundle
from ..errors import EEGTransferError
from .calibration import check_class_counts, required_classes
from .guard import cross_fit
from .report import GuardDecision
from .steps import parse_strategy

logger = logging.getLogger("eegtransfer")


def auto_candidates(bundle: Bundle, labels: np.ndarray | None = None) -> list[str]:
    """The strategies ``auto`` compares for ``bundle``, simplest first.

    A population pretrained with Euclidean alignment is only used with alignment (its
    zero-shot counterpart is ``align``); otherwise zero-shot, AdaBN and the supervised
    strategies. For SSVEP classes named by frequency each network strategy also comes fused
    with the CCA expert (``+cca``). For a new class set only strategies that train a head remain.
    """
    from ..ssvep import ssvep_frequencies

    if bundle.provenance.get("euclidean_alignment"):
        cands = ["align", "align+cca", "align+head", "align+head+cca", "align+last-k"]
    else:
        cands = ["none", "bn", "cca", "head", "head+cca", "bn+head", "last-k"]
    found = [] if labels is None else sorted(set(np.asarray(labels).astype(str).tolist()))
    if set(found) - set(bundle.classes):
        cands = [c for c in cands if "head" in c]
    if not ssvep_frequencies(found if set(found) - set(bundle.classes) else bundle.classes):
        cands = [c for c in cands if "cca" not in c]
    return cands


def adapt_auto(bundle: Bundle, X: np.ndarray, labels: np.ndarray | None, *, X_unlabeled: Any, n_folds: int,
               margin: float, device: Any, seed: int, calibration: Any, t0: float,
               params: dict[str, Any]) -> Bundle:
    """Score every candidate by the guard's cross-fitting, then adapt with the winner.

    The winner has the lowest cross-fitted log-loss (ties to the simpler candidate); a
    supervised winner must beat the best label-free candidate by ``margin``, as the guard
    requires. It is then adapted on all calibration trials.
    """
    from .core import adapt, run_steps

    if labels is None:
        raise EEGTransferError("strategy 'auto' needs labelled calibration trials")
    labels = np.asarray(labels).astype(str)
    check_class_counts(labels, classes=required_classes(bundle, labels))
    cands = auto_candidates(bundle, labels)

    def fitter(cand: str) -> Any:
        steps = parse_strategy(cand, **params)
        return lambda mask: run_steps(bundle, steps, X[mask], labels[mask], X_unlabeled=X_unlabeled,
                                      device=device, seed=seed)

    scores = cross_fit({c: fitter(c) for c in cands}, X, labels, n_folds=n_folds)
    rank = sorted(cands, key=lambda c: (scores[c]["log_loss"], cands.index(c)))
    chosen = rank[0]
    free = [c for c in rank if not any(s.supervised for s in parse_strategy(c))]
    if free and chosen not in free and scores[free[0]]["log_loss"] - scores[chosen]["log_loss"] < margin:
        chosen = free[0]
    how = ", ".join(f"{c} {scores[c]['log_loss']:.3f}" for c in cands)
    reason = f"auto chose {chosen!r} by cross-fitted log-loss on unseen calibration trials ({how}; margin {margin:g})"
    best = adapt(bundle, X, labels, strategy=chosen, X_unlabeled=X_unlabeled, guard=False, device=device,
                 seed=seed, calibration=calibration, **_adapt_params(params))
    report = best.adaptation
    report.strategy, report.chosen = "auto", chosen
    report.candidates = {c: scores[c]["log_loss"] for c in cands}
    report.guard = GuardDecision(kept=chosen, compared=scores, margin=margin, n_folds=n_folds,
                                 n_compared=len(X), reason=reason)
    report.guard_skipped = ""
    report.note = reason + (f"; {report.note}" if report.new_head else "")
    report.seconds = round(time.perf_counter() - t0, 4)
    best.metrics = {"calibration_cv_accuracy": scores[chosen]["accuracy"],
                    "calibration_cv_log_loss": scores[chosen]["log_loss"]}
    logger.info(reason)
    return best


def _adapt_params(params: dict[str, Any]) -> dict[str, Any]:
    """parse_strategy's parameter names back to adapt()'s."""
    out = {k: v for k, v in params.items() if k not in ("solver", "l2")}
    return {**out, "head_solver": params["solver"], "head_l2": params["l2"]}
