"""MOABB datasets in, recipe-preprocessed trials out, offline-safe.

:func:`get_dataset` names a dataset, :func:`default_recipe` gives its
channels and trial window, :func:`load_raws` reads its runs as MNE ``Raw``
and :func:`load_dataset` turns them into trials, with the same event search
(:func:`eegtransfer.io.events.find_events`) and, when asked, the same
channel matching (:func:`eegtransfer.io.channels.conform_channels`) as a
patient's file.

MOABB resolves its cache from ``MNE_DATA`` (or ``MNE_DATASETS_<SIGN>_PATH``).
When a file is missing it downloads it; with no network that fails, and we
turn the failure into one message that names the folder that was searched.

Recordings that a dataset publishes twice (:data:`KNOWN_DUPLICATES`) are
removed on load, by :func:`load_dataset` and, through :func:`deduplicated`,
for MOABB's own paradigms and evaluations.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataNotFoundError, EEGTransferError, close_names
from ..logs import verbose as verbose_decorator
from ..preprocessing import Recipe, epochs_from_raw
from .channels import conform_channels
from .events import find_events

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

logger = logging.getLogger("eegtransfer")

# Recordings that the public release files under two subjects: (copy, original) keys of
# (subject, session, run). The copy is removed on load, always (a dataset-level rule, so a
# population never holds a copy of its target's run, in our loaders and in MOABB runs alike).
# Kalunga2016: subject 7 run 1 == subject 3 run 2, byte for byte (see shared/data/README.md).
# The copy under subject 7 goes, because subject 7 keeps two runs without it and subject 3
# would keep only one.
KNOWN_DUPLICATES: dict[str, list[tuple[tuple[str, str, str], tuple[str, str, str]]]] = {
    "Kalunga2016": [(("7", "0", "0"), ("3", "0", "1"))],
}


def duplicates_note(dataset: str) -> str:
    """One sentence on the known duplicated recordings of ``dataset`` and how they are handled."""
    pairs = KNOWN_DUPLICATES.get(dataset, [])
    return "; ".join(f"subject {c[0]} session {c[1]} run {c[2]} is a copy of subject {o[0]} session "
                     f"{o[1]} run {o[2]} and is removed on load" for c, o in pairs) or "none known"


def deduplicated(dataset: Any) -> Any:
    """``dataset`` with its known duplicated recordings removed, for any MOABB consumer.

    Returns the dataset itself when none are known; otherwise an instance of a
    subclass whose ``_get_single_subject_data`` drops the copies, so MOABB
    evaluations and paradigms see the same clean data as :func:`load_dataset`.
    """
    cls = type(dataset)
    copies = [c for c, _ in KNOWN_DUPLICATES.get(cls.__name__, [])]
    if not copies or getattr(dataset, "_eegtransfer_deduplicated", False):
        return dataset

    def _get_single_subject_data(self: Any, subject: int) -> dict:
        data = super(clean_cls, self)._get_single_subject_data(subject)
        for subj, session, run in copies:
            if str(subject) == subj and run in data.get(session, {}):
                logger.info("%s subject %s session %s run %s: removed, a copy of another subject's "
                            "run", cls.__name__, subj, session, run)
                del data[session][run]
        return data

    clean_cls = type(cls.__name__, (cls,), {"_get_single_subject_data": _get_single_subject_data,
                                             "_eegtransfer_deduplicated": True,
                                             "__module__": cls.__module__})
    clean = clean_cls.__new__(clean_cls)
    clean.__dict__.update(dataset.__dict__)
    return clean


def mne_data_path() -> Path:
    """The folder MOABB reads and downloads into (``MNE_DATA``, else ``~/mne_data``)."""
    import mne

    path = os.environ.get("MNE_DATA") or mne.get_config("MNE_DATA")
    return Path(path) if path else Path.home() / "mne_data"


def get_dataset(name: str) -> Any:
    """Instantiate a MOABB dataset by class name (``"Kalunga2016"``, ``"FakeDataset"``)."""
    os.environ.setdefault("MOABB_DOWNLOAD_PROVIDER", "upstream")
    import moabb.datasets as mdatasets

    cls = getattr(mdatasets, name, None)
    if cls is None or not isinstance(cls, type):
        known = sorted(n for n in getattr(mdatasets, "__all__", dir(mdatasets))
                       if n[:1].isupper() and not n.startswith("Base"))
        close = close_names(name, known)
        # A close name is the answer; the whole list only when there is none.
        raise EEGTransferError(
            f"unknown dataset {name!r}; did you mean {close}?" if close else
            f"unknown dataset {name!r}; MOABB datasets include: {', '.join(known[:40])}"
            + (" ..." if len(known) > 40 else "")
        )
    return cls()


def dataset_provenance(dataset: Any) -> dict[str, Any]:
    """What a population pretrained on ``dataset`` records: its name, paradigm and event codes.

    The event codes let a patient file's stim channel be read without naming them again.
    """
    return {"dataset": dataset_name(dataset), "paradigm": getattr(dataset, "paradigm", None),
            "event_id": {str(k): int(v) for k, v in dataset.event_id.items()}}


def dataset_name(dataset: Any) -> str:
    """The class name of a MOABB dataset (``"Kalunga2016"``), as messages and provenance use it."""
    return type(dataset).__name__


def check_subjects(dataset: Any, subjects: list[int]) -> list[int]:
    """Return ``subjects`` as ints, or raise naming the ones not in the dataset."""
    subjects = [int(s) for s in subjects]
    unknown = [s for s in subjects if s not in dataset.subject_list]
    if unknown:
        raise EEGTransferError(
            f"subject(s) {unknown} not in {dataset_name(dataset)}; "
            f"available: {list(dataset.subject_list)}"
        )
    return subjects


def default_recipe(dataset: Any, **overrides: Any) -> Recipe:
    """A recipe for ``dataset``: its EEG channels, and its trial interval."""
    chans = getattr(dataset, "channels", None)
    kw: dict[str, Any] = {}
    if dataset_name(dataset) == "Kalunga2016":
        kw = dict(channels=["Oz", "O1", "O2", "PO3", "POz", "PO7", "PO8", "PO4"],
                  tmin=1.0, tmax=5.0, l_freq=4.0, h_freq=45.0, sfreq=128.0)
    else:
        lo, hi = dataset.interval
        kw = dict(tmin=float(lo), tmax=float(hi))
        if chans:
            kw["channels"] = list(chans)
    kw.update(overrides)
    if "channels" not in kw:
        raise EEGTransferError(
            f"{dataset_name(dataset)} does not list its channels; pass channels=[...]"
        )
    return Recipe(**kw)


def load_raws(dataset: Any, subjects: list[int], *,
              on_missing: str = "raise") -> dict[int, dict[str, dict[str, Any]]]:
    """``dataset.get_data`` per subject, with a clear error when offline without a cache.

    ``on_missing="skip"`` leaves out (with a warning) subjects that are neither
    cached nor downloadable, e.g. a population subject absent from an offline
    cache; ``"raise"`` names the folder that was searched.
    """
    subjects = check_subjects(dataset, subjects)
    out: dict[int, dict[str, dict[str, Any]]] = {}
    for subject in subjects:
        try:
            out[subject] = dataset.get_data([subject])[subject]
        except Exception as err:  # requests, pooch and urllib raise different types
            text = f"{type(err).__name__}: {err}"
            network = any(k in text for k in ("Connection", "resolve", "URLError", "HTTP",
                                              "Max retries", "timed out", "Name or service"))
            if not network:
                raise
            msg = (f"{dataset_name(dataset)} subject {subject} is not in the MOABB cache at "
                   f"{mne_data_path()} and could not be downloaded (no network)")
            if on_missing != "skip":
                raise DataNotFoundError(f"{msg}. Set MNE_DATA to a folder that holds it.") from None
            logger.warning("%s; left out of the population", msg)
    return out


@verbose_decorator
def load_dataset(
    dataset: Any,
    subjects: list[int],
    recipe: Recipe | None = None,
    *,
    keep_duplicates: bool = False,
    conform: bool = False,
    report: dict[str, Any] | None = None,
    on_missing: str = "raise",
    cache: bool | str | os.PathLike | None = None,
    verbose: bool | str | int | None = None,
) -> tuple[np.ndarray, pd.DataFrame, Recipe]:
    """Load MOABB subjects and apply one recipe to every run.

    Each run's events come from :func:`~eegtransfer.io.events.find_events`
    (annotations naming a class of ``dataset.event_id``, else its stim
    channel, codes named by ``dataset.event_id``).

    Parameters
    ----------
    dataset : moabb dataset | str
        A MOABB dataset instance or class name.
    subjects : list of int
    recipe : Recipe | None
        Defaults to :func:`default_recipe`.
    keep_duplicates : bool
        Keep the recordings that the dataset publishes twice (see
        :data:`KNOWN_DUPLICATES`); by default the copies are removed.
    conform : bool
        Match each run's channels to ``recipe.channels`` by name with
        :func:`~eegtransfer.io.channels.conform_channels` (exact names
        first, then case, ``EEG``/reference affixes and 10-20 aliases) and
        drop the others: for a recipe from another dataset. By default
        ``recipe.channels`` must be the run's names.
    report : dict | None
        If given, filled with ``dataset`` (its name), ``renamed`` and
        ``dropped`` (channels, over all runs; empty unless ``conform``) and
        ``source_sfreq`` (the last run's sampling rate).
    on_missing : {"raise", "skip"}
        What to do with a subject that is neither cached nor downloadable.
    cache : bool | path | None
        Preprocess once into the on-disk trial cache and return ``X`` as a
        read-only ``np.memmap``, for populations larger than memory (see
        :func:`eegtransfer.io.trialcache.load_dataset_cached`): ``True`` for the
        default cache folder (``$EEGTRANSFER_CACHE``, else ``~/.cache/eegtransfer``),
        or a folder. Same values as without it.
    verbose : bool | str | int | None
        Log level for this call, as in MNE (``True``: information, ``False``:
        warnings only, ``None``: the ``eegtransfer`` logger's level). MNE's
        own messages stay quiet unless this is ``True`` or a level name.

    Returns
    -------
    X : ndarray of float32, shape (n_trials, n_chans, n_times)
        A read-only ``np.memmap`` with ``cache``.
    meta : pandas.DataFrame, n_trials rows
        ``subject, session, run, onset, label, recording_seconds``; trials in
        recording order.
    recipe : Recipe
    """
    import pandas as pd

    if isinstance(dataset, str):
        dataset = get_dataset(dataset)
    recipe = recipe or default_recipe(dataset)
    if cache not in (None, False):
        from .trialcache import load_dataset_cached

        return load_dataset_cached(dataset, subjects, recipe, cache_dir=None if cache is True else cache,
                                   keep_duplicates=keep_duplicates, conform=conform, report=report,
                                   on_missing=on_missing, verbose=verbose)
    xs, metas = [], []
    for X, meta in iter_subject_trials(dataset, subjects, recipe, keep_duplicates=keep_duplicates,
                                       conform=conform, report=report, on_missing=on_missing, verbose=verbose):
        xs.append(X)
        metas.append(meta)
    if not xs:
        raise EEGTransferError(f"{dataset_name(dataset)}: no trials loaded for subjects {subjects}")
    return np.concatenate(xs), pd.concat(metas, ignore_index=True), recipe


def iter_subject_trials(
    dataset: Any,
    subjects: list[int],
    recipe: Recipe,
    *,
    keep_duplicates: bool = False,
    conform: bool = False,
    report: dict[str, Any] | None = None,
    on_missing: str = "raise",
    verbose: bool | str | int | None = None,
) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
    """The trials of :func:`load_dataset`, one subject at a time: ``(X, meta)`` per subject.

    Each subject's runs are read, preprocessed and released before the next
    subject's are read, so memory holds one subject whatever their number.
    A subject listed twice is loaded once; a subject skipped by
    ``on_missing="skip"`` yields nothing. Parameters as for :func:`load_dataset`.
    """
    import pandas as pd

    # MNE prints every filter design at its default level: quiet unless asked for.
    mne_verbose = verbose if verbose not in (None, False) else False
    name = dataset_name(dataset)
    if not keep_duplicates:
        dataset = deduplicated(dataset)
    report = {} if report is None else report
    report.update(dataset=name, renamed={}, dropped=[], source_sfreq=None)
    for subject in dict.fromkeys(check_subjects(dataset, subjects)):
        xs, metas = [], []
        for session, runs in load_raws(dataset, [subject], on_missing=on_missing).get(subject, {}).items():
            for run, raw in runs.items():
                source = f"{name} subject {subject} session {session} run {run}"
                events, ids, _ = find_events(raw, classes=list(dataset.event_id),
                                             default_id=dataset.event_id, source=source)
                report["source_sfreq"] = float(raw.info["sfreq"])
                if conform:
                    raw, rep = conform_channels(raw, recipe.channels, source=source)
                    report["renamed"].update(rep.renamed)
                    report["dropped"] = sorted(set(report["dropped"]) | set(rep.dropped))
                X, meta = epochs_from_raw(raw, events, ids, recipe, subject=subject, session=session,
                                          run=run, source=source, verbose=mne_verbose)
                xs.append(X)
                metas.append(meta)
        if xs:
            yield np.concatenate(xs), pd.concat(metas, ignore_index=True)
