"""One library call per user task; the command line only parses arguments and prints.

:func:`calibrate_patient` is ``eegtransfer calibrate`` for Python users: read a patient's
recordings with the population's recipe, choose the calibration trials (the first minutes or
trials, in recording order), adapt, score the rest, and return everything in a
:class:`CalibrationResult` whose ``patient`` bundle carries what its report needs.
Pretraining is :func:`eegtransfer.training.pretrain` (arrays) or
:func:`eegtransfer.training.pretrain_on_dataset` (a MOABB dataset).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import EEGTransferError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .bundle import Bundle
    from .io import Recording
    from .preprocessing import Recipe

logger = logging.getLogger("eegtransfer")


@dataclass
class CalibrationResult:
    """What :func:`calibrate_patient` made and measured.

    Attributes
    ----------
    patient : Bundle
        The adapted bundle (not yet saved); ``patient.adaptation.calibration`` holds the facts
        of its report.
    heldout : dict | None
        :func:`eegtransfer.evaluation.scores` on the trials after the calibration ones
        (``None`` when every trial calibrated).
    selection : str
        The calibration rule (``"first 2 min"``, ``"all trials"``).
    n_calibration, n_heldout, n_bad_dropped : int
    calibration_minutes : float
        Minutes of recording that the calibration trials span.
    interpolated : list of str
        Model channels interpolated because the recordings lack them.
    recordings : list of dict
        :meth:`eegtransfer.io.Recording.summary` of each file, in order.
    warnings : list of str
        Things the operator must know (a population at chance, nothing held out).
    seconds : float
    """

    patient: Bundle
    heldout: dict[str, Any] | None
    selection: str
    n_calibration: int
    n_heldout: int
    n_bad_dropped: int
    calibration_minutes: float
    interpolated: list[str]
    recordings: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def load_recordings(entries: list[dict[str, Any]], recipe: Recipe, *, classes: list[str] | None,
                    event_id: dict[str, str] | None = None, default_id: dict[str, int] | None = None,
                    interpolate_missing: bool = False, encoding: str | None = None, stride: float | None = None,
                    progress: bool = False) -> tuple[np.ndarray, pd.DataFrame, list[Recording]]:
    """Trials of every recording, in the order given (one ``run`` per file).

    Parameters
    ----------
    entries : list of dict
        ``path`` and optionally ``events``, ``label``, ``subject``, ``session`` per file.
    stride : float | None
        Seconds between windows of a file labelled as a whole (see :func:`~eegtransfer.io.load_recording`).

    Returns
    -------
    X : ndarray of float32, shape (n_trials, n_chans, n_times)
    meta : pandas.DataFrame
        Trial metadata; ``run`` is the recording's position in ``entries``.
    recordings : list of Recording
    """
    import sys

    import pandas as pd
    from tqdm.auto import tqdm

    from .io import load_recording

    recs = []
    for i, e in enumerate(tqdm(entries, desc="read recordings", disable=not progress, leave=False,
                               file=sys.stderr, delay=1.0)):
        recs.append(load_recording(e["path"], recipe, classes=classes, events=e.get("events"),
                                   event_id=event_id or {}, default_id=default_id, label=e.get("label"),
                                   stride=stride if e.get("label") else None,
                                   interpolate_missing=interpolate_missing, encoding=encoding,
                                   subject=str(e.get("subject") or "patient"),
                                   session=str(e.get("session") or "0"), run=str(i)))
    return np.concatenate([r.X for r in recs]), pd.concat([r.meta for r in recs], ignore_index=True), recs


def _select(meta: pd.DataFrame, *, minutes: float | None, trials: int | None, per_class: bool,
            trial_seconds: float, source: str) -> tuple[np.ndarray, str]:
    """The calibration mask and its description; every trial when neither limit is given."""
    from .adaptation import select_calibration

    if minutes is None and trials is None:
        if per_class:
            raise EEGTransferError("per_class=True needs minutes= or trials=")
        return np.ones(len(meta), bool), "all trials"
    cal = select_calibration(meta, minutes=minutes, trials=trials, per_class=per_class,
                             trial_seconds=trial_seconds, source=source)
    rule = f"first {minutes:g} min" if minutes is not None else f"first {trials} trials"
    return cal, rule + (" per class" if per_class else "")


def calibrate_patient(
    population: str | Path,
    recordings: list[str | Path | dict[str, Any]],
    *,
    minutes: float | None = None,
    trials: int | None = None,
    per_class: bool = False,
    strategy: str = "auto",
    event_id: dict[str, str] | None = None,
    interpolate_missing: bool = False,
    encoding: str | None = None,
    stride: float | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = False,
) -> CalibrationResult:
    """Adapt a population bundle to one patient's recordings and score it on their later trials.

    Parameters
    ----------
    population : str | Path
        A population bundle folder (checked before any recording is read).
    recordings : list of path or dict
        The patient's files (any format MNE reads), in recording order; a dict gives ``path``
        and ``events`` (a CSV or MNE events file) or ``label`` (the whole file is one class).
    minutes, trials : float | int | None
        Calibrate on the trials that end within the first ``minutes`` (recordings laid end to
        end) or on the first ``trials``; the rest is held out. Neither: every trial calibrates
        and nothing is held out (said in ``warnings``).
    per_class : bool
        Apply the limit per class.
    strategy : str
        See :func:`eegtransfer.adaptation.adapt`; ``"auto"`` (the default) compares the candidates
        of :func:`~eegtransfer.adaptation.auto_candidates` on the calibration trials themselves.
    event_id : dict | None
        Class name -> event code or annotation description.
    interpolate_missing : bool
        Interpolate model channels that the recordings lack (else they are refused).
    encoding : str | None
        Text encoding of EDF+/BDF+ annotations.
    stride : float | None
        Seconds between the windows of a file labelled as a whole; shorter than the window
        gives overlapping trials (more of them from a few seconds per class). The calibration
        and held-out trials are still cut in time order, so only the windows that straddle
        their boundary share samples.
    device, seed, progress
        As in :func:`eegtransfer.adaptation.adapt`.

    Returns
    -------
    result : CalibrationResult
    """
    from .adaptation import adapt, check_class_counts, timeline
    from .bundle import Bundle, chance_level_warning, verify_weights
    from .evaluation import score_bundle
    from .io.reading import check_readable
    from .preprocessing import Recipe
    from .report import calibration_facts

    t0 = time.perf_counter()
    entries = [dict(r) if isinstance(r, dict) else {"path": r} for r in recordings]
    for e in entries:
        check_readable(e["path"])
    meta_json = verify_weights(Path(population))
    recipe, classes = Recipe.from_dict(meta_json["recipe"]), list(meta_json["classes"])
    X, meta, recs = load_recordings(entries, recipe, classes=classes, event_id=event_id,
                                    default_id=(meta_json.get("provenance") or {}).get("event_id"),
                                    interpolate_missing=interpolate_missing, encoding=encoding,
                                    stride=stride, progress=progress)
    labels = meta["label"].astype(str).to_numpy()
    source = "recording" if len(recs) == 1 else f"{len(recs)} recordings"
    cal, selection = _select(meta, minutes=minutes, trials=trials, per_class=per_class,
                             trial_seconds=recipe.tmax, source=source)
    found = sorted(set(labels.tolist()))
    # The model's head is kept unless a label is new to it: then it needs every model class.
    check_class_counts(labels[cal], classes=found if set(found) - set(classes) else classes,
                       what=f"calibration set ({selection})")
    t = timeline(meta)
    order = np.where(cal)[0][np.argsort(t[cal], kind="stable")]  # adapt wants time order
    warnings = [w for w in (chance_level_warning(meta_json),) if w]
    if not (~cal).any():
        warnings.append(f"no minutes= or trials=: calibrating on all {len(meta)} trials, none held out")
    for w in warnings:
        logger.warning("warning: %s", w)
    pop = Bundle.load(population)
    facts = {"recordings": [{"path": str(r.path.absolute()), "sha256": r.sha256} for r in recs],
             "calibration_minutes": round(float((t[cal] + recipe.tmax).max() / 60), 3),
             "selection": selection, "n_heldout_trials": int((~cal).sum()), "channels": list(recipe.channels),
             "interpolated": sorted({c for r in recs for c in r.channels.interpolated}),
             **({"event_id": event_id} if event_id else {})}
    patient = adapt(pop, X[order], labels[order], strategy=strategy, device=device, seed=seed,
                    progress=progress, calibration=facts)
    patient.provenance["population_metrics"] = dict(pop.metrics)  # info shows them apart
    held = score_bundle(patient, X[~cal], labels[~cal]) if (~cal).any() else None
    if held is not None:
        patient.metrics.update(heldout_accuracy=held["accuracy"], heldout_balanced_accuracy=held["balanced_accuracy"])
    summaries = [r.summary() for r in recs]
    # Stored in the bundle, so that its report can be made again later (`eegtransfer report`).
    patient.adaptation.calibration.update(calibration_facts(
        patient, X, labels, meta, cal, held=held, recordings=summaries, population=meta_json,
        population_path=population))
    return CalibrationResult(patient, held, selection, int(cal.sum()), int((~cal).sum()),
                             sum(r.n_bad_dropped for r in recs), facts["calibration_minutes"],
                             facts["interpolated"], summaries, warnings, round(time.perf_counter() - t0, 3))
