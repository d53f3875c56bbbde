"""Several bundles of one task that predict together: their class probabilities averaged.

Networks pretrained on the same population with different seeds disagree on a new person far
more than their validation accuracies suggest; averaging them is the cheapest way to a better
network without calibration. On validation subjects' later runs (nested leave-one-subject-out,
``benchmarks/results/dev_nested``), five seeds lifted the zero-shot network from 57.4 % to
67.9 % (11 of 11 subjects better), while a calibrated ``auto`` gained 0.2-0.6 points, its CCA
expert carrying most of the product there; on the protocol's test runs afterwards, 61.5 % to
70.4 % (n = 11, p = 0.027), and 61.2 % to 68.3 % with the longer pretraining of the next
round (``benchmarks/results/loso``, p = 0.011).

Each member stays an ordinary :class:`~eegtransfer.bundle.Bundle` (its own folder, recipe
checked, adapted on its own), so nothing about the bundle format changes::

    pops = [pretrain(X, y, meta, recipe, seed=k) for k in range(5)]
    zero_shot = BundleEnsemble(pops)
    patient = zero_shot.adapt(X_cal, y_cal, strategy="auto")   # each member adapted alike
    patient.predict(raw)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import Bundle
from .errors import EEGTransferError
from .preprocessing import Recipe


class BundleEnsemble:
    """Average the class probabilities of bundles that share classes, channels and recipe.

    Parameters
    ----------
    members : sequence of Bundle
        Two or more bundles of one task (typically one population pretrained with several
        seeds, or each of them adapted to the same patient).
    """

    def __init__(self, members: Sequence[Bundle]) -> None:
        self.members = list(members)
        _check_members(self.members)

    @classmethod
    def load(cls, paths: Sequence[str | Path], *, device: str = "cpu") -> BundleEnsemble:
        """Read each bundle folder (:meth:`Bundle.load`) into one ensemble.

        Parameters
        ----------
        paths : sequence of path
            Two or more bundle folders; the same folder twice is refused.
        device : {"cpu", "cuda", "mps", "auto"}
        """
        paths = [Path(p) for p in paths]
        twice = sorted({str(p) for p in paths if paths.count(p) > 1})
        if twice:
            raise EEGTransferError(f"bundle folder {twice[0]} is given twice: it would count twice in the average")
        return cls([Bundle.load(p, device=device) for p in paths])

    @property
    def classes(self) -> list[str]:
        """The members' classes, in the order of the probability columns."""
        return self.members[0].classes

    @property
    def recipe(self) -> Recipe:
        """The members' preprocessing recipe."""
        return self.members[0].recipe

    def trials(self, data: Any) -> Any:
        """The trials of an ``mne.io.Raw`` or ``mne.Epochs``, cut as every member cuts them (:meth:`Bundle.trials`)."""
        return self.members[0].trials(data)

    def predict_proba(self, data: Any, *, device: str | None = None) -> np.ndarray:
        """Mean of the members' :meth:`Bundle.predict_proba`.

        Parameters
        ----------
        data : mne.io.Raw | mne.Epochs | ndarray, shape (n_trials, n_chans, n_times)
            As for one bundle; MNE objects are cut into trials once, arrays checked once.
        device : str | None

        Returns
        -------
        proba : ndarray, shape (n_trials, n_classes)
        """
        X = self.members[0]._as_trials(data)
        return np.mean([m.predict_proba(X, device=device) for m in self.members], axis=0)

    # The bundle's own predict, table and annotations, on the averaged probabilities.
    predict = Bundle.predict
    predict_frame = Bundle.predict_frame
    predict_annotations = Bundle.predict_annotations

    def adapt(self, X: np.ndarray, labels: np.ndarray | None = None, **kwargs: Any) -> BundleEnsemble:
        """Adapt every member with :func:`~eegtransfer.adaptation.adapt` and the same arguments.

        Each member's guard and ``auto`` decide for that member; their reports stay on the members.
        """
        from .adaptation import adapt

        return BundleEnsemble([adapt(m, X, labels, **kwargs) for m in self.members])

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return f"<BundleEnsemble of {len(self)} {self.members[0].model_name} bundles: classes {self.classes}>"


def _check_members(members: list[Bundle]) -> None:
    """Members must be bundles that cut and read trials as the first one does.

    Classes, channels and recipe; whether the population was aligned; and, for patient
    bundles, the channels interpolated and the event ids of calibration, which decide how a
    recording is cut (member 0 cuts it for all).
    """
    if len(members) < 2:
        raise EEGTransferError(f"an ensemble needs at least 2 bundles, got {len(members)}")
    for i, m in enumerate(members):
        if not isinstance(m, Bundle):
            raise EEGTransferError(f"ensemble member {i} is a {type(m).__name__}, not a Bundle")
    first = _facts(members[0])
    for i, m in enumerate(members[1:], start=1):
        where = f"ensemble member {i}" + (f" ({m.path})" if m.path else "")
        for what, mine in _facts(m).items():
            if mine != first[what]:
                raise EEGTransferError(f"{where} has other {what} than member 0: {_diff(mine, first[what])}")


def _facts(b: Bundle) -> dict[str, Any]:
    """What members must share, by name."""
    cal = b.calibration
    return {"classes": b.classes, "channels": b.ch_names, "recipe": b.recipe.to_dict(),
            "Euclidean alignment": bool(b.provenance.get("euclidean_alignment")),
            "interpolated channels": sorted(cal.get("interpolated") or []), "event ids": dict(cal.get("event_id") or {})}


def _diff(mine: Any, theirs: Any) -> str:
    """A short account of how two lists or recipe dicts differ."""
    if isinstance(mine, dict):
        keys = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        return ", ".join(f"{k} {mine.get(k)!r} vs {theirs.get(k)!r}" for k in keys)
    return f"{mine} vs {theirs}"
