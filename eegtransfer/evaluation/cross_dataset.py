"""Adapt a population pretrained on one dataset to a subject of another.

The target's channels may come in another order, with extra channels, another sampling rate
or other classes (a new head): :func:`adapt_across_datasets`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover

    from ..bundle import Bundle
    from ..preprocessing import Recipe

logger = logging.getLogger("eegtransfer")


# --- across datasets ---------------------------------------------------------

def recipe_for_target(recipe: Recipe, dataset: Any) -> Recipe:
    """``recipe`` with its window moved to the start of ``dataset``'s trial interval.

    Channels, sampling rate and filters stay (the model needs them); the
    window keeps its length, so the model's input size does not change.
    """
    from ..preprocessing import Recipe

    lo, hi = (float(v) for v in dataset.interval)
    length = recipe.tmax - recipe.tmin
    if lo + length > hi + 1e-9:
        logger.warning("%s trials last %.2f s, the model's window %.2f s; it runs past the trial",
                       type(dataset).__name__, hi - lo, length)
    d = recipe.to_dict()
    d.update(tmin=lo, tmax=lo + length)
    return Recipe.from_dict(d)


@dataclass
class TransferResult:
    """A population model of one dataset adapted to a subject of another.

    Attributes
    ----------
    population, patient : Bundle
    source, target : str
        Dataset names.
    subject : int
    zero_shot_accuracy : float | None
        ``None`` when the class sets differ (the population cannot predict them).
    adapted_accuracy : float
    n_calibration, n_test : int
    channels : dict
        Channel matching report (renamed, dropped, sampling rates).
    """

    population: Bundle
    patient: Bundle
    source: str
    target: str
    subject: int
    zero_shot_accuracy: float | None
    adapted_accuracy: float
    n_calibration: int
    n_test: int
    channels: dict[str, Any]

    def summary(self) -> str:
        p, q = self.population, self.patient
        lines = [
            f"source     {self.source}: {len(p.ch_names)} ch @ {p.sfreq:g} Hz, classes {p.classes}",
            f"target     {self.target} subject {self.subject}: source rate "
            f"{self.channels.get('source_sfreq')} Hz -> {q.sfreq:g} Hz, dropped {self.channels.get('dropped')}, "
            f"renamed {self.channels.get('renamed') or {}}",
            f"adaptation {q.adaptation.strategy if q.adaptation else None}: {self.n_calibration} calibration "
            f"trials, classes {q.classes}" + (" (new head)" if q.adaptation and q.adaptation.new_head else ""),
            f"zero-shot  {'n/a (other classes)' if self.zero_shot_accuracy is None else f'{self.zero_shot_accuracy:.3f}'}",
            f"adapted    {self.adapted_accuracy:.3f} on {self.n_test} later trials",
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<TransferResult {self.source} -> {self.target} subject {self.subject}>\n{self.summary()}"

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(self.__repr__())}</pre>"


def adapt_across_datasets(
    population: Bundle,
    target: Any,
    subject: int,
    *,
    calibration_trials: int | None = None,
    calibration_minutes: float | None = None,
    strategy: str = "head",
    device: str = "cpu",
    seed: int = 0,
    **adapt_kwargs: Any,
) -> TransferResult:
    """Adapt a population bundle pretrained on one dataset to a subject of another.

    The target's recordings are fitted to the bundle's recipe
    (:func:`eegtransfer.io.load_dataset` with ``conform=True``): channels
    matched by name and reordered, extra channels dropped, resampled to the
    bundle's rate, window moved to the target's trial interval
    (:func:`recipe_for_target`); its known duplicated runs are removed. When the target's
    classes differ, :func:`~eegtransfer.adaptation.adapt` trains a new head.

    Parameters
    ----------
    population : Bundle
    target : str | MOABB dataset
    subject : int
    calibration_trials, calibration_minutes : int | float | None
        The first trials (default: half of them) or minutes of the subject's
        recordings, chronologically; the rest is the test.
    strategy : str
        A supervised strategy (the class set may be new).

    Returns
    -------
    TransferResult
    """
    from ..adaptation import adapt, select_calibration
    from ..io.moabb import dataset_name, get_dataset, load_dataset

    if isinstance(target, str):
        target = get_dataset(target)
    recipe = recipe_for_target(population.recipe, target)
    report: dict[str, Any] = {}
    X, meta, _ = load_dataset(target, [subject], recipe, conform=True, report=report)
    if calibration_trials is None and calibration_minutes is None:
        calibration_trials = len(X) // 2
    cal = select_calibration(meta, trials=calibration_trials, minutes=calibration_minutes,
                             trial_seconds=recipe.tmax)
    labels = meta["label"].astype(str).to_numpy()
    patient = adapt(population, X[cal], labels[cal], strategy=strategy, device=device, seed=seed,
                    calibration={"dataset": dataset_name(target), "subject": int(subject)},
                    **adapt_kwargs)
    patient.recipe = recipe  # same channels, rate and length; the target's window
    test = ~cal
    acc = float((np.asarray(patient.predict(X[test])).astype(str) == labels[test]).mean())
    same = set(labels.tolist()) <= set(population.classes)
    zs = (float((np.asarray(population.predict(X[test])).astype(str) == labels[test]).mean())
          if same else None)
    return TransferResult(population, patient, population.provenance.get("dataset", "population"),
                          dataset_name(target), int(subject), zs, acc, int(cal.sum()), int(test.sum()),
                          report)
