"""eegtransfer: adapt population-pretrained braindecode EEG decoders to one person.

Where a trial goes, from file to prediction (read each subpackage's docstring in this order):

1. :mod:`eegtransfer.io`: a recording file (any MNE format) or a MOABB dataset becomes MNE
   ``Raw`` plus events, channels matched by name.
2. :mod:`eegtransfer.preprocessing`: one :class:`Recipe` (channels, reference, filters,
   resampling, window, volts to µV, per-trial z-score) cuts the same trials for a population
   and for a patient.
3. :mod:`eegtransfer.models`: braindecode networks by name, their head and last blocks.
4. :mod:`eegtransfer.training`: the engine, and :func:`pretrain` on a population.
5. :mod:`eegtransfer.adaptation`: :func:`adapt` a population bundle to one patient's first
   minutes (steps, guard, report).
6. :mod:`eegtransfer.bundle`: a model with its recipe, classes and provenance on disk;
   ``Bundle.predict`` gives the prediction (:mod:`eegtransfer.ensemble`: several bundles
   averaged).
7. :mod:`eegtransfer.evaluation`: the one protocol, baselines, statistics, curves, benchmarks;
   :mod:`eegtransfer.estimator` for MOABB pipelines; :mod:`eegtransfer.cli` for the command line.

Heavy dependencies load lazily: ``import eegtransfer`` is cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_recording": "io",
    "load_dataset": "io",
    "Recipe": "preprocessing",
    "build_model": "models",
    "pretrain": "training",
    "select_calibration": "adaptation",
    "adapt": "adaptation",
    "AdaptationReport": "adaptation",
    "Bundle": "bundle",
    "BundleEnsemble": "ensemble",
    "score_bundle": "evaluation",
    "SubjectAdaptiveClassifier": "estimator",
    "EEGTransferError": "errors",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        mod = import_module(f".{_LAZY[name]}", __name__)
        value = getattr(mod, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'eegtransfer' has no attribute {name!r}")
