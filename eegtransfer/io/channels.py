"""Channel names: one normaliser, matching to a model's channels, and conforming a recording.

A recording system writes ``EEG Fp1-REF``, PhysioNet writes ``Fc5.``, an old
montage says ``T3`` where a model says ``T7``. :func:`normalize_channel_name`
is the one place that turns such a name into a comparable key;
:func:`match_channels` uses it to pair a recording's channels with a model's
and :func:`conform_channels` gives a ``Raw`` exactly the model's channels,
in the model's order.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import EEGTransferError

if TYPE_CHECKING:  # pragma: no cover
    import mne

logger = logging.getLogger("eegtransfer")

# 10-20 names that changed in the 10-10 system: old -> new.
ALIASES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
# Reference suffixes some systems append to every channel (``Fp1-REF``, ``Cz-LE``).
REF_SUFFIXES = ("-REF", "-LE", "-RE", "-AVG", "-AR", "-A1", "-A2", "-M1", "-M2", "-CZ")


def normalize_channel_name(name: str, *, alias: bool = True, keep_case: bool = False) -> str:
    """A channel name without what recording systems add to it.

    Removes an ``EEG`` prefix, PhysioNet's ``.`` padding and one reference
    suffix such as ``-REF`` or ``-LE``.

    Parameters
    ----------
    name : str
        A channel name as a file writes it.
    alias : bool
        Map old 10-20 names to their 10-10 names (:data:`ALIASES`: T3->T7,
        T4->T8, T5->P7, T6->P8). The default, so that equal channels share
        one key; ``False`` keeps the name the file gave.
    keep_case : bool
        Keep the file's case, for a name shown to people (a recipe built from
        a file, :func:`eegtransfer.io.reading.recipe_from_recording`). By
        default the key is upper case, for comparing names.

    Returns
    -------
    name : str

    Examples
    --------
    >>> [normalize_channel_name(n) for n in ("Fc5.", "EEG T3-REF", "oz..", "POz")]
    ['FC5', 'T7', 'OZ', 'POZ']
    >>> [normalize_channel_name(n, alias=False, keep_case=True) for n in ("Fc5.", "EEG Fp1-REF")]
    ['Fc5', 'Fp1']
    """
    s = re.sub(r"^EEG[\s_:]+", "", str(name).strip(), flags=re.IGNORECASE).strip().strip(".").strip()
    up = s.upper()
    if not keep_case:
        s = up
    for suffix in REF_SUFFIXES:
        if up.endswith(suffix) and len(up) > len(suffix):
            s = s[: -len(suffix)]
            break
    s = s.rstrip("-_ .")
    return ALIASES.get(s.upper(), s) if alias else s


# How a recording's channel name may match a model's, most trusted first.
_MATCH_LEVELS = (
    ("exact", lambda n: n),
    ("case-insensitive", lambda n: str(n).strip().casefold()),
    ("normalised", lambda n: normalize_channel_name(n, alias=False)),
    ("10-20 alias", lambda n: normalize_channel_name(n)),
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
    found : list of str, length n_found
        The recording's channel names.
    wanted : list of str, length n_chans
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
    """What :func:`conform_channels` did to a recording's channels.

    Attributes
    ----------
    used : list of str
        The model's channels, in its order (the conformed recording's).
    renamed : dict of str to str
        Recording name -> model name, for channels matched under another name.
    dropped : list of str
        Recording channels the model does not use.
    interpolated : list of str
        Model channels the recording lacks, interpolated from their neighbours.
    """

    used: list[str]
    renamed: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    interpolated: list[str] = field(default_factory=list)


def conform_channels(raw: mne.io.BaseRaw, channels: list[str], *,
                     interpolate_missing: bool | list[str] = False,
                     source: str = "recording") -> tuple[mne.io.BaseRaw, ChannelReport]:
    """Give ``raw`` exactly ``channels``, in that order.

    Matching channels (:func:`match_channels`) are renamed to the model's
    names and typed EEG, extra channels are dropped, and missing ones are
    either interpolated from a standard 10-05 montage (spherical splines, via
    MNE's ``interpolate_bads``) or refused.

    Parameters
    ----------
    raw : mne.io.Raw | mne.Epochs, n_found channels
        Loaded recording; not modified.
    channels : list of str, length n_chans
        The model's channel names.
    interpolate_missing : bool | list of str
        ``True``: interpolate model channels the recording lacks instead of
        refusing. A list: interpolate exactly these channels (those a patient
        bundle was calibrated with), even where the recording has them, so
        the model sees what it was adapted on; any other missing channel is
        refused.
    source : str
        File name for messages.

    Returns
    -------
    raw : mne.io.Raw, n_chans channels
        A copy with ``raw.ch_names == channels``.
    report : ChannelReport
    """
    mapping, missing = match_channels(list(raw.ch_names), list(channels), source=source)
    if isinstance(interpolate_missing, (list, tuple)):
        mapping, missing = _fixed_interpolation(mapping, missing, list(channels), list(interpolate_missing),
                                                source, list(raw.ch_names))
    elif missing and not interpolate_missing:
        raise EEGTransferError(
            f"{source}: cannot map the model's channel(s) {missing} to the recording's channels "
            f"{list(raw.ch_names)}; rename them, or pass interpolate_missing=True to interpolate them"
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
    out.load_data()  # Epochs.load_data takes no verbose; a Raw says nothing at "error" anyway
    report = ChannelReport(used=list(channels), renamed=renames,
                           dropped=[c for c in raw.ch_names if c not in set(mapping.values())],
                           interpolated=list(missing))
    if missing:
        _interpolate(out, list(channels), missing, source)
    out.reorder_channels(list(channels))
    return out, report


def _fixed_interpolation(mapping: dict[str, str], missing: list[str], channels: list[str],
                         fixed: list[str], source: str,
                         found: list[str]) -> tuple[dict[str, str], list[str]]:
    """``mapping`` and ``missing`` when exactly the ``fixed`` channels are interpolated."""
    unexpected = [c for c in missing if c not in fixed]
    if unexpected:
        raise EEGTransferError(
            f"{source}: cannot map the model's channel(s) {unexpected} to the recording's channels "
            f"{found}; the bundle was calibrated interpolating only {fixed or 'none'}; rename them, "
            "or pass interpolate_missing=True to interpolate them too"
        )
    mapping = {c: f for c, f in mapping.items() if c not in fixed}
    return mapping, [c for c in channels if c in fixed]


def _interpolate(raw: mne.io.BaseRaw, channels: list[str], missing: list[str], source: str) -> None:
    """Add the ``missing`` channels to ``raw`` (in place), interpolated from the others."""
    import mne

    montage = _montage()
    known = {n.upper() for n in montage.ch_names}
    no_pos = [c for c in channels if c.upper() not in known]
    if no_pos:
        raise EEGTransferError(
            f"{source}: cannot interpolate {missing}: channel(s) {no_pos} have no position "
            "in the standard 10-05 montage"
        )
    info = mne.create_info(missing, raw.info["sfreq"], "eeg")
    if isinstance(raw, mne.BaseEpochs):  # Bundle.predict(epochs): same steps, per epoch
        filler = mne.EpochsArray(np.zeros((len(raw), len(missing), len(raw.times))), info,
                                 events=raw.events, tmin=raw.tmin, event_id=raw.event_id, verbose="error")
    else:
        filler = mne.io.RawArray(np.zeros((len(missing), raw.n_times)), info,
                                 first_samp=raw.first_samp, verbose="error")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw.add_channels([filler], force_update_info=True)
        raw.set_montage(montage, match_case=False, on_missing="raise", verbose="error")
        raw.info["bads"] = list(missing)
        raw.interpolate_bads(reset_bads=True, verbose="error")
    logger.info("%s: interpolated missing channel(s) %s from their neighbours", source, missing)
