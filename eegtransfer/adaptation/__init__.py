"""Adaptation: a population bundle in, a patient bundle out.

1. :mod:`~eegtransfer.adaptation.calibration` chooses the calibration trials, always the first
   ones in recording time (:func:`select_calibration`), so later data is the test.
2. :func:`parse_strategy` turns a strategy name into a chain of steps
   (:mod:`~eegtransfer.adaptation.steps`): :class:`Align` and :class:`AdaBN` need no labels,
   :class:`Head`, :class:`LastK` and :class:`Full` do, :class:`CCA` fuses a canonical-correlation
   expert for SSVEP classes and :class:`TS` the patient's own tangent-space classifier. A user can
   pass their own steps.
3. :func:`adapt` fits the chain on a copy of the population bundle; the guard
   (:mod:`~eegtransfer.adaptation.guard`) keeps it only if cross-fitted log-loss on unseen
   calibration trials beats the zero-shot model; ``strategy="auto"`` picks among candidates
   the same way (:mod:`~eegtransfer.adaptation.auto`).
4. What happened is an :class:`AdaptationReport`, stored in the patient bundle.
"""

from .alignment import alignment_matrix, apply_alignment
from .auto import auto_candidates
from .balance import balance_classes
from .calibration import (
    check_class_counts,
    chronological_split,
    required_classes,
    select_calibration,
    timeline,
    timeline_length,
)
from .core import adapt, run_steps
from .guard import MARGIN, chronological_folds, cross_fit
from .headfit import fit_head, fit_head_lbfgs
from .report import AdaptationReport, GuardDecision
from .steps import (
    CCA,
    HEAD_L2,
    STRATEGIES,
    TS,
    AdaBN,
    Align,
    Full,
    Head,
    LastK,
    Step,
    adabn,
    parse_strategy,
)

__all__ = [
    "CCA", "HEAD_L2", "MARGIN", "STRATEGIES", "AdaBN", "AdaptationReport", "Align", "Full", "GuardDecision", "Head",
    "LastK", "Step", "TS", "adabn", "adapt", "alignment_matrix", "apply_alignment", "auto_candidates", "balance_classes",
    "check_class_counts", "chronological_folds", "chronological_split", "cross_fit", "fit_head",
    "fit_head_lbfgs", "parse_strategy", "required_classes", "run_steps", "select_calibration", "timeline",
    "timeline_length",
]
