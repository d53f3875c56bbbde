"""The one evaluation protocol: which trials calibrate, which test, for every method alike.

For a target subject (:func:`split_target`):

- **test**: every run after the subject's first run, fixed per subject and shared by every
  method and every calibration amount;
- **calibration**: the first trials of the first run in recording order
  (:func:`calibration_window`), by minutes (trials that have *ended* within them), by a
  number of trials, or by a fraction of the run;
- **missing classes** (one policy for every method): a chronological window that lacks a
  class (Kalunga2016's runs open with about a minute of ``rest``) **grows** to the first trial
  at which every class has at least ``min_per_class`` trials; the minutes actually used are
  reported (``minutes_used``), never the minutes asked for;
- **population**: every other subject, with the dataset's known duplicated recordings
  removed on load (:func:`eegtransfer.io.moabb.deduplicated`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import EEGTransferError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

MIN_PER_CLASS = 2


@dataclass(frozen=True)
class CalibrationWindow:
    """The calibration trials of one target and what they amount to.

    Attributes
    ----------
    mask : ndarray of bool, shape (n_trials,)
        Calibration trials among the rows of the ``meta`` given.
    requested : str
        What was asked for (``"2 min"``, ``"24 trials"``, ``"50% of the run"``).
    minutes_used : float
        Minutes from the start of the recording to the end of the last calibration trial.
    n_trials : int
    grown : bool
        Whether the window grew past the request so that every class has enough trials.
    """

    mask: np.ndarray
    requested: str
    minutes_used: float
    n_trials: int
    grown: bool

    def describe(self) -> str:
        """One sentence: the trials and minutes used, and why they differ from the request."""
        text = f"{self.n_trials} trials, the first {self.minutes_used:.2f} min"
        return text + (f" (grown from {self.requested} so that every class has "
                       f"{MIN_PER_CLASS} trials)" if self.grown else "")


def _run_keys(meta: pd.DataFrame) -> list[tuple[str, str, str]]:
    return list(zip(meta["subject"].astype(str), meta["session"].astype(str), meta["run"].astype(str)))


def recordings(meta: pd.DataFrame) -> np.ndarray:
    """The recording (run) of each trial, as ``"subject/session/run"``.

    Parameters
    ----------
    meta : pandas.DataFrame
        One row per trial with ``subject``, ``session`` and ``run``.

    Returns
    -------
    runs : ndarray of str, shape (n_trials,)
    """
    return np.asarray(["/".join(k) for k in _run_keys(meta)], dtype=str)


def split_target(meta: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The first run and the later runs of one subject, as boolean masks over ``meta``.

    Runs are ordered as they appear in ``meta`` (recording order). A subject with one
    run cannot be tested this way and is an error.
    """
    keys = _run_keys(meta)
    runs = list(dict.fromkeys(keys))
    if len({k[0] for k in runs}) != 1:
        raise EEGTransferError(f"split_target needs the trials of one subject, got subjects "
                               f"{sorted({k[0] for k in runs})}")
    if len(runs) < 2:
        raise EEGTransferError(f"subject {runs[0][0]} has one run; the protocol tests on later runs")
    first = np.array([k == runs[0] for k in keys])
    return first, ~first


def calibration_window(
    meta: pd.DataFrame,
    *,
    minutes: float | None = None,
    trials: int | None = None,
    fraction: float | None = None,
    trial_seconds: float,
    classes: list[str] | None = None,
    min_per_class: int = MIN_PER_CLASS,
    grow: bool = True,
) -> CalibrationWindow:
    """The first trials of one recording, chronologically, grown until every class is there.

    Parameters
    ----------
    meta : pandas.DataFrame
        Trials of **one** recording (``onset`` in seconds, ``label``), e.g. a first run.
    minutes, trials, fraction : float | int | None
        Exactly one: the trials that have ended within the first ``minutes``, the first
        ``trials`` trials, or the first ``ceil(fraction * n)`` trials.
    trial_seconds : float
        Trial length in seconds (``recipe.tmax``), to tell when a trial has ended.
    classes : list of str | None
        Classes that calibration must hold (default: every label in ``meta``).
    min_per_class : int
        Trials of each class that a supervised method needs.
    grow : bool
        Grow a window that lacks classes (the protocol's policy); ``False`` raises instead.

    Returns
    -------
    window : CalibrationWindow
    """
    given = [v is not None for v in (minutes, trials, fraction)]
    if sum(given) != 1:
        raise EEGTransferError("give exactly one of minutes=, trials= or fraction=")
    if trial_seconds <= 0:
        raise EEGTransferError(f"trial_seconds= must be > 0, got {trial_seconds}")
    onset = meta["onset"].to_numpy(dtype=float)
    order = np.argsort(onset, kind="stable")
    ends = onset[order] + trial_seconds
    labels = meta["label"].astype(str).to_numpy()[order]
    if minutes is not None:
        _check_positive("minutes", minutes)
        k, requested = int(np.searchsorted(ends, minutes * 60 + 1e-9, side="right")), f"{minutes:g} min"
    elif trials is not None:
        _check_positive("trials", trials)
        k, requested = int(trials), f"{trials} trials"
    else:
        if not 0 < fraction <= 1:
            raise EEGTransferError(f"fraction= must be in (0, 1], got {fraction}")
        k, requested = math.ceil(fraction * len(onset)), f"{100 * fraction:g}% of the recording"
    needed = _first_complete(labels, classes or sorted(set(labels.tolist())), min_per_class)
    grown = needed > k
    if grown and not grow:
        raise EEGTransferError(f"the first {requested} lack classes: every class needs {min_per_class} "
                               f"trials, which takes the first {needed} trials")
    k = min(max(k, needed), len(onset))
    mask = np.zeros(len(onset), bool)
    mask[order[:k]] = True
    used = float(ends[k - 1]) / 60 if k else 0.0
    return CalibrationWindow(mask, requested, round(used, 4), int(k), bool(grown))


def target_window(meta: pd.DataFrame, first: np.ndarray, amount: float | str, *,
                  trial_seconds: float) -> tuple[CalibrationWindow, np.ndarray]:
    """The calibration window of one target, as a mask over all of its trials.

    Parameters
    ----------
    meta : pandas.DataFrame
        The target's trials; ``first`` masks its first run (:func:`split_target`).
    amount : float | "run"
        Minutes of the first run, or the whole run.

    Returns
    -------
    window : CalibrationWindow
        Over the first run's trials.
    mask : ndarray of bool, shape (n_trials,)
        The same window over all of ``meta``.
    """
    kw = {"fraction": 1.0} if str(amount) == "run" else {"minutes": float(amount)}
    w = calibration_window(meta[first], trial_seconds=trial_seconds, **kw)
    mask = np.zeros(len(meta), bool)
    mask[np.flatnonzero(first)[w.mask]] = True
    return w, mask


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise EEGTransferError(f"{name}= must be > 0, got {value}")


def _first_complete(labels: np.ndarray, classes: list[str], min_per_class: int) -> int:
    """The number of leading trials at which every class has ``min_per_class`` of them."""
    need = 0
    for c in classes:
        where = np.flatnonzero(labels == c)
        if len(where) < min_per_class:
            raise EEGTransferError(f"class {c!r} has {len(where)} trial(s) in the whole recording; "
                                   f"calibration needs {min_per_class}")
        need = max(need, int(where[min_per_class - 1]) + 1)
    return need
