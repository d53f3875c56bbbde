"""Which trials calibrate: recording time, chronological selection, class counts.

A patient's recordings are laid end to end in the order given
(:func:`timeline`); calibration is always their **first** trials
(:func:`select_calibration`), so later data is the test, and early stopping
validates on the latest trials of each class (:func:`chronological_split`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import EEGTransferError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..bundle import Bundle


def timeline(meta: pd.DataFrame) -> np.ndarray:
    """Seconds from the start of the first recording, recordings in the order given.

    Each recording's trials are offset by the summed length of the recordings
    before it (column ``recording_seconds``; without it, by the last onset).
    """
    keys = list(zip(meta["subject"].astype(str), meta["session"].astype(str), meta["run"].astype(str)))
    offsets: dict[tuple[str, str, str], float] = {}
    total = 0.0
    onset = meta["onset"].to_numpy(dtype=float)
    has_len = "recording_seconds" in meta.columns
    for i, key in enumerate(keys):
        if key not in offsets:
            offsets[key] = total
            rows = [j for j, k in enumerate(keys) if k == key]
            total += float(meta["recording_seconds"].iloc[i]) if has_len else float(onset[rows].max()) + 1.0
    return np.array([offsets[k] for k in keys]) + onset


def select_calibration(
    meta: pd.DataFrame,
    *,
    minutes: float | None = None,
    trials: int | None = None,
    per_class: bool = False,
    trial_seconds: float = 0.0,
    source: str = "recording",
) -> np.ndarray:
    """Boolean mask of calibration trials, taken in recording-time order.

    Parameters
    ----------
    meta : pandas.DataFrame
        Trial metadata (``onset``, ``label``, ``subject``, ``session``, ``run``).
    minutes : float | None
        Keep trials that end within the first ``minutes`` of recording
        (with ``per_class``: each class's first trials whose summed length
        ``trial_seconds`` fits in ``minutes``).
    trials : int | None
        Keep the first ``trials`` trials (with ``per_class``: per class).
    trial_seconds : float
        Trial length (``recipe.tmax``), to test whether a trial has ended;
        required (> 0) with ``minutes`` and ``per_class``.

    Returns
    -------
    mask : ndarray of bool, shape (n_trials,)
    """
    if (minutes is None) == (trials is None):
        raise EEGTransferError("give exactly one of minutes= or trials= for the calibration set")
    t = timeline(meta)
    order = np.argsort(t, kind="stable")
    mask = np.zeros(len(meta), bool)
    labels = meta["label"].astype(str).to_numpy()
    if minutes is not None:
        if minutes <= 0:
            raise EEGTransferError(f"minutes= must be > 0, got {minutes}")
        total = timeline_length(meta)
        if minutes * 60 > total + 1e-6:
            raise EEGTransferError(
                f"minutes={minutes:g} is longer than the {source} ({total / 60:.2f} min); "
                "nothing would be left to test"
            )
        if per_class:
            if not trial_seconds or trial_seconds <= 0:
                # Without a trial length every trial "fits" in any number of minutes.
                raise EEGTransferError(
                    f"minutes= with per_class=True needs the trial length: pass trial_seconds= > 0 "
                    f"(e.g. recipe.tmax), got trial_seconds={trial_seconds!r}"
                )
            length = trial_seconds
            for c in np.unique(labels):
                idx = order[labels[order] == c]
                mask[idx[: int(minutes * 60 // length)]] = True
        else:
            mask = t + trial_seconds <= minutes * 60
    else:
        if trials <= 0:
            raise EEGTransferError(f"trials= must be > 0, got {trials}")
        if per_class:
            for c in np.unique(labels):
                mask[order[labels[order] == c][:trials]] = True
        else:
            if trials > len(meta):
                raise EEGTransferError(f"trials={trials} is more than the {len(meta)} trials in the {source}")
            mask[order[:trials]] = True
    return mask


def timeline_length(meta: pd.DataFrame) -> float:
    """Total seconds of the recordings in ``meta``."""
    if "recording_seconds" in meta.columns:
        runs = meta.drop_duplicates(["subject", "session", "run"])
        return float(runs["recording_seconds"].sum())
    return float(timeline(meta).max())


def check_class_counts(labels: np.ndarray, *, minimum: int = 2, classes: list[str] | None = None,
                       what: str = "calibration set") -> None:
    """Raise, naming the counts per class, when a class has fewer than ``minimum`` trials.

    ``classes`` are the classes that must all be present (the model's, when
    its head is kept: a class with no calibration trial would otherwise go
    unchecked); ``None`` checks the classes found in ``labels``.
    """
    labels = np.asarray(labels).astype(str)
    names = list(classes) if classes is not None else sorted(set(labels.tolist()))
    counts = {c: int((labels == c).sum()) for c in names}
    if len(labels) == 0:
        raise EEGTransferError(f"the {what} is empty; give more minutes= or trials=")
    low = {c: n for c, n in counts.items() if n < minimum}
    if low:
        absent = [c for c, n in counts.items() if n == 0]
        hint = (f" Class(es) {absent} have no trial: the model's head needs every one of its "
                "classes (labels outside them train a new head instead)." if absent else "")
        raise EEGTransferError(
            f"the {what} needs at least {minimum} trials of every class; counts per class: {counts}. "
            "Give more minutes= or trials=, or per_class=True." + hint
        )


def required_classes(bundle: Bundle, labels: np.ndarray) -> list[str] | None:
    """The classes calibration must cover: all of the model's when its head is kept.

    ``None`` when ``labels`` hold a class the model lacks: a new head is then
    trained for exactly the classes found.
    """
    found = set(np.asarray(labels).astype(str).tolist())
    return None if found - set(bundle.classes) else list(bundle.classes)


def chronological_split(labels: np.ndarray, val_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Split calibration trials (already in time order) into fit and validation.

    The **last** ``val_fraction`` of each class's trials go to validation, so
    the model is always validated on later data and every class is seen in
    both parts (each class needs 2 trials).
    """
    labels = np.asarray(labels).astype(str)
    val = np.zeros(len(labels), bool)
    if val_fraction <= 0:
        return ~val, val
    for c in np.unique(labels):
        idx = np.where(labels == c)[0]
        n_val = int(np.clip(round(len(idx) * val_fraction), 1, len(idx) - 1)) if len(idx) >= 2 else 0
        if n_val:
            val[idx[-n_val:]] = True
    return ~val, val
