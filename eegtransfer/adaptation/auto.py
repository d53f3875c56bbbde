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
    strategies. For a new class set only strategies that train a head remain.

    For SSVEP classes named by frequency every candidate is fused with the CCA expert
    (``+cca``), and with the model's own classes the network's label-free steps only (``cca``,
    ``bn+cca``; ``align+cca``, the only candidate on an aligned population). On the development
    trials (``benchmarks/results/dev_first_run/dev.md``, 2 min) the population's expert alone
    scored 86 %, every network strategy without it 73 % or less, and training the head under
    the expert lost points (``head+cca`` 82.9 against ``cca`` 86.0, ``align+head+cca`` 82.7
    against ``align+cca`` 85.5); the cross-fitted choice among all of them scored 2 points under
    the simplest candidate (measured two releases ago). The zero-shot network is not a
    candidate: as the reference it kept the network alone for one subject there and lost 17
    points on it. On validation subjects' later runs (nested leave-one-subject-out,
    ``benchmarks/results/dev_nested``) making the winner beat it by the guard's margin cost
    1.1 / 0.6 / 0.2 points (1 min, 2 min, one run) and saved 2 of 330 harmed cells; 10 of 11
    targets chose a rule without it. With longer pretraining (``benchmarks/results/dev_recipe``)
    it saved none.

    Each SSVEP candidate also comes with the patient's own tangent-space classifier multiplied
    in (``+ts``, :class:`~eegtransfer.covariance.TangentSpaceExpert`): covariances carry the power
    at each frequency, which CCA's phase-locked references miss. On 4-fold cross-validation
    within the first runs (``benchmarks/results/dev_one_run``, 24 calibration trials, a stand-in
    for one run) ``auto`` rose from 85.5 % to 88.6 % with them; with 1 or 2 minutes, where the
    classifier has 2-5 trials per class, it scored 83.8 / 84.8 % against 84.3 / 85.8 % (a net of one
    and two development trials over 11 subjects); the cross-fitting makes the choice per patient.
    The stand-in's folds interleave trials, which favours a classifier fitted on the patient: on
    the test runs ``auto`` gained 0.9 points with one run and lost 1.0 at 1 and 2 minutes.
    """
    from ..ssvep import ssvep_frequencies

    if bundle.provenance.get("euclidean_alignment"):
        cands = ["align", "align+head", "align+last-k"]
    else:
        cands = ["none", "bn", "head", "bn+head", "last-k"]
    found = [] if labels is None else sorted(set(np.asarray(labels).astype(str).tolist()))
    new_classes = bool(set(found) - set(bundle.classes))
    if new_classes:
        cands = [c for c in cands if "head" in c]
    if ssvep_frequencies(found if new_classes else bundle.classes):
        cands = ["cca" if c == "none" else f"{c}+cca" for c in cands]
        if not new_classes:
            cands = [c for c in cands if not any(s.supervised for s in parse_strategy(c) if s.name != "cca")]
        cands += [f"{c}+ts" for c in cands]
    return cands


NOT_AHEAD = "is not ahead of it by the margin"  # the report's finding looks for these words


def choose_candidate(scores: dict[str, dict[str, float]], cands: list[str], margin: float) -> str:
    """``auto``'s rule: the candidate with the lowest cross-fitted log-loss.

    Ties go to the simpler (earlier) candidate. A supervised winner must beat the best
    label-free candidate by ``margin``, as the guard requires, or, when every candidate is
    supervised (SSVEP: all fused with the expert), the simplest one; otherwise that one is kept.

    Parameters
    ----------
    scores : dict
        Candidate -> ``{"log_loss": ..., "accuracy": ...}`` (:func:`~eegtransfer.adaptation.guard.cross_fit`).
    cands : list of str
        The candidates, simplest first (:func:`auto_candidates`).
    margin : float
        Nats per trial.
    """
    rank = sorted(cands, key=lambda c: (scores[c]["log_loss"], cands.index(c)))
    free = [c for c in rank if not any(s.supervised for s in parse_strategy(c))]
    ref = free[0] if free else cands[0]
    if rank[0] != ref and scores[ref]["log_loss"] - scores[rank[0]]["log_loss"] < margin:
        return ref
    return rank[0]


def adapt_auto(bundle: Bundle, X: np.ndarray, labels: np.ndarray | None, *, X_unlabeled: Any, n_folds: int,
               margin: float, device: Any, seed: int, calibration: Any, t0: float,
               params: dict[str, Any]) -> Bundle:
    """Score every candidate by the guard's cross-fitting, then adapt with the winner.

    The winner is :func:`choose_candidate`'s; it is then adapted on all calibration trials.
    Where every candidate carries the CCA expert, the network without it (``none``, or ``align``
    on an aligned population) is scored too, as a reference that the report names, not as a
    candidate.
    """
    from .core import adapt, run_steps

    if labels is None:
        raise EEGTransferError("strategy 'auto' needs labelled calibration trials")
    labels = np.asarray(labels).astype(str)
    check_class_counts(labels, classes=required_classes(bundle, labels))
    cands = auto_candidates(bundle, labels)

    def fitter(cand: str, base: Bundle = bundle) -> Any:
        steps = parse_strategy(cand, **params)
        return lambda mask: run_steps(base, steps, X[mask], labels[mask], X_unlabeled=X_unlabeled,
                                      device=device, seed=seed)

    fits = {c: fitter(c) for c in cands}
    reference = "align" if bundle.provenance.get("euclidean_alignment") else "none"
    if reference not in cands and required_classes(bundle, labels) is not None:  # the same classes
        network = bundle.copy()
        network.cca = None  # a patient bundle adapted again keeps its expert otherwise
        fits[reference] = fitter(reference, network)
    scores = cross_fit(fits, X, labels, n_folds=n_folds)
    chosen = choose_candidate(scores, cands, margin)
    how = ", ".join(f"{c} {scores[c]['log_loss']:.3f}" for c in cands)
    reason = f"auto chose {chosen!r} by cross-fitted log-loss on unseen calibration trials ({how}; margin {margin:g})"
    if len(cands) == 1:  # nothing to choose: the cross-fitted score is still an estimate worth reporting
        reason = (f"auto: {chosen!r} is the only candidate for this model and these classes (cross-fitted "
                  f"log-loss on unseen calibration trials {how})")
    ahead = True
    if reference in scores and reference not in cands:
        ahead = scores[reference]["log_loss"] - scores[chosen]["log_loss"] >= margin
        reason += f"; the network without the expert ({reference!r}, not a candidate) {scores[reference]['log_loss']:.3f}"
        if not ahead:
            reason += (f": {chosen!r} {NOT_AHEAD}, so a single guarded strategy would keep {reference!r} (on "
                       "validation subjects' later runs that guard cost more accuracy than it saved; "
                       "benchmarks/results/dev_nested)")
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
    (logger.info if ahead else logger.warning)(reason)
    return best


def _adapt_params(params: dict[str, Any]) -> dict[str, Any]:
    """parse_strategy's parameter names back to adapt()'s."""
    out = {k: v for k, v in params.items() if k not in ("solver", "l2")}
    return {**out, "head_solver": params["solver"], "head_l2": params["l2"]}
