"""A patient's own recordings: any file MNE reads, made to fit a model's recipe.

What a clinician hands over rarely matches what the model was trained on:
other file formats, channel names such as ``EEG Fp1-REF`` or PhysioNet's
``Fc5.``, channels in another order or extra ones, events in a stim channel,
in EDF+ annotations or in a spreadsheet. This module turns all of that into
the model's channels in the model's order, plus labelled events, and then
into trials with :func:`eegtransfer.preprocessing.epochs_from_raw`.

Nothing here knows about the command line; every problem is an
:class:`~eegtransfer.errors.EEGTransferError` whose message names the file,
channel or parameter at fault on one line.

Main entry points
-----------------
:func:`read_raw`         any MNE-readable file, with errors that name the file
:func:`find_events`      events + ``{class name: code}`` from annotations, a stim
                         channel, an MNE events file or a CSV (onset, label)
:func:`conform_channels` rename, drop, reorder and (optionally) interpolate
:func:`load_recording`   all of the above, returning trials and what was done
:func:`read_manifest`    a CSV listing recordings (path, subject, session,
                         events | label)
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .bundle import sha256_file
from .errors import DataNotFoundError, EEGTransferError
from .preprocessing import Recipe, epochs_from_raw

if TYPE_CHECKING:  # pragma: no cover
    import mne
    import pandas as pd

logger = logging.getLogger("eegtransfer")

# 10-20 names that changed in the 10-10 system: old -> new.
ALIASES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
# Reference suffixes some systems append to every channel (``Fp1-REF``, ``Cz-LE``).
REF_SUFFIXES = ("-REF", "-LE", "-RE", "-AVG", "-AR", "-A1", "-A2", "-M1", "-M2", "-CZ")
# Annotation descriptions that mark data quality, never a class.
IGNORED_DESCRIPTIONS = ("bad", "edge", "boundary")
EDF_LIKE = (".edf", ".bdf", ".rec")
CSV_SUFFIXES = (".csv", ".tsv")


def _one_line(text: Any) -> str:
    """First line of an error text, so the command line can print it on one line."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else ""


# --- reading -------------------------------------------------------------------

def edf_expected_size(path: str | Path) -> int | None:
    """The size in bytes an EDF/BDF file must have, from its own header.

    ``256 + 256 * ns`` header bytes plus ``n_records * sum(samples per
    record)`` samples of 2 bytes (3 for BDF). ``None`` when the header
    cannot be parsed (MNE's reader then gives the error) or when the number
    of records is unknown (``-1``, a recording still being written).
    """
    path = Path(path)
    width = 3 if path.suffix.lower() == ".bdf" else 2
    try:
        with open(path, "rb") as f:
            head = f.read(256)
            n_records, ns = int(head[236:244].decode("ascii")), int(head[252:256].decode("ascii"))
            if ns <= 0 or n_records < 0:
                return None
            # Per-signal fields come one block per field; samples per record is the 9th
            # block, after 216 bytes per signal (label, transducer, ... prefiltering).
            f.seek(256 + 216 * ns)
            block = f.read(8 * ns)
            spr = [int(block[8 * i: 8 * i + 8].decode("ascii")) for i in range(ns)]
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return 256 + 256 * ns + n_records * sum(spr) * width


def _check_edf_size(path: Path) -> None:
    """Refuse an EDF/BDF whose length disagrees with its header.

    MNE reads a *longer* file without a word, as garbage: e.g. a file copied
    as text, with its line endings rewritten, shifts every later sample.
    """
    if path.suffix.lower() not in (".edf", ".bdf"):
        return
    expected = edf_expected_size(path)
    size = path.stat().st_size
    if expected is None or size == expected:
        return
    if size < expected:
        raise EEGTransferError(f"{path}: the file is truncated ({size} bytes; its header says "
                               f"{expected})")
    raise EEGTransferError(f"{path}: the file is {size} bytes but its header says {expected}; "
                           "it was damaged (e.g. copied as text, with line endings rewritten)")


def read_raw(path: str | Path, *, encoding: str | None = None,
             preload: bool = True) -> mne.io.BaseRaw:
    """Read any recording that :func:`mne.io.read_raw` reads.

    EDF/EDF+, BDF, GDF, FIF, BrainVision (``.vhdr``), EEGLAB (``.set``) and
    the other formats MNE knows.

    Parameters
    ----------
    path : str | Path
    encoding : str | None
        Text encoding of EDF+/BDF+ annotations (MNE's default is UTF-8);
        ignored for other formats.
    preload : bool
        Read the samples now, so a truncated file fails here.

    Returns
    -------
    raw : mne.io.Raw

    Raises
    ------
    DataNotFoundError
        If the file does not exist.
    EEGTransferError
        If MNE cannot read it, if it is truncated or its size disagrees with
        its EDF/BDF header (:func:`edf_expected_size`), or if its EDF+ annotations
        are not valid text in ``encoding``.
    """
    import mne

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such recording file")
    _check_edf_size(path)
    kwargs: dict[str, Any] = {}
    if encoding and path.suffix.lower() in EDF_LIKE:
        kwargs["encoding"] = encoding
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            raw = mne.io.read_raw(path, preload=preload, verbose="warning", **kwargs)
        except Exception as err:  # MNE's readers raise many types; the user needs the file name
            text = str(err)
            if "invalid byte" in text and "annotation" in text:
                raise EEGTransferError(
                    f"{path}: the EDF+ annotations are not valid {encoding or 'UTF-8'} text; "
                    "pass --encoding latin1 (or the file's encoding)"
                ) from None
            if isinstance(err, LookupError) and encoding:
                raise EEGTransferError(f"{path}: unknown --encoding {encoding!r}") from None
            raise EEGTransferError(
                f"{path}: cannot read as an EEG recording ({type(err).__name__}: {_one_line(text)})"
            ) from None
    for w in caught:
        msg = str(w.message)
        # MNE reads a cut-off EDF/BDF with only a warning; a truncated recording is bad input.
        if "does not match the file size" in msg or "truncated" in msg.lower():
            raise EEGTransferError(f"{path}: the file is truncated or damaged ({_one_line(msg)})")
    if len(raw.ch_names) == 0 or raw.n_times < 2:
        raise EEGTransferError(f"{path}: the recording holds no samples")
    return raw


# --- channels ------------------------------------------------------------------

def _channel_key(name: str, *, alias: bool = True) -> str:
    """:func:`normalize_channel_name`, optionally without the old 10-20 aliases."""
    s = str(name).strip()
    s = re.sub(r"^EEG[\s_:]+", "", s, flags=re.IGNORECASE)
    s = s.strip().strip(".").strip().upper()
    for suffix in REF_SUFFIXES:
        if s.endswith(suffix) and len(s) > len(suffix):
            s = s[: -len(suffix)]
            break
    s = s.rstrip("-_ .")
    return ALIASES.get(s, s) if alias else s


def normalize_channel_name(name: str) -> str:
    """A key that equal channels share whatever the recording system wrote.

    Upper case; without an ``EEG`` prefix, PhysioNet's ``.`` padding and
    reference suffixes such as ``-REF`` or ``-LE``; old 10-20 names mapped
    to 10-10 (T3->T7, T4->T8, T5->P7, T6->P8).

    >>> [normalize_channel_name(n) for n in ("Fc5.", "EEG T3-REF", "oz..", "POz")]
    ['FC5', 'T7', 'OZ', 'POZ']
    """
    return _channel_key(name)


def clean_channel_name(name: str) -> str:
    """A display name: prefix, padding and reference suffix removed, case kept.

    Used to name the channels of a recipe built from a user's file
    (``"Fc5."`` -> ``"Fc5"``, ``"EEG Fp1-REF"`` -> ``"Fp1"``).
    """
    s = re.sub(r"^EEG[\s_:]+", "", str(name).strip(), flags=re.IGNORECASE).strip().strip(".").strip()
    up = s.upper()
    for suffix in REF_SUFFIXES:
        if up.endswith(suffix) and len(up) > len(suffix):
            s = s[: -len(suffix)]
            break
    return s.rstrip("-_ .")


# How a recording's channel name may match a model's, most trusted first.
_MATCH_LEVELS = (
    ("exact", lambda n: n),
    ("case-insensitive", lambda n: str(n).strip().casefold()),
    ("normalised", lambda n: _channel_key(n, alias=False)),
    ("10-20 alias", lambda n: _channel_key(n)),
)


def match_channels(found: list[str], wanted: list[str], *,
                   source: str = "recording") -> tuple[dict[str, str], list[str]]:
    """Match a recording's channel names to the model's.

    Each model channel takes the recording channel that matches it at the
    most trusted level: the exact name, then the same name in another case,
    then the same :func:`normalize_channel_name` key without and finally
    with the old 10-20 aliases (``T3`` for ``T7``). So ``['T3', 't7']`` gives
    T7 the ``t7`` channel, never ``T3``.

    Parameters
    ----------
    found : list of str
        The recording's channel names.
    wanted : list of str
        The model's channel names, in its order.
    source : str
        File name for messages.

    Returns
    -------
    mapping : dict of str to str
        Model channel -> recording channel, for each one found.
    missing : list of str
        Model channels with no match, in model order.

    Raises
    ------
    EEGTransferError
        If two recording channels match one model channel equally well
        (``EEG OZ-REF`` and ``EEG OZ-LE`` for ``Oz``): guessing would
        silently pick one signal.
    """
    mapping: dict[str, str] = {}
    used: set[str] = set()
    for level, key in _MATCH_LEVELS:
        for w in wanted:
            if w in mapping:
                continue
            hits = [f for f in found if f not in used and key(f) == key(w)]
            if len(hits) > 1:
                raise EEGTransferError(
                    f"{source}: channels {', '.join(repr(h) for h in hits)} all match the model's "
                    f"channel {w!r} ({level} match); rename or drop all but one of them"
                )
            if hits:
                mapping[w] = hits[0]
                used.add(hits[0])
    missing = [w for w in wanted if w not in mapping]
    return mapping, missing


def _montage() -> mne.channels.DigMontage:
    import mne

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return mne.channels.make_standard_montage("colin27_1005")
        except ValueError:  # older MNE
            return mne.channels.make_standard_montage("standard_1005")


@dataclass
class ChannelReport:
    """What :func:`conform_channels` did to a recording's channels."""

    used: list[str]
    renamed: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    interpolated: list[str] = field(default_factory=list)


def conform_channels(raw: mne.io.BaseRaw, channels: list[str], *, interpolate_missing: bool = False,
                     source: str = "recording") -> tuple[mne.io.BaseRaw, ChannelReport]:
    """Give ``raw`` exactly ``channels``, in that order.

    Matching channels are renamed to the model's names and typed EEG, extra
    channels are dropped, and missing ones are either interpolated from a
    standard 10-05 montage (spherical splines, via MNE's ``interpolate_bads``)
    or refused.

    Parameters
    ----------
    raw : mne.io.Raw
        Loaded recording; not modified.
    channels : list of str
        The model's channel names.
    interpolate_missing : bool
    source : str
        File name for messages.

    Returns
    -------
    raw : mne.io.Raw
        A copy with ``raw.ch_names == channels``.
    report : ChannelReport
    """
    import mne

    mapping, missing = match_channels(list(raw.ch_names), list(channels), source=source)
    if missing and not interpolate_missing:
        raise EEGTransferError(
            f"{source}: cannot map the model's channel(s) {missing} to the recording's channels "
            f"{list(raw.ch_names)}; rename them, or pass --interpolate-missing to interpolate them"
        )
    if not mapping:
        raise EEGTransferError(
            f"{source}: none of the model's channels {list(channels)} is among the recording's "
            f"{list(raw.ch_names)}; nothing to interpolate from"
        )
    present = [c for c in channels if c in mapping]
    out = raw.copy().pick([mapping[c] for c in present])
    renames = {mapping[c]: c for c in present if mapping[c] != c}
    if renames:
        out.rename_channels(renames)
    out.set_channel_types({c: "eeg" for c in present}, on_unit_change="ignore", verbose="error")
    out.load_data(verbose="error")
    report = ChannelReport(used=list(channels), renamed=renames,
                           dropped=[c for c in raw.ch_names if c not in set(mapping.values())],
                           interpolated=list(missing))
    if missing:
        montage = _montage()
        known = {n.upper() for n in montage.ch_names}
        no_pos = [c for c in list(channels) if c.upper() not in known]
        if no_pos:
            raise EEGTransferError(
                f"{source}: cannot interpolate {missing}: channel(s) {no_pos} have no position "
                "in the standard 10-05 montage"
            )
        info = mne.create_info(missing, out.info["sfreq"], "eeg")
        filler = mne.io.RawArray(np.zeros((len(missing), out.n_times)), info,
                                 first_samp=out.first_samp, verbose="error")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.add_channels([filler], force_update_info=True)
            out.set_montage(montage, match_case=False, on_missing="raise", verbose="error")
            out.info["bads"] = list(missing)
            out.interpolate_bads(reset_bads=True, verbose="error")
        logger.info("%s: interpolated missing channel(s) %s from their neighbours", source, missing)
    out.reorder_channels(list(channels))
    return out, report


# --- events --------------------------------------------------------------------

def parse_event_id(items: list[str] | None) -> dict[str, str]:
    """``["left=1", "right=T2"]`` -> ``{"left": "1", "right": "T2"}`` (class -> code)."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, code = str(item).partition("=")
        if not sep or not name.strip() or not code.strip():
            raise EEGTransferError(f"--event-id {item!r}: expected NAME=CODE, e.g. left=1 or rest=T0")
        out[name.strip()] = code.strip()
    return out


def _code_map(event_id: dict[str, Any], source: str) -> dict[str, int]:
    try:
        return {str(k): int(v) for k, v in event_id.items()}
    except (TypeError, ValueError):
        raise EEGTransferError(
            f"{source}: --event-id codes must be integers for a stim channel or MNE events file, "
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


def read_table(path: Path, what: str) -> pd.DataFrame:
    """A small CSV/TSV (delimiter sniffed) as text cells, with lower-case column names.

    Refuses, by file name, what pandas would silently misread: rows with more
    fields than the header (pandas would make the first ones an index and
    shift every column) and column names that are equal once case and
    spaces are ignored (``onset`` and ``Onset``). Missing trailing fields
    are NaN.
    """
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            df = pd.read_csv(path, sep=None, engine="python", dtype=str, keep_default_na=False,
                             index_col=False)
        except pd.errors.ParserWarning:
            raise EEGTransferError(f"{path}: some rows have more fields than the header of this "
                                   f"{what}; quote fields that hold the delimiter") from None
        except Exception as err:  # pandas/csv raise many types on malformed text
            raise EEGTransferError(f"{path}: cannot read this {what} ({_one_line(err)})") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    dup = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    if dup:
        raise EEGTransferError(f"{path}: column(s) {dup} appear more than once in this {what}")
    return df


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
            "the patient's classes with --event-id NAME=LABEL for each"
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
                               f"({type(err).__name__}: {_one_line(err)})") from None
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
            f"{source}: event codes {codes} need names; pass --event-id NAME=CODE for each class "
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

    Parameters
    ----------
    raw : mne.io.Raw
    events : path | None
        A CSV (columns ``onset`` in seconds from the start, ``label``) or an
        MNE events file (:func:`mne.read_events`). ``None`` looks in the
        recording: annotations first, then a stim channel.
    classes : list of str | None
        The model's classes: annotation descriptions and CSV labels are
        matched against them. ``None`` (pretraining) accepts every label.
    event_id : dict of str to str | None
        User mapping class name -> event code or annotation description
        (``--event-id``); when given, only these classes are used.
    default_id : dict of str to int | None
        Class -> stim code known from the population's dataset (bundle
        provenance ``event_id``), used for stim codes when ``event_id`` is
        not given.
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
    """
    import mne

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
    candidates = [d for d in found_desc if not d.lower().startswith(IGNORED_DESCRIPTIONS)]
    mapping = _classes_from_labels(candidates, classes, event_id, source)
    if mapping:
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

    stim = [raw.ch_names[i] for i in mne.pick_types(raw.info, stim=True, eeg=False)]
    stim_codes: list[int] = []
    if stim:
        ev = mne.find_events(raw, stim_channel=stim, shortest_event=0, verbose="error")
        stim_codes = sorted(set(ev[:, 2].tolist()))
        if len(ev):
            try:
                ids = _map_codes(ev, classes, event_id, default_id, source)
                return ev, ids, f"stim channel {', '.join(stim)}"
            except EEGTransferError:
                pass  # fall through to the message that lists everything found
    wanted = f"--event-id {event_id}" if event_id else f"the model's classes {classes}"
    raise EEGTransferError(
        f"{source}: no event matches {wanted}; found annotations "
        f"{found_desc or 'none'} and "
        + (f"stim channel(s) {stim} with codes {stim_codes}" if stim else "no stim channel")
        + ". Pass --events FILE, or --event-id NAME=CODE for each class"
    )


def has_events(raw: mne.io.BaseRaw) -> bool:
    """Whether ``raw`` holds any event: an annotation that is not a data-quality
    mark (``BAD_``, ``EDGE`` ...) or a non-zero code in a stim channel."""
    import mne

    if any(not str(d).lower().startswith(IGNORED_DESCRIPTIONS) for d in raw.annotations.description):
        return True
    stim = mne.pick_types(raw.info, stim=True, eeg=False)
    return bool(len(stim)) and bool(np.any(raw.get_data(picks=stim) != 0))


def window_events(raw: mne.io.BaseRaw, recipe: Recipe, code: int = 1) -> np.ndarray:
    """Events that cut the whole recording into consecutive trials.

    Trial ``k`` spans ``[k L + tmin, k L + tmax)`` seconds with
    ``L = tmax - tmin``: windows touch but never overlap.

    Returns
    -------
    events : ndarray of int, shape (n_windows, 3)
    """
    sfreq = raw.info["sfreq"]
    length = recipe.tmax - recipe.tmin
    duration = raw.n_times / sfreq
    # One sample of slack: resampling may round the last window past the end.
    usable = duration - recipe.tmax - 2.0 / min(sfreq, recipe.sfreq)
    n = int(np.floor(usable / length)) + 1 if usable >= 0 else 0
    onsets = raw.first_samp + np.round(np.arange(n) * length * sfreq).astype(int)
    return np.c_[onsets, np.zeros(n, int), np.full(n, code, int)].astype(int)


# --- one recording, start to finish -------------------------------------------

@dataclass
class Recording:
    """Trials cut from one file, and what it took to get them.

    Attributes
    ----------
    X : ndarray of float32, shape (n_trials, n_chans, n_times)
    meta : pandas.DataFrame
        One row per trial (see :func:`~eegtransfer.preprocessing.epochs_from_raw`).
    path : Path
    sha256 : str
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
    path: Path
    sha256: str
    channels: ChannelReport
    sfreq: float
    events_from: str
    event_id: dict[str, int]
    n_bad_dropped: int = 0

    def summary(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "n_trials": int(len(self.X)),
                "n_bad_dropped": self.n_bad_dropped,
                "sfreq": self.sfreq, "events_from": self.events_from,
                "renamed": self.channels.renamed, "dropped": self.channels.dropped,
                "interpolated": self.channels.interpolated,
                "minutes": round(float(self.meta["recording_seconds"].iloc[0]) / 60, 3)
                if len(self.meta) else None}


def load_recording(
    path: str | Path,
    recipe: Recipe,
    *,
    classes: list[str] | None = None,
    events: str | Path | None = None,
    event_id: dict[str, str] | None = None,
    default_id: dict[str, int] | None = None,
    label: str | None = None,
    windows: bool = False,
    interpolate_missing: bool = False,
    encoding: str | None = None,
    subject: str = "patient",
    session: str = "0",
    run: str = "0",
    raw: mne.io.BaseRaw | None = None,
) -> Recording:
    """Read one file and cut it into recipe-preprocessed, labelled trials.

    Parameters
    ----------
    path : str | Path
        Any file :func:`read_raw` reads.
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
    interpolate_missing : bool
        Interpolate model channels the file lacks instead of refusing.
    encoding : str | None
        EDF+ annotation encoding.
    subject, session, run : str
        Stored in the trials' metadata.
    raw : mne.io.Raw | None
        ``path`` already read with :func:`read_raw` (saves reading it twice).

    Returns
    -------
    recording : Recording
    """
    path = Path(path)
    source = str(path)
    if raw is None:
        raw = read_raw(path, encoding=encoding)
    try:
        return _load(raw, path, recipe, classes=classes, events=events, event_id=event_id,
                     default_id=default_id, label=label, windows=windows,
                     interpolate_missing=interpolate_missing, subject=subject, session=session, run=run)
    except EEGTransferError:
        raise
    except (ValueError, RuntimeError, IndexError, KeyError, OSError) as err:
        # MNE's own complaints (odd annotations, a recording too short to filter ...) name no file.
        raise EEGTransferError(f"{source}: cannot prepare the recording ({type(err).__name__}: "
                               f"{_one_line(err)})") from None


def _load(raw: mne.io.BaseRaw, path: Path, recipe: Recipe, *, classes: list[str] | None,
          events: str | Path | None, event_id: dict[str, str] | None,
          default_id: dict[str, int] | None, label: str | None, windows: bool,
          interpolate_missing: bool, subject: str, session: str, run: str) -> Recording:
    source = str(path)
    if label is not None or windows:
        ev = window_events(raw, recipe)
        if len(ev) == 0:
            raise EEGTransferError(
                f"{source}: the recording ({raw.n_times / raw.info['sfreq']:.1f} s) is shorter "
                f"than one trial window ({recipe.tmax:g} s)"
            )
        name = str(label) if label is not None else "?"
        ids, how = {name: 1}, "consecutive windows"
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
    return Recording(X=X, meta=meta, path=path, sha256=sha256_file(path), channels=chans,
                     sfreq=sfreq, events_from=how, event_id=ids, n_bad_dropped=counts["n_bad_dropped"])


# --- manifests -----------------------------------------------------------------

def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a CSV that lists recordings.

    Columns ``path, subject, session`` and either ``events`` (an events file
    per recording, see :func:`find_events`; may be empty to use the file's
    own annotations or stim channel) or ``label`` (the whole file is one
    class). Relative paths resolve against the manifest's folder.

    Returns
    -------
    manifest : pandas.DataFrame
        Columns ``path`` (absolute), ``subject``, ``session``, ``events``
        (path or None) and ``label`` (str or None), one row per recording.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such manifest file")
    df = read_table(path, "manifest")
    need = {"path", "subject", "session"}
    if not need <= set(df.columns) or not ({"events", "label"} & set(df.columns)):
        raise EEGTransferError(
            f"{path}: a manifest needs columns path, subject, session and events or label; "
            f"found {list(df.columns)}"
        )
    if len(df) == 0:
        raise EEGTransferError(f"{path}: the manifest lists no recordings")
    short = np.where(df.isna().any(axis=1).to_numpy())[0]
    if len(short):  # a missing field would read as the text 'nan'
        raise EEGTransferError(f"{path}: row(s) {(short + 2).tolist()[:10]} have fewer fields than "
                               f"the header {list(df.columns)}")
    base = path.resolve().parent

    def resolve(p: str) -> str | None:
        p = str(p).strip()
        if not p:
            return None
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else base / q)

    rows = []
    for i, r in df.iterrows():
        file = resolve(r["path"])
        if file is None:
            raise EEGTransferError(f"{path}: row {i + 2} has an empty path")
        ev = resolve(r["events"]) if "events" in df.columns else None
        lab = str(r["label"]).strip() if "label" in df.columns else ""
        if ev and lab:
            raise EEGTransferError(f"{path}: row {i + 2} has both events and label; give one")
        rows.append({"path": file, "subject": str(r["subject"]).strip() or "patient",
                     "session": str(r["session"]).strip() or "0", "events": ev, "label": lab or None})
    return pd.DataFrame(rows)


def recipe_from_recording(path: str | Path, *, encoding: str | None = None,
                          **overrides: Any) -> Recipe:
    """A recipe whose channels are a file's EEG channels (names cleaned).

    The sampling rate defaults to the file's or 128 Hz, whichever is lower,
    and the band-pass upper edge is kept below Nyquist.
    """
    import mne

    raw = read_raw(path, encoding=encoding, preload=False)
    picks = mne.pick_types(raw.info, eeg=True, exclude=[])
    chans = [clean_channel_name(raw.ch_names[i]) for i in picks]
    kw: dict[str, Any] = {"channels": chans, "sfreq": min(128.0, float(raw.info["sfreq"]))}
    kw.update({k: v for k, v in overrides.items() if v is not None})
    if "h_freq" not in overrides or overrides.get("h_freq") is None:
        kw["h_freq"] = min(45.0, round(0.45 * float(kw["sfreq"]), 1))
    if not chans:
        raise EEGTransferError(f"{path}: no EEG channels found to build a recipe from; pass --channels")
    return Recipe(**kw)
