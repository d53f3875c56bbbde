"""Reading files: any recording MNE reads, and the small CSV tables that go with them.

:func:`read_raw` wraps :func:`mne.io.read_raw` with errors that name the
file, and refuses what MNE would read silently as garbage (an EDF/BDF whose
length disagrees with its header). :func:`read_table` reads the events CSVs
and manifests of :mod:`eegtransfer.io.events` and
:mod:`eegtransfer.io.manifests`. :func:`recipe_from_recording` builds a
preprocessing recipe from a file's own channels.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataNotFoundError, EEGTransferError, one_line
from ..preprocessing import Recipe
from .channels import normalize_channel_name

if TYPE_CHECKING:  # pragma: no cover
    import mne
    import pandas as pd

EDF_LIKE = (".edf", ".bdf", ".rec")


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


# What the message lists when MNE's own table of readers cannot be asked.
COMMON_FORMATS = {".edf": "EDF/EDF+", ".bdf": "BDF", ".gdf": "GDF", ".fif": "FIF", ".vhdr": "BrainVision",
                  ".set": "EEGLAB", ".cnt": "Neuroscan/ANT", ".mff": "EGI", ".nxe": "Nexstim", ".ds": "CTF"}


def readable_suffixes() -> dict[str, str]:
    """File extensions :func:`mne.io.read_raw` reads, each with its format's name."""
    try:  # MNE keeps the table private; its absence in a later release costs only the long list
        from mne.io._read_raw import _get_supported

        return {ext: ", ".join(readers) for ext, readers in _get_supported().items()}
    except Exception:  # noqa: BLE001 - any failure falls back to the common formats
        return dict(COMMON_FORMATS)


def check_readable(path: str | Path) -> Path:
    """Refuse, before reading anything, a file that is missing or that no MNE reader takes.

    Returns
    -------
    path : Path

    Raises
    ------
    DataNotFoundError
        If the file does not exist.
    EEGTransferError
        If its extension is none MNE reads; the message lists the formats.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such recording file")
    known = readable_suffixes()
    name = path.name.lower()
    if not any(name.endswith(ext) for ext in known):
        common = ", ".join(f"{ext} ({fmt})" for ext, fmt in COMMON_FORMATS.items())
        raise EEGTransferError(
            f"{path}: not an EEG file MNE can read (extension {path.suffix or 'none'}); "
            f"MNE reads {common} and {len(known) - len(COMMON_FORMATS)} more formats"
        )
    return path


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
    raw : mne.io.Raw, shape (n_channels, n_times)

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

    path = check_readable(path)
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
                    "pass encoding=latin1 (or the file's encoding)"
                ) from None
            if isinstance(err, LookupError) and encoding:
                raise EEGTransferError(f"{path}: unknown encoding={encoding!r}") from None
            raise EEGTransferError(
                f"{path}: cannot read as an EEG recording ({type(err).__name__}: {one_line(text)})"
            ) from None
    for w in caught:
        msg = str(w.message)
        # MNE reads a cut-off EDF/BDF with only a warning; a truncated recording is bad input.
        if "does not match the file size" in msg or "truncated" in msg.lower():
            raise EEGTransferError(f"{path}: the file is truncated or damaged ({one_line(msg)})")
    if len(raw.ch_names) == 0 or raw.n_times < 2:
        raise EEGTransferError(f"{path}: the recording holds no samples")
    return raw


def read_table(path: Path, what: str) -> pd.DataFrame:
    """A small CSV/TSV (delimiter sniffed) as text cells, with lower-case column names.

    Refuses, by file name, what pandas would silently misread: rows with more
    fields than the header (pandas would make the first ones an index and
    shift every column) and column names that are equal once case and
    spaces are ignored (``onset`` and ``Onset``). Missing trailing fields
    are NaN.

    Parameters
    ----------
    path : Path
    what : str
        What the table is, for messages (``"events CSV"``, ``"manifest"``).

    Returns
    -------
    table : pandas.DataFrame, shape (n_rows, n_columns)
        Cells as ``str`` (NaN where a row is short).
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
            raise EEGTransferError(f"{path}: cannot read this {what} ({one_line(err)})") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    dup = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    if dup:
        raise EEGTransferError(f"{path}: column(s) {dup} appear more than once in this {what}")
    return df


def recipe_from_recording(path: str | Path, *, encoding: str | None = None,
                          **overrides: Any) -> Recipe:
    """A recipe whose channels are a file's EEG channels.

    Channel names are cleaned for display (:func:`normalize_channel_name`
    with ``alias=False, keep_case=True``: ``"Fc5."`` -> ``"Fc5"``,
    ``"EEG Fp1-REF"`` -> ``"Fp1"``). The sampling rate defaults to the
    file's or 128 Hz, whichever is lower, and the band-pass upper edge is
    kept below Nyquist.

    Parameters
    ----------
    path : str | Path
        Any file :func:`read_raw` reads (only its header is read).
    encoding : str | None
        EDF+ annotation encoding.
    **overrides
        :class:`~eegtransfer.preprocessing.Recipe` fields; ``None`` values
        are ignored.

    Returns
    -------
    recipe : Recipe
    """
    import mne

    raw = read_raw(path, encoding=encoding, preload=False)
    picks = mne.pick_types(raw.info, eeg=True, exclude=[])
    chans = [normalize_channel_name(raw.ch_names[i], alias=False, keep_case=True) for i in picks]
    kw: dict[str, Any] = {"channels": chans, "sfreq": min(128.0, float(raw.info["sfreq"]))}
    kw.update({k: v for k, v in overrides.items() if v is not None})
    if "h_freq" not in overrides or overrides.get("h_freq") is None:
        kw["h_freq"] = min(45.0, round(0.45 * float(kw["sfreq"]), 1))
    if not chans:
        raise EEGTransferError(f"{path}: no EEG channels found to build a recipe from; name them with channels=")
    return Recipe(**kw)
