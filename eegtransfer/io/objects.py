"""MNE objects given in Python (``Raw``, ``Epochs``) to recipe-preprocessed trials.

:func:`trials_from_mne` is what :meth:`eegtransfer.bundle.Bundle.predict`
and friends call: a ``Raw`` goes through :func:`load_recording` exactly as a
file does (its events or annotations, else consecutive windows); ``Epochs``
get the same channel mapping and the recipe's filters applied per epoch.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EEGTransferError
from ..preprocessing import Recipe, standardize
from .channels import conform_channels
from .events import has_events
from .recordings import Recording, load_recording

if TYPE_CHECKING:  # pragma: no cover
    import mne


def trials_from_mne(data: Any, recipe: Recipe, *, classes: list[str] | None = None,
                    event_id: dict[str, str] | None = None, default_id: dict[str, int] | None = None,
                    interpolate_missing: bool | list[str] = False) -> Recording:
    """Cut and preprocess an ``mne.io.Raw`` or ``mne.Epochs`` with ``recipe``.

    Parameters
    ----------
    data : mne.io.Raw | mne.Epochs
        A ``Raw`` is cut at its events (annotations naming a class, a stim
        channel whose codes ``event_id``/``default_id`` name) the way
        :func:`load_recording` cuts a file, or into consecutive windows when
        it holds no event at all (``meta["label"]`` is then ``""``).
        ``Epochs`` must cover the recipe's window ``[tmin, tmax)`` around
        each event; their labels are their event names when those are classes.
    recipe : Recipe
    classes : list of str | None
        The model's classes.
    event_id, default_id
        Names for event codes, see :func:`~eegtransfer.io.events.find_events`.
    interpolate_missing : bool | list of str
        See :func:`~eegtransfer.io.channels.conform_channels`.

    Returns
    -------
    recording : Recording
        ``X`` of shape (n_trials, n_chans, n_times); ``path`` is ``None``.
    """
    import mne

    if isinstance(data, mne.io.BaseRaw):
        windows = not has_events(data)
        return load_recording(None, recipe, raw=data, classes=classes, event_id=event_id,
                              default_id=default_id, windows=windows,
                              interpolate_missing=interpolate_missing)
    if isinstance(data, mne.BaseEpochs):
        return _from_epochs(data, recipe, classes=classes, interpolate_missing=interpolate_missing)
    raise EEGTransferError(f"expected an mne.io.Raw, mne.Epochs or an array of trials, got {type(data).__name__}")


def _from_epochs(epochs: mne.BaseEpochs, recipe: Recipe, *, classes: list[str] | None,
                 interpolate_missing: bool | list[str]) -> Recording:
    """The recipe applied to each epoch: channels, reference, notch, band-pass, resampling, window."""
    import mne
    import pandas as pd

    source = "Epochs"
    end = recipe.tmin + (recipe.n_times - 1) / recipe.sfreq
    if epochs.tmin > recipe.tmin + 1e-9 or epochs.times[-1] < end - 1e-9:
        raise EEGTransferError(
            f"{source}: they span [{epochs.tmin:g}, {epochs.times[-1]:g}] s around each event but the "
            f"recipe's window is [{recipe.tmin:g}, {recipe.tmax:g}) s; make Epochs with tmin <= "
            f"{recipe.tmin:g} and tmax >= {recipe.tmax:g} (a second more on each side spares the filters' edges)")
    if epochs.info["sfreq"] < recipe.sfreq:
        raise EEGTransferError(f"{source}: sampling rate {epochs.info['sfreq']:g} Hz is below the model's "
                               f"{recipe.sfreq:g} Hz")
    ep, chans = conform_channels(epochs, recipe.channels, interpolate_missing=interpolate_missing, source=source)
    arr = ep.get_data(copy=True)
    if not np.all(np.isfinite(arr)):
        raise EEGTransferError(f"{source}: NaN or infinite samples")
    sfreq = float(ep.info["sfreq"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # filter longer than a short epoch: said in the docstring
        arr = _filter(arr, sfreq, recipe, ep.info)
        filtered = mne.EpochsArray(arr, ep.info, events=ep.events, tmin=ep.tmin, verbose="error")
        if not np.isclose(sfreq, recipe.sfreq):
            filtered.resample(recipe.sfreq, verbose="error")
    start = int(np.argmin(np.abs(filtered.times - recipe.tmin)))
    X = filtered.get_data(copy=False)[:, :, start:start + recipe.n_times]
    if X.shape[-1] != recipe.n_times:
        raise EEGTransferError(f"{source}: after resampling, the epochs hold {X.shape[-1]} samples of the "
                               f"recipe's window, not {recipe.n_times}; make them longer")
    X = standardize(X * recipe.scale, recipe.standardize)
    names = {int(v): k for k, v in epochs.event_id.items()}
    labels = [names.get(int(c), "") for c in epochs.events[:, 2]]
    labels = [lab if classes is None or lab in classes else "" for lab in labels]
    meta = pd.DataFrame({"subject": "patient", "session": "0", "run": "0",
                         "onset": epochs.events[:, 0] / float(epochs.info["sfreq"]), "label": labels,
                         "recording_seconds": np.nan})
    return Recording(X=X.astype(np.float32), meta=meta, path=None, sha256="", channels=chans,
                     sfreq=float(epochs.info["sfreq"]), events_from="epochs", event_id=dict(epochs.event_id))


def _filter(arr: np.ndarray, sfreq: float, recipe: Recipe, info: Any) -> np.ndarray:
    """Reference, notch and band-pass of ``arr`` (n_epochs, n_chans, n_times), as prepare_raw does."""
    import mne

    if recipe.reference is not None:
        ref = recipe.channels if recipe.reference == "average" else list(recipe.reference)
        idx = [recipe.channels.index(c) for c in ref]
        arr = arr - arr[:, idx].mean(axis=1, keepdims=True)
    notch = [f for f in recipe.notch if f < sfreq / 2]
    if notch:
        arr = mne.filter.notch_filter(arr, sfreq, notch, verbose="error")
    if recipe.l_freq is not None or recipe.h_freq is not None:
        arr = mne.filter.filter_data(arr, sfreq, recipe.l_freq, recipe.h_freq, verbose="error")
    return arr
