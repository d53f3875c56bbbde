"""One recording, start to finish: a file in, recipe-preprocessed labelled trials out.

:func:`load_recording` chains the steps of :mod:`eegtransfer.io`:
:func:`~eegtransfer.io.reading.read_raw` (any file MNE reads),
:func:`~eegtransfer.io.events.find_events` or
:func:`~eegtransfer.io.events.window_events` (where the trials are),
:func:`~eegtransfer.io.channels.conform_channels` (the model's channels, in
its order) and :func:`eegtransfer.preprocessing.epochs_from_raw` (the
recipe), and returns a :class:`Recording` that says what each step did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..bundle import sha256_file
from ..errors import EEGTransferError, one_line
from ..logs import verbose as verbose_decorator
from ..preprocessing import Recipe, epochs_from_raw
from .channels import ChannelReport, conform_channels
from .events import find_events, window_events
from .reading import read_raw

if TYPE_CHECKING:  # pragma: no cover
    import mne
    import pandas as pd

logger = logging.getLogger("eegtransfer")


@dataclass
class Recording:
    """Trials cut from one file, and what it took to get them.

    Attributes
    ----------
    X : ndarray of float32, shape (n_trials, n_chans, n_times)
    meta : pandas.DataFrame
        One row per trial (see :func:`~eegtransfer.preprocessing.epochs_from_raw`).
    path : Path | None
        ``None`` for an MNE object given in Python.
    sha256 : str
        ``""`` for an MNE object given in Python.
    channels : ChannelReport
    sfreq : float
        The file's sampling rate (before resampling to the recipe's).
    events_from : str
    event_id : dict of str to int
    n_bad_dropped : int
        Trials dropped because they overlap a ``BAD_*`` annotation.
    """

    X: np.ndarray
    meta: pd.DataFrame
    path: Path | None
    sha256: str
    channels: ChannelReport
    sfreq: float
    events_from: str
    event_id: dict[str, int]
    n_bad_dropped: int = 0

    def summary(self) -> dict[str, Any]:
        """Plain data for a report or JSON: file, trials, sampling rate, channel changes."""
        return {"path": str(self.path) if self.path else None, "sha256": self.sha256, "n_trials": int(len(self.X)),
                "n_bad_dropped": self.n_bad_dropped,
                "sfreq": self.sfreq, "events_from": self.events_from,
                "renamed": self.channels.renamed, "dropped": self.channels.dropped,
                "interpolated": self.channels.interpolated,
                "minutes": round(float(self.meta["recording_seconds"].iloc[0]) / 60, 3)
                if len(self.meta) else None}


@verbose_decorator
def load_recording(
    path: str | Path | None,
    recipe: Recipe,
    *,
    classes: list[str] | None = None,
    events: str | Path | None = None,
    event_id: dict[str, str] | None = None,
    default_id: dict[str, int] | None = None,
    label: str | None = None,
    windows: bool = False,
    stride: float | None = None,
    interpolate_missing: bool | list[str] = False,
    encoding: str | None = None,
    subject: str = "patient",
    session: str = "0",
    run: str = "0",
    raw: mne.io.BaseRaw | None = None,
    verbose: bool | str | int | None = None,
) -> Recording:
    """Read one file and cut it into recipe-preprocessed, labelled trials.

    Parameters
    ----------
    path : str | Path | None
        Any file :func:`read_raw` reads; ``None`` with ``raw``, an MNE object
        made in Python (no file, no SHA-256).
    recipe : Recipe
        The model's recipe (channels, sampling rate, window, filters).
    classes, events, event_id, default_id
        See :func:`find_events`.
    label : str | None
        The whole file is this one class: it is cut into consecutive windows
        (:func:`window_events`) and ``events`` is ignored.
    windows : bool
        Cut into consecutive windows without a label (``label`` column
        empty), e.g. to predict on an unlabelled recording.
    stride : float | None
        With ``label`` or ``windows``: seconds between window starts; shorter than the
        window gives overlapping trials (``None``: the window length, no overlap).
    encoding : str | None
        EDF+ annotation encoding.
    subject, session, run : str
        Stored in the trials' metadata.
    raw : mne.io.Raw | None
        ``path`` already read with :func:`read_raw` (saves reading it twice).
    interpolate_missing : bool | list of str
        ``True``: interpolate model channels the file lacks instead of
        refusing; a list: exactly these channels (see
        :func:`~eegtransfer.io.channels.conform_channels`).
    verbose : bool | str | int | None
        Log level for this call, as in MNE.

    Returns
    -------
    recording : Recording
    """
    if path is None and raw is None:
        raise EEGTransferError("load_recording needs a path or raw=")
    path = None if path is None else Path(path)
    source = str(path) if path is not None else _raw_source(raw)
    if raw is None:
        raw = read_raw(path, encoding=encoding)
    try:
        return _load(raw, path, recipe, classes=classes, events=events, event_id=event_id,
                     default_id=default_id, label=label, windows=windows, stride=stride,
                     interpolate_missing=interpolate_missing, subject=subject, session=session, run=run)
    except EEGTransferError:
        raise
    except (ValueError, RuntimeError, IndexError, KeyError, OSError) as err:
        # MNE's own complaints (odd annotations, a recording too short to filter ...) name no file.
        raise EEGTransferError(f"{source}: cannot prepare the recording ({type(err).__name__}: "
                               f"{one_line(err)})") from None


def _raw_source(raw: mne.io.BaseRaw) -> str:
    """How messages name a Raw given in Python: its file when it has one."""
    files = [f for f in (getattr(raw, "filenames", None) or []) if f]
    return f"Raw ({Path(files[0]).name})" if files else "Raw"


def _load(raw: mne.io.BaseRaw, path: Path | None, recipe: Recipe, *, classes: list[str] | None,
          events: str | Path | None, event_id: dict[str, str] | None,
          default_id: dict[str, int] | None, label: str | None, windows: bool, stride: float | None,
          interpolate_missing: bool | list[str], subject: str, session: str, run: str) -> Recording:
    """:func:`load_recording` on a ``raw`` already read; MNE's own errors still to be named."""
    source = str(path) if path is not None else _raw_source(raw)
    if label is not None or windows:
        ev = window_events(raw, recipe, stride=stride)
        if len(ev) == 0:
            raise EEGTransferError(
                f"{source}: the recording ({raw.n_times / raw.info['sfreq']:.1f} s) is shorter "
                f"than one trial window ({recipe.tmax:g} s)"
            )
        name = str(label) if label is not None else "?"
        ids, how = {name: 1}, "consecutive windows" if stride is None else f"windows every {stride:g} s"
    else:
        ev, ids, how = find_events(raw, events=events, classes=classes, event_id=event_id,
                                   default_id=default_id, source=source)
    sfreq = float(raw.info["sfreq"])
    conformed, chans = conform_channels(raw, recipe.channels, interpolate_missing=interpolate_missing,
                                        source=source)
    counts: dict[str, int] = {}
    X, meta = epochs_from_raw(conformed, ev, ids, recipe, subject=subject, session=session, run=run,
                              source=source, counts=counts)
    if windows and label is None:
        meta["label"] = ""
    logger.debug("%s: %d trials from %s; channels renamed %s, dropped %s, interpolated %s",
                 source, len(X), how, chans.renamed, chans.dropped, chans.interpolated)
    return Recording(X=X, meta=meta, path=path, sha256=sha256_file(path) if path else "", channels=chans,
                     sfreq=sfreq, events_from=how, event_id=ids, n_bad_dropped=counts["n_bad_dropped"])
