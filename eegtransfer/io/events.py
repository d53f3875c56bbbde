"""Events: where a recording's trials start and which class each one is.

:func:`find_events` is the one event search, for a patient's file and for a
MOABB run alike. It looks, in this order:

1. an events file, when one is given: a CSV (``onset`` in seconds, ``label``)
   or an MNE events file;
2. a stim channel, when its codes can be named: by ``event_id``, by
   ``default_id`` (a MOABB dataset's or the population's codes), or by
   themselves when no class is expected (pretraining);
3. the recording's annotations whose descriptions name a class (EDF+
   annotations, BrainVision markers ...); data-quality marks such as
   ``BAD_`` or ``EDGE`` never do.

The stim channel comes first because it is the sample-exact trigger, and
because it is MOABB's own rule (its paradigms read a stim channel if there is
one, else annotations), so a MOABB run gives the same trials here as in a
MOABB evaluation. MOABB's annotations are not events: it sets them at each
trial's window, ``dataset.interval[0]`` seconds after the trigger. A file
whose stim codes name no class (classes expected, no ``--event-id``) still
has its annotations read.

:func:`window_events` instead cuts a recording into consecutive trials (a
file that is all one class, or unlabelled), and :func:`has_events` says
whether there is anything to find.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataNotFoundError, EEGTransferError, one_line
from ..preprocessing import Recipe
from .reading import read_table

if TYPE_CHECKING:  # pragma: no cover
    import mne

logger = logging.getLogger("eegtransfer")

# Annotation descriptions that mark data quality, never a class.
IGNORED_DESCRIPTIONS = ("bad", "edge", "boundary")
CSV_SUFFIXES = (".csv", ".tsv")


def parse_event_id(items: list[str] | None) -> dict[str, str]:
    """``["left=1", "right=T2"]`` -> ``{"left": "1", "right": "T2"}`` (class -> code)."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, code = str(item).partition("=")
        if not sep or not name.strip() or not code.strip():
            raise EEGTransferError(f"event_id={item!r}: expected NAME=CODE, e.g. left=1 or rest=T0")
        out[name.strip()] = code.strip()
    return out


def _code_map(event_id: dict[str, Any], source: str) -> dict[str, int]:
    try:
        return {str(k): int(v) for k, v in event_id.items()}
    except (TypeError, ValueError):
        raise EEGTransferError(
            f"{source}: event_id= codes must be integers for a stim channel or MNE events file, "
            f"got {event_id}"
        ) from None


def _classes_from_labels(labels: list[str], classes: list[str] | None, event_id: dict[str, str],
                         source: str) -> dict[str, str]:
    """Label text -> class name, for CSV labels and annotation descriptions."""
    if event_id:
        table = {}
        for name, code in event_id.items():
            table[name] = name
            table[code] = name
        return {lab: table[lab] for lab in labels if lab in table}
    if classes is None:
        return {lab: lab for lab in labels}
    table = {c: c for c in classes}
    lower = {c.strip().lower(): c for c in classes}
    return {lab: table.get(lab) or lower[lab.strip().lower()] for lab in labels
            if lab in table or lab.strip().lower() in lower}


def _events_from_csv(raw: mne.io.BaseRaw, path: Path, classes: list[str] | None,
                     event_id: dict[str, str], source: str) -> tuple[np.ndarray, dict[str, int]]:
    import pandas as pd

    df = read_table(path, "events CSV")
    if not {"onset", "label"} <= set(df.columns):
        raise EEGTransferError(f"{path}: an events CSV needs columns 'onset' (seconds) and 'label'; "
                               f"found {list(df.columns)}")
    onset = pd.to_numeric(df["onset"], errors="coerce").to_numpy(dtype=float)
    missing = df["label"].isna().to_numpy()
    labels = df["label"].fillna("").astype(str).str.strip().to_numpy()
    bad = np.where(~np.isfinite(onset) | (onset < 0) | missing | (labels == ""))[0]
    if len(bad):
        raise EEGTransferError(f"{path}: row(s) {(bad + 2).tolist()[:10]} have no valid onset "
                               "(seconds >= 0) or label")
    found = sorted(set(labels.tolist()))
    mapping = _classes_from_labels(found, classes, event_id, source)
    unknown = [lab for lab in found if lab not in mapping]
    if unknown and (event_id or mapping):
        # Some labels are classes and some are not: most likely typos, never guess.
        expected = sorted(set(event_id) | set(event_id.values())) if event_id else classes
        raise EEGTransferError(
            f"{path}: unknown label(s) {unknown}; expected {expected}. Fix the labels, or declare "
            "the patient's classes with event_id= NAME=LABEL for each"
        )
    if not mapping:  # no label is a class of the model: a new task with these classes
        mapping = {lab: lab for lab in found}
    names = sorted(set(mapping.values()))
    code = {n: i + 1 for i, n in enumerate(names)}
    duration = raw.n_times / raw.info["sfreq"]
    late = onset >= duration
    if late.any():
        raise EEGTransferError(f"{path}: {int(late.sum())} onset(s) at or after the end of {source} "
                               f"({duration:.1f} s), e.g. {onset[late][0]:g} s")
    samples = raw.first_samp + np.round(onset * raw.info["sfreq"]).astype(int)
    events = np.c_[samples, np.zeros(len(samples), int), [code[mapping[lab]] for lab in labels]]
    order = np.argsort(events[:, 0], kind="stable")
    return events[order].astype(int), code


def _events_from_file(raw: mne.io.BaseRaw, path: Path, classes: list[str] | None,
                      event_id: dict[str, str], default_id: dict[str, int] | None,
                      source: str) -> tuple[np.ndarray, dict[str, int]]:
    import mne

    try:
        events = mne.read_events(path, verbose="error")
    except Exception as err:
        raise EEGTransferError(f"{path}: cannot read as an MNE events file or CSV "
                               f"({type(err).__name__}: {one_line(err)})") from None
    return events, _map_codes(events, classes, event_id, default_id, f"{path}")


def _map_codes(events: np.ndarray, classes: list[str] | None, event_id: dict[str, str],
               default_id: dict[str, int] | None, source: str) -> dict[str, int]:
    codes = sorted(set(events[:, 2].tolist()))
    if event_id:
        ids = _code_map(event_id, source)
    elif default_id and (classes is None or set(default_id) & set(classes)):
        ids = {k: int(v) for k, v in default_id.items() if classes is None or k in classes}
    elif classes is None:
        ids = {str(c): int(c) for c in codes}  # pretraining: codes are the class names
    else:
        raise EEGTransferError(
            f"{source}: event codes {codes} need names; pass event_id= NAME=CODE for each class "
            f"of the model {classes}"
        )
    ids = {k: v for k, v in ids.items() if v in codes}
    if not ids:
        raise EEGTransferError(f"{source}: no event code matches the classes "
                               f"{event_id or default_id}; event codes found: {codes}")
    return ids


def find_events(raw: mne.io.BaseRaw, *, events: str | Path | None = None,
                classes: list[str] | None = None, event_id: dict[str, str] | None = None,
                default_id: dict[str, int] | None = None,
                source: str = "recording") -> tuple[np.ndarray, dict[str, int], str]:
    """Labelled events of a recording and the class each code stands for.

    The one event search (see the module docstring): an events file when
    given, else a stim channel whose codes can be named, else the
    annotations that name a class.

    Parameters
    ----------
    raw : mne.io.Raw
    events : path | None
        A CSV (columns ``onset`` in seconds from the start, ``label``) or an
        MNE events file (:func:`mne.read_events`). ``None`` looks in the
        recording: a stim channel first, then annotations.
    classes : list of str | None
        The model's classes: annotation descriptions and CSV labels are
        matched against them. ``None`` (pretraining) accepts every label.
    event_id : dict of str to str | None
        User mapping class name -> event code or annotation description
        (``--event-id``); when given, only these classes are used.
    default_id : dict of str to int | None
        Class -> stim code known from the population's dataset (bundle
        provenance ``event_id``, a MOABB dataset's ``event_id``), used for
        stim codes when ``event_id`` is not given.
    source : str
        File name for messages.

    Returns
    -------
    events : ndarray of int, shape (n_events, 3)
        In ``raw``'s samples, ``raw.first_samp`` included.
    event_id : dict of str to int
        Class name -> code in ``events``.
    how : str
        Where the events came from (for reports).

    Raises
    ------
    EEGTransferError
        If no event matches the classes; the message lists the annotations
        and stim codes that were found.
    """
    event_id = dict(event_id or {})
    if events is not None:
        path = Path(events)
        if not path.is_file():
            raise DataNotFoundError(f"{path}: no such events file")
        if path.suffix.lower() in CSV_SUFFIXES:
            ev, ids = _events_from_csv(raw, path, classes, event_id, source)
            return ev, ids, f"events CSV {path.name}"
        ev, ids = _events_from_file(raw, path, classes, event_id, default_id, source)
        return ev, ids, f"MNE events file {path.name}"

    found_desc: dict[str, int] = {}
    for d in raw.annotations.description:
        found_desc[str(d)] = found_desc.get(str(d), 0) + 1
    stim, stim_codes, found = _events_from_stim(raw, classes, event_id, default_id, source)
    if found is None:
        found = _events_from_annotations(raw, found_desc, classes, event_id, source)
    if found is not None:
        return found
    wanted = f"event_id={event_id}" if event_id else f"the model's classes {classes}"
    raise EEGTransferError(
        f"{source}: no event matches {wanted}; found annotations "
        f"{found_desc or 'none'} and "
        + (f"stim channel(s) {stim} with codes {stim_codes}" if stim else "no stim channel")
        + ". Pass events= FILE, or event_id= NAME=CODE for each class"
    )


def _events_from_annotations(
    raw: mne.io.BaseRaw, found_desc: dict[str, int], classes: list[str] | None,
    event_id: dict[str, str], source: str,
) -> tuple[np.ndarray, dict[str, int], str] | None:
    """Events from the annotations that name a class, or ``None`` when none does.

    ``found_desc`` counts each annotation description. Codes are 1, 2 ... in
    the sorted order of the class names.
    """
    import mne

    candidates = [d for d in found_desc if not d.lower().startswith(IGNORED_DESCRIPTIONS)]
    mapping = _classes_from_labels(candidates, classes, event_id, source)
    if not mapping:
        return None
    unmatched = {d: found_desc[d] for d in candidates if d not in mapping}
    if unmatched:
        # Not an error (a recording also marks blinks, pauses ...), but never silent:
        # a misspelt class name would otherwise just lose its trials.
        logger.warning("%s: annotation(s) %s (description: count) match no class %s and are "
                       "ignored", source, unmatched, sorted(set(mapping.values())))
    names = sorted(set(mapping.values()))
    code = {n: i + 1 for i, n in enumerate(names)}
    ev, _ = mne.events_from_annotations(raw, event_id={d: code[c] for d, c in mapping.items()},
                                        verbose="error")
    return ev, code, "annotations"


def _events_from_stim(
    raw: mne.io.BaseRaw, classes: list[str] | None, event_id: dict[str, str],
    default_id: dict[str, int] | None, source: str,
) -> tuple[list[str], list[int], tuple[np.ndarray, dict[str, int], str] | None]:
    """The stim channels, their codes, and their events when the codes name classes.

    Returns
    -------
    stim : list of str
        Stim channel names (empty when there is none).
    codes : list of int
        The codes found, sorted.
    found : (events, event_id, how) | None
        ``None`` when no code can be named.
    """
    import mne

    stim = [raw.ch_names[i] for i in mne.pick_types(raw.info, stim=True, eeg=False)]
    if not stim:
        return stim, [], None
    ev = mne.find_events(raw, stim_channel=stim, shortest_event=0, verbose="error")
    codes = sorted(set(ev[:, 2].tolist()))
    if len(ev):
        try:
            ids = _map_codes(ev, classes, event_id, default_id, source)
            return stim, codes, (ev, ids, f"stim channel {', '.join(stim)}")
        except EEGTransferError:
            pass  # codes that name no class: the caller tries the annotations
    return stim, codes, None


def has_events(raw: mne.io.BaseRaw) -> bool:
    """Whether ``raw`` holds any event: an annotation that is not a data-quality
    mark (``BAD_``, ``EDGE`` ...) or a non-zero code in a stim channel."""
    import mne

    if any(not str(d).lower().startswith(IGNORED_DESCRIPTIONS) for d in raw.annotations.description):
        return True
    stim = mne.pick_types(raw.info, stim=True, eeg=False)
    return bool(len(stim)) and bool(np.any(raw.get_data(picks=stim) != 0))


def window_events(raw: mne.io.BaseRaw, recipe: Recipe, code: int = 1, *, stride: float | None = None) -> np.ndarray:
    """Events that cut the whole recording into consecutive trials.

    Trial ``k`` spans ``[k S + tmin, k S + tmax)`` seconds with the stride ``S``; by default
    ``S = tmax - tmin``, so windows touch but never overlap. A shorter ``stride`` (seconds)
    gives overlapping windows: 10 s of one class cut into 4-s windows from its start make 6
    trials with ``stride=1`` instead of 2.

    Returns
    -------
    events : ndarray of int, shape (n_windows, 3)
    """
    sfreq = raw.info["sfreq"]
    if stride is not None and not stride > 0:
        raise EEGTransferError(f"stride= must be > 0 seconds, got {stride!r}")
    length = recipe.tmax - recipe.tmin if stride is None else float(stride)
    duration = raw.n_times / sfreq
    # One sample of slack: resampling may round the last window past the end.
    usable = duration - recipe.tmax - 2.0 / min(sfreq, recipe.sfreq)
    n = int(np.floor(usable / length)) + 1 if usable >= 0 else 0
    onsets = raw.first_samp + np.round(np.arange(n) * length * sfreq).astype(int)
    return np.c_[onsets, np.zeros(n, int), np.full(n, code, int)].astype(int)


