"""Preprocessed trials written once to disk: populations larger than memory.

:func:`load_dataset_cached` (what ``load_dataset(..., cache=...)`` calls)
preprocesses a MOABB dataset one subject at a time
(:func:`~eegtransfer.io.moabb.iter_subject_trials`) and appends each subject's
trials to one ``.npy`` file, so memory holds one subject however many there
are. Every later call, in any process, opens that file as a read-only
``np.memmap`` without preprocessing anything, and the engine streams batches
from it (:mod:`eegtransfer.training.streaming`).

An entry is the folder ``<cache>/trials/<key>/`` (``<cache>`` as for the
pretrain cache: ``cache_dir``, else ``$EEGTRANSFER_CACHE``, else
``~/.cache/eegtransfer``) holding

* ``X.npy``: float32 trials, shape (n_trials, n_chans, n_times);
* ``meta.csv``: the metadata, one row per trial (CSV: pyarrow, which parquet
  needs, is not a dependency); the column types are in the spec;
* ``trials_spec.json``: the specification, the shape, the column types, the
  trials per subject and the loading report.

The key is :func:`~eegtransfer.training.cache.cache_key` of
:func:`trials_spec`: dataset, paradigm, subjects (in order: it is the trials'
order), the duplicates rule, channel matching, the recipe, and the eegtransfer,
MNE, MOABB and NumPy versions (a new filter design is new data). An entry is
written in a hidden temporary folder, flushed and renamed into place, under
the same lock as the pretrain cache (``<cache>/trials/<key>.lock``,
:func:`~eegtransfer.training.cache.file_lock`): a writer killed at any point
leaves no entry, and two processes never write the same one. An entry that
fails to open (truncated, missing a file) is removed and written again.

The ``.npy`` header is written last: the number of trials is known only when
the last subject is done, so room for the longest header the trial shape can
need is reserved first and the final header is padded with spaces to fill it
(the ``.npy`` format allows padding before the header's newline).
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cachefolders import KeyedCache
from ..errors import EEGTransferError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..preprocessing import Recipe

logger = logging.getLogger("eegtransfer")

TRIALS_FILE, META_FILE, SPEC_FILE = "X.npy", "meta.csv", "trials_spec.json"
_TYPES = {"b": "bool", "i": "int64", "u": "int64", "f": "float64"}  # numpy kind -> stored type; else "str"


def trials_spec(dataset: Any, subjects: list[int], recipe: Recipe, *, keep_duplicates: bool = False,
                conform: bool = False) -> dict[str, Any]:
    """What the trials of :func:`~eegtransfer.io.load_dataset` depend on: the trial cache's key."""
    from .. import __version__
    from ..bundle import package_versions
    from .moabb import dataset_name

    versions = package_versions()
    return {
        "kind": "trials",
        "format": 1,
        "data": {"dataset": dataset_name(dataset), "paradigm": getattr(dataset, "paradigm", None),
                 "subjects": [int(s) for s in dict.fromkeys(subjects)],
                 "known_duplicates": "kept" if keep_duplicates else "removed", "conform": bool(conform)},
        "recipe": recipe.to_dict(),
        "eegtransfer_version": __version__,
        **{f"{pkg}_version": versions[pkg] for pkg in ("mne", "moabb", "numpy")},
    }


def _npy_header(shape: tuple[int, ...], size: int | None = None) -> bytes:
    """A ``.npy`` (version 1.0) header for C-ordered little-endian float32 of ``shape``,
    padded with spaces to ``size`` bytes (default: the next multiple of 64)."""
    text = repr({"descr": "<f4", "fortran_order": False, "shape": tuple(int(n) for n in shape)})
    need = 10 + len(text) + 1
    size = size or -(-need // 64) * 64
    if need > size:
        raise EEGTransferError(f"a .npy header for shape {shape} needs {need} bytes, {size} were reserved")
    text += " " * (size - need) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def write_trials(folder: Path, chunks: Iterable[tuple[np.ndarray, pd.DataFrame]]) -> dict[str, Any]:
    """Write ``X.npy`` and ``meta.csv`` in ``folder`` from ``(X, meta)`` chunks, one at a time.

    Only one chunk is ever in memory: trials are appended to the ``.npy`` file
    (its header last, see the module notes) and rows to the CSV.

    Returns
    -------
    layout : dict
        ``shape``, ``columns`` (name to stored type) and ``trials_per_subject``.
    """
    n, trial_shape, columns = 0, None, None
    per_subject: dict[str, int] = {}
    with open(folder / TRIALS_FILE, "wb") as fx, open(folder / META_FILE, "w", newline="") as fm:
        for X, meta in chunks:
            if len(X) != len(meta):
                raise EEGTransferError(f"a chunk of {len(X)} trials came with {len(meta)} metadata rows")
            if not len(X):
                continue
            if trial_shape is None:
                trial_shape = tuple(int(s) for s in X.shape[1:])
                reserved = len(_npy_header((10 ** 15, *trial_shape)))  # room for any number of trials
                fx.write(b"\0" * reserved)
                columns = {c: _TYPES.get(meta[c].dtype.kind, "str") for c in meta.columns}
            elif tuple(X.shape[1:]) != trial_shape or list(meta.columns) != list(columns):
                raise EEGTransferError(f"chunks differ in trial shape ({trial_shape} then {X.shape[1:]}) "
                                       f"or metadata columns ({list(columns)} then {list(meta.columns)})")
            fx.write(np.ascontiguousarray(X, dtype="<f4").data)
            meta.to_csv(fm, header=n == 0, index=False)
            n += len(X)
            for s, k in meta["subject"].astype(str).value_counts(sort=False).items():
                per_subject[s] = per_subject.get(s, 0) + int(k)
        if trial_shape is None:
            raise EEGTransferError("no trials to write")
        fx.seek(0)
        fx.write(_npy_header((n, *trial_shape), reserved))
    return {"shape": [n, *trial_shape], "columns": columns, "trials_per_subject": per_subject}


class TrialCache(KeyedCache):
    """Preprocessed trials on disk (``<root>/trials/<key>/``), keyed by
    :func:`~eegtransfer.training.cache.cache_key` of a spec; see
    :class:`~eegtransfer.cachefolders.KeyedCache` for the folder, listing and removal.
    """

    kind = "trials"
    marker = SPEC_FILE

    def get(self, key: str) -> tuple[np.memmap, pd.DataFrame, dict[str, Any]] | None:
        """``(X, meta, info)`` of the entry ``key``, or ``None`` when it is absent or unreadable.

        ``X`` is a read-only ``np.memmap``; ``info`` is the entry's
        ``trials_spec.json``. An entry that fails to open (a missing or
        truncated file, a shape that does not match its spec) is removed.
        """
        import pandas as pd

        path = self.path(key)
        if not path.is_dir():
            return None
        try:
            info = json.loads((path / SPEC_FILE).read_text())
            X = np.load(path / TRIALS_FILE, mmap_mode="r")
            cols = info["columns"]
            meta = pd.read_csv(path / META_FILE, dtype={c: str if t == "str" else t for c, t in cols.items()},
                               keep_default_na=False, na_values={c: [""] for c, t in cols.items() if t == "float64"},
                               float_precision="round_trip")
            if list(X.shape) != info["shape"] or X.dtype != np.float32 or len(meta) != len(X):
                raise ValueError(f"X {X.shape} {X.dtype} and {len(meta)} metadata rows, "
                                 f"spec {info['shape']}")
        except (FileNotFoundError, ValueError, KeyError) as err:  # JSON and CSV errors are ValueErrors
            logger.warning("trial cache entry %s is unreadable (%s: %s); removing it to rebuild", path,
                           type(err).__name__, err)
            self._remove(path)
            self.rebuilt += 1
            return None
        return X, meta, info

    def get_or_write(self, spec: dict[str, Any],
                     chunks: Callable[[], Iterable[tuple[np.ndarray, pd.DataFrame]]],
                     extra: Callable[[], dict[str, Any]] | None = None,
                     ) -> tuple[np.memmap, pd.DataFrame, dict[str, Any], bool]:
        """Open the entry of ``spec``, writing it first when it is missing.

        Parameters
        ----------
        spec : dict
            What the trials depend on (see :func:`trials_spec`); the key is its
            :func:`~eegtransfer.training.cache.cache_key`.
        chunks : callable
            Returns an iterable of ``(X, meta)`` chunks (one subject each, say),
            consumed one at a time; called at most once per key across
            processes sharing the cache folder.
        extra : callable | None
            Called after the last chunk: more JSON-able fields for the spec file
            (e.g. the loading report).

        Returns
        -------
        X : np.memmap, read-only, float32, shape (n_trials, ...)
        meta : pandas.DataFrame
        info : dict
            The entry's ``trials_spec.json``: ``spec``, ``key``, ``shape``,
            ``columns``, ``trials_per_subject`` and the ``extra`` fields.
        hit : bool
            ``True`` when the entry was already there.
        """
        from ..training.cache import cache_key, canonical_json, file_lock

        key = cache_key(spec)
        path = self.path(key)
        found = self.get(key)  # a published entry is complete: no lock needed to read it
        if found is None:
            with file_lock(self.folder / f"{key}.lock"):
                found = self.get(key)  # written by another process while we waited
                if found is None:
                    self._write(path, json.loads(canonical_json(spec)), chunks, extra)
                    self.misses += 1
                    found = self.get(key)
                    if found is None:
                        raise EEGTransferError(f"trial cache entry {path} could not be read back after writing")
                    return (*found, False)
        self.hits += 1
        logger.info("trial cache hit: %s", path)
        return (*found, True)

    def _write(self, path: Path, spec: dict[str, Any],
               chunks: Callable[[], Iterable[tuple[np.ndarray, pd.DataFrame]]],
               extra: Callable[[], dict[str, Any]] | None) -> None:
        """Write the entry in a hidden sibling, flush it and rename it into place, as bundles are
        written (:func:`~eegtransfer.bundle.write_dir_atomic`); the caller holds the lock."""
        from ..bundle import write_dir_atomic

        def write(tmp: Path) -> None:
            logger.info("trial cache miss: writing %s", path)
            layout = write_trials(tmp, chunks())
            info = {"key": path.name, "spec": spec, **layout, **(extra() if extra else {})}
            (tmp / SPEC_FILE).write_text(json.dumps(info, indent=2, default=str))

        write_dir_atomic(path, write, overwrite=True)


def load_dataset_cached(
    dataset: Any,
    subjects: list[int],
    recipe: Recipe | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    keep_duplicates: bool = False,
    conform: bool = False,
    report: dict[str, Any] | None = None,
    on_missing: str = "raise",
    verbose: bool | str | int | None = None,
) -> tuple[np.memmap, pd.DataFrame, Recipe]:
    """:func:`~eegtransfer.io.load_dataset` through the trial cache: ``X`` as a read-only ``np.memmap``.

    The first call preprocesses and writes the subjects one at a time (peak
    memory: one subject's runs); later calls open the file. Values and
    metadata are those of ``load_dataset`` without a cache.

    Parameters
    ----------
    dataset, subjects, recipe, keep_duplicates, conform, report, on_missing, verbose
        As for :func:`~eegtransfer.io.load_dataset`. ``report`` is filled from
        the entry on a hit.
    cache_dir : path | None
        The cache folder (see :func:`~eegtransfer.cachefolders.default_cache_dir`).

    Returns
    -------
    X : np.memmap, read-only, float32, shape (n_trials, n_chans, n_times)
    meta : pandas.DataFrame
    recipe : Recipe

    Notes
    -----
    Subjects left out by ``on_missing="skip"`` (not in an offline MOABB cache)
    are left out of the entry too, which records them: a later call with the
    same arguments logs a warning naming them and the entry's folder, to be
    deleted once they can be downloaded.
    """
    from .moabb import dataset_name, default_recipe, get_dataset, iter_subject_trials

    if isinstance(dataset, str):
        dataset = get_dataset(dataset)
    recipe = recipe or default_recipe(dataset)
    spec = trials_spec(dataset, subjects, recipe, keep_duplicates=keep_duplicates, conform=conform)
    loaded: dict[str, Any] = {}

    def chunks() -> Iterable[tuple[np.ndarray, pd.DataFrame]]:
        return iter_subject_trials(dataset, subjects, recipe, keep_duplicates=keep_duplicates, conform=conform,
                                   report=loaded, on_missing=on_missing, verbose=verbose)

    def extra() -> dict[str, Any]:
        return {"report": loaded}

    cache = TrialCache(cache_dir)
    try:
        X, meta, info, _ = cache.get_or_write(spec, chunks, extra)
    except EEGTransferError as err:
        if str(err) == "no trials to write":
            raise EEGTransferError(f"{dataset_name(dataset)}: no trials loaded for subjects {subjects}") from None
        raise
    missing = sorted(set(spec["data"]["subjects"]) - {int(s) for s in info["trials_per_subject"]})
    if missing:
        logger.warning("trial cache entry %s has no trials of subject(s) %s (not available when it was "
                       "written); delete it to load them", cache.path(info["key"]), missing)
    if report is not None:
        report.update(info.get("report", {}))
    return X, meta, recipe
