"""Reading EEG: a file or a MOABB dataset in, MNE ``Raw`` + events out, then trials.

In pipeline order, for a patient's own file:

1. :mod:`~eegtransfer.io.reading` - :func:`read_raw` reads any file MNE reads
   (EDF/BDF, FIF, BrainVision, EEGLAB ...) into an MNE ``Raw``, refusing
   truncated or damaged files by name; :func:`recipe_from_recording` builds a
   recipe from a file's own channels.
2. :mod:`~eegtransfer.io.events` - :func:`find_events` finds the labelled
   events, in one documented order: an events file (CSV or MNE), else a stim
   channel whose codes can be named, else the annotations that name a class.
   :func:`window_events` cuts a one-class or unlabelled file into consecutive
   windows instead.
3. :mod:`~eegtransfer.io.channels` - :func:`conform_channels` gives the
   ``Raw`` the model's channels in the model's order, matching names with the
   one normaliser :func:`normalize_channel_name` (``EEG Fp1-REF``, ``Fc5.``,
   ``T3`` for ``T7``), and interpolates missing ones if asked.
4. :func:`eegtransfer.preprocessing.epochs_from_raw` applies the recipe
   (filters, resampling, window) and cuts the trials, shape
   ``(n_trials, n_chans, n_times)``, with one metadata row per trial.

:func:`load_recording` (:mod:`~eegtransfer.io.recordings`) runs steps 1-4 on
one file and returns a :class:`Recording`; :func:`read_manifest`
(:mod:`~eegtransfer.io.manifests`) reads a CSV that lists many files.

For a MOABB dataset, :mod:`~eegtransfer.io.moabb`: :func:`get_dataset` and
:func:`load_raws` give MOABB's ``Raw`` per run (offline-safe, with known
duplicated runs removed), and :func:`load_dataset` runs steps 2-4 on each run
with the same :func:`find_events` (and, with ``conform=True``, the same
:func:`conform_channels`). With ``cache=``, :mod:`~eegtransfer.io.trialcache`
writes the trials once, one subject at a time, to a file that later calls
open as a read-only ``np.memmap`` (:func:`load_dataset_cached`): populations
larger than memory.

Every problem is an :class:`~eegtransfer.errors.EEGTransferError` whose
message names the file, channel or parameter at fault on one line.
"""

from __future__ import annotations

from .channels import ChannelReport, conform_channels, match_channels, normalize_channel_name
from .events import find_events, has_events, parse_event_id, window_events
from .manifests import read_manifest
from .moabb import (
    KNOWN_DUPLICATES,
    deduplicated,
    default_recipe,
    duplicates_note,
    get_dataset,
    iter_subject_trials,
    load_dataset,
    load_raws,
)
from .reading import read_raw, recipe_from_recording
from .recordings import Recording, load_recording
from .trialcache import TrialCache, load_dataset_cached

__all__ = [
    "KNOWN_DUPLICATES",
    "ChannelReport",
    "Recording",
    "TrialCache",
    "conform_channels",
    "deduplicated",
    "default_recipe",
    "duplicates_note",
    "find_events",
    "get_dataset",
    "has_events",
    "iter_subject_trials",
    "load_dataset",
    "load_dataset_cached",
    "load_raws",
    "load_recording",
    "match_channels",
    "normalize_channel_name",
    "parse_event_id",
    "read_manifest",
    "read_raw",
    "recipe_from_recording",
    "window_events",
]
