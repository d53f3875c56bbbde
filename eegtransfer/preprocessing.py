"""The preprocessing recipe: one MNE pipeline for population and patient alike.

A :class:`Recipe` is plain data (it round-trips through JSON and is stored in
every bundle). :func:`epochs_from_raw` applies it to an MNE ``Raw`` plus its
events and returns float32 trials with per-trial metadata. The same function
serves MOABB datasets (see :mod:`eegtransfer.io.moabb`) and a patient's own
recording (see :mod:`eegtransfer.io.recordings`), so both are treated identically.

Order of operations, all in MNE: pick and order channels -> reference ->
notch -> band-pass -> resample (events resampled with the signal) -> epoch
``[tmin, tmax)`` -> volts to microvolts -> per-trial, per-channel
standardisation.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import EEGTransferError

if TYPE_CHECKING:  # pragma: no cover
    import mne
    import pandas as pd

logger = logging.getLogger("eegtransfer")

META_COLUMNS = ("subject", "session", "run", "onset", "label", "recording_seconds")


@dataclass
class Recipe:
    """How raw EEG becomes model input.

    Parameters
    ----------
    channels : list of str
        EEG channel names, in the order the model expects.
    sfreq : float
        Sampling rate of the model input, in Hz.
    tmin, tmax : float
        Epoch window relative to each event onset, in seconds; the epoch has
        ``round((tmax - tmin) * sfreq)`` samples.
    l_freq, h_freq : float | None
        Band-pass edges in Hz (``None`` disables that edge).
    notch : list of float
        Line-noise frequencies to notch out, in Hz (empty disables).
    reference : str | list of str | None
        ``None`` keeps the recorded reference, ``"average"`` re-references to
        the average of ``channels``, a list re-references to those channels.
    scale : float
        Factor from volts (MNE's unit) to the model's unit; ``1e6`` gives µV.
    standardize : {"trial", None}
        ``"trial"`` z-scores each channel of each trial over time.
    """

    channels: list[str]
    sfreq: float = 128.0
    tmin: float = 1.0
    tmax: float = 5.0
    l_freq: float | None = 4.0
    h_freq: float | None = 45.0
    notch: list[float] = field(default_factory=lambda: [50.0])
    reference: str | list[str] | None = None
    scale: float = 1e6
    standardize: str | None = "trial"

    def __post_init__(self) -> None:
        self.channels = [str(c) for c in self.channels]
        self.notch = [float(f) for f in (self.notch or [])]
        if not self.channels:
            raise EEGTransferError("Recipe.channels is empty: name at least one EEG channel")
        if len(set(self.channels)) != len(self.channels):
            raise EEGTransferError(f"Recipe.channels has duplicates: {self.channels}")
        if self.sfreq <= 0:
            raise EEGTransferError(f"Recipe.sfreq must be > 0 Hz, got {self.sfreq}")
        if self.tmax <= self.tmin:
            raise EEGTransferError(
                f"Recipe window is empty: tmin={self.tmin} s must be < tmax={self.tmax} s"
            )
        if self.h_freq is not None and self.h_freq >= self.sfreq / 2:
            raise EEGTransferError(
                f"Recipe.h_freq={self.h_freq} Hz must be below Nyquist ({self.sfreq / 2} Hz)"
            )
        if self.standardize not in (None, "trial"):
            raise EEGTransferError(
                f"Recipe.standardize must be 'trial' or None, got {self.standardize!r}"
            )

    @property
    def n_times(self) -> int:
        """Samples per epoch."""
        return int(round((self.tmax - self.tmin) * self.sfreq))

    @property
    def n_chans(self) -> int:
        return len(self.channels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """The recipe in one line, for messages: what trials made with it went through."""
        band = f"{self.l_freq}-{self.h_freq} Hz band-pass"
        return (f"{len(self.channels)} channels {', '.join(self.channels)}, {band}"
                + (f", notch {', '.join(f'{f:g}' for f in self.notch)} Hz" if self.notch else "")
                + f", {self.sfreq:g} Hz, window [{self.tmin:g}, {self.tmax:g}) s, x{self.scale:g}"
                + (", z-scored per trial and channel" if self.standardize == "trial" else ""))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise EEGTransferError(
                f"unknown recipe field(s) {unknown}; expected some of {sorted(known)}"
            )
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        return cls.from_dict(json.loads(text))


def prepare_raw(
    raw: mne.io.BaseRaw,
    recipe: Recipe,
    events: np.ndarray | None = None,
    *,
    source: str = "recording",
    verbose: bool | str | None = False,
) -> tuple[mne.io.BaseRaw, np.ndarray | None]:
    """Pick, reference, filter and resample a copy of ``raw``.

    Parameters
    ----------
    raw : mne.io.Raw
        Continuous EEG in volts. Its channel names must already match
        ``recipe.channels`` (see :func:`eegtransfer.io.channels.match_channels`
        for messy names). It is not modified.
    recipe : Recipe
    events : ndarray, shape (n_events, 3) | None
        MNE events in ``raw``'s samples; returned in the new sampling rate.
    source : str
        Name of the file or dataset, used in error messages.

    Returns
    -------
    raw : mne.io.Raw
        The prepared copy, sampled at ``recipe.sfreq``.
    events : ndarray, shape (n_events, 3) | None
    """
    missing = [ch for ch in recipe.channels if ch not in raw.ch_names]
    if missing:
        raise EEGTransferError(
            f"{source}: channel(s) {missing} required by the recipe are missing; "
            f"found {raw.ch_names}"
        )
    if raw.info["sfreq"] < recipe.sfreq:
        raise EEGTransferError(
            f"{source}: sampling rate {raw.info['sfreq']:g} Hz is below the model's "
            f"{recipe.sfreq:g} Hz; upsampling cannot restore the missing band"
        )
    raw = raw.copy().pick(recipe.channels).load_data(verbose=verbose)
    raw.reorder_channels(recipe.channels)
    raw.set_channel_types({ch: "eeg" for ch in recipe.channels}, verbose=verbose)
    data = raw.get_data()
    if not np.all(np.isfinite(data)):
        bad = [recipe.channels[i] for i in np.where(~np.isfinite(data).all(axis=1))[0]]
        raise EEGTransferError(f"{source}: NaN or infinite samples in channel(s) {bad}")
    flat = [recipe.channels[i] for i in np.where(np.ptp(data, axis=1) == 0)[0]]
    if flat:
        raise EEGTransferError(f"{source}: flat channel(s) {flat} (constant signal)")
    if recipe.reference is not None:
        ref = recipe.reference if recipe.reference == "average" else list(recipe.reference)
        raw.set_eeg_reference(ref, projection=False, verbose=verbose)
    nyq = raw.info["sfreq"] / 2
    notch = [f for f in recipe.notch if f < nyq]
    if notch:
        raw.notch_filter(notch, verbose=verbose)
    if recipe.l_freq is not None or recipe.h_freq is not None:
        raw.filter(recipe.l_freq, recipe.h_freq, verbose=verbose)
    if not np.isclose(raw.info["sfreq"], recipe.sfreq):
        if events is not None:
            raw, events = raw.resample(recipe.sfreq, events=events, verbose=verbose)
        else:
            raw.resample(recipe.sfreq, verbose=verbose)
    return raw, events


def epochs_from_raw(
    raw: mne.io.BaseRaw,
    events: np.ndarray,
    event_id: dict[str, int],
    recipe: Recipe,
    *,
    subject: str | int = "patient",
    session: str = "0",
    run: str = "0",
    source: str = "recording",
    verbose: bool | str | None = False,
    reject_bad: bool = True,
    counts: dict[str, int] | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Apply ``recipe`` to a continuous recording and cut labelled trials.

    Parameters
    ----------
    raw : mne.io.Raw
        Continuous EEG in volts, channel names matching ``recipe.channels``.
    events : ndarray, shape (n_events, 3)
        MNE events in ``raw``'s samples (``raw.first_samp`` included, as
        :func:`mne.find_events` returns them).
    event_id : dict of str to int
        Class name to event code; events with other codes are ignored.
    recipe : Recipe
    subject, session, run : str | int
        Stored in the metadata of each trial.
    source : str
        Name of the file, used in error messages.
    reject_bad : bool
        Drop trials whose window overlaps an annotation marked bad
        (description starting with ``BAD``, MNE's convention), with a
        warning. ``False`` keeps them.
    counts : dict | None
        If given, filled with ``n_bad_dropped`` (trials dropped for a bad
        annotation) and ``n_outside_dropped`` (trials past either end).

    Returns
    -------
    X : ndarray of float32, shape (n_trials, n_chans, n_times)
        Trials in ``recipe`` units (µV by default), standardised if asked.
    meta : pandas.DataFrame, n_trials rows
        Columns ``subject, session, run, onset, label, recording_seconds``;
        ``onset`` is the event time in seconds from the start of the
        recording, ``recording_seconds`` the recording's length.
    """
    import mne
    import pandas as pd

    codes = set(int(c) for c in event_id.values())
    events = np.asarray(events, dtype=int).reshape(-1, 3)
    keep = np.isin(events[:, 2], list(codes))
    if not keep.any():
        found = sorted(set(events[:, 2].tolist()))
        raise EEGTransferError(
            f"{source}: no event matches the classes {event_id}; event codes found: {found}"
        )
    events = events[keep]
    onsets = (events[:, 0] - raw.first_samp) / raw.info["sfreq"]
    prepared, ev = prepare_raw(raw, recipe, events, source=source, verbose=verbose)
    n_times = recipe.n_times
    tmax = recipe.tmin + (n_times - 1) / recipe.sfreq
    used_id = {k: int(v) for k, v in event_id.items() if int(v) in set(ev[:, 2].tolist())}
    epochs = mne.Epochs(
        prepared, ev, event_id=used_id, tmin=recipe.tmin, tmax=tmax, baseline=None,
        preload=True, reject_by_annotation=reject_bad, on_missing="ignore", verbose=verbose,
    )
    # MNE drops epochs that run past either end ('NO_DATA', 'TOO_SHORT') and, with
    # reject_by_annotation, those overlapping a BAD annotation (its description).
    kept = np.array([i for i, log in enumerate(epochs.drop_log) if not log], dtype=int)
    n_outside = sum(1 for log in epochs.drop_log if set(log) & {"NO_DATA", "TOO_SHORT"})
    n_bad = len(ev) - len(kept) - n_outside
    if counts is not None:
        counts.update(n_bad_dropped=int(n_bad), n_outside_dropped=int(n_outside))
    if len(kept) == 0:
        raise EEGTransferError(
            f"{source}: every trial window [{recipe.tmin}, {recipe.tmax}] s runs past "
            f"the recording ({raw.times[-1]:.1f} s)"
            + (f" or overlaps a BAD annotation ({n_bad} of {len(ev)} trials)" if n_bad else "")
        )
    if n_outside:
        logger.warning("%s: %d trial(s) run past the recording and were dropped", source, n_outside)
    if n_bad:
        logger.warning("%s: %d trial(s) overlap a BAD annotation and were dropped", source, n_bad)
    X = epochs.get_data(copy=False)[:, :, :n_times]
    X = standardize(X * recipe.scale, recipe.standardize)
    code_to_name = {int(v): k for k, v in event_id.items()}
    meta = pd.DataFrame({
        "subject": str(subject),
        "session": str(session),
        "run": str(run),
        "onset": onsets[kept].astype(float),
        "label": [code_to_name[int(c)] for c in events[kept, 2]],
        "recording_seconds": raw.n_times / raw.info["sfreq"],
    })
    return X.astype(np.float32), meta


def standardize(X: np.ndarray, how: str | None = "trial") -> np.ndarray:
    """Z-score each channel of each trial over time (``how="trial"``).

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_chans, n_times)
    how : {"trial", None}

    Returns
    -------
    X : ndarray, same shape, float32
    """
    X = np.asarray(X, dtype=np.float64)
    if how == "trial":
        X = X - X.mean(axis=-1, keepdims=True)
        X = X / np.maximum(X.std(axis=-1, keepdims=True), 1e-8)
    return X.astype(np.float32)
