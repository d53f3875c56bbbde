"""eegtransfer: adapt population-pretrained braindecode EEG decoders to one person.

Where a trial goes, from file to prediction::

    io (a file or a MOABB dataset -> MNE Raw + events)  ->  preprocessing (Recipe -> trials)
         ->  models (braindecode)  ->  pretrain (population)  ->  adapt (one subject)  ->  bundle (disk)

Heavy dependencies load lazily: ``import eegtransfer`` is cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Recipe": "preprocessing",
    "Bundle": "bundle",
    "select_calibration": "adaptation",
    "load_dataset": "io",
    "build_model": "models",
    "EEGTransferError": "errors",
    "SubjectAdaptiveClassifier": "estimator",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        mod = import_module(f".{_LAZY[name]}", __name__)
        value = getattr(mod, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'eegtransfer' has no attribute {name!r}")
