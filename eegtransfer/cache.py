"""A disk cache of pretrained population models.

Pretraining is the expensive step of every benchmark: the same population
model serves every adaptation strategy and every calibration size of a
cross-subject fold. :class:`PretrainCache` stores each population model as a
:class:`~eegtransfer.bundle.Bundle` under a key that names everything the
model depends on:

* the data: a MOABB dataset, paradigm and training subjects when known, or
  the SHA-256 of the training arrays themselves when they are not (inside a
  MOABB fold the estimator only sees arrays);
* the :class:`~eegtransfer.preprocessing.Recipe`, the model name and keyword
  arguments, the training hyper-parameters and the seed;
* the eegtransfer version.

The key is the SHA-256 of a canonical JSON of these (sorted keys, no
whitespace), so equal specifications give equal keys in any process.

The cache folder is ``cache_dir`` when given, else ``$EEGTRANSFER_CACHE``, else
``~/.cache/eegtransfer``. Entries live in ``<cache>/pretrain/<key>/``.
Reading an entry goes through :meth:`Bundle.load`, which verifies the weights'
SHA-256: a corrupt or half-written entry is logged, removed and trained again.
Two processes (or threads) that want the same missing entry serialise on an
exclusive ``fcntl.flock`` of ``<cache>/pretrain/<key>.lock``: the second one
waits, then finds the entry the first one wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import EEGTransferError

if TYPE_CHECKING:  # pragma: no cover
    from .bundle import Bundle

logger = logging.getLogger("eegtransfer")

ENV_VAR = "EEGTRANSFER_CACHE"
SPEC_FILE = "cache_spec.json"

# flock excludes other processes; threads of one process share the lock file's
# owner, so they also take a per-key in-process lock.
_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$EEGTRANSFER_CACHE``, else ``~/.cache/eegtransfer``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "eegtransfer"


def canonical_json(spec: Any) -> str:
    """JSON with sorted keys, no whitespace, numpy scalars and arrays as plain values."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, (set, frozenset)):
            return sorted(o)
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"cannot put {type(o).__name__} in a cache key")

    return json.dumps(spec, sort_keys=True, separators=(",", ":"), default=default)


def cache_key(spec: dict[str, Any]) -> str:
    """SHA-256 (hex) of :func:`canonical_json` of ``spec``."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


def data_fingerprint(*arrays: np.ndarray | None) -> str:
    """SHA-256 over the shape, dtype and bytes of each array (``None`` counts too).

    Used as the data part of a key when the dataset is not known by name,
    e.g. inside a MOABB cross-validation fold.
    """
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none;")
            continue
        a = np.asarray(a)
        if a.dtype.kind in "OUS":  # labels and subject ids: hash their text
            a = np.array([str(v) for v in a.ravel()], dtype=str).reshape(a.shape)
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def pretrain_spec(
    *,
    data: dict[str, Any],
    recipe: Any,
    model: str,
    model_kwargs: dict[str, Any] | None,
    hyperparameters: dict[str, Any],
    seed: int,
    classes: list[str] | None = None,
) -> dict[str, Any]:
    """The specification of one population model (everything its weights depend on).

    Parameters
    ----------
    data : dict
        ``{"dataset": ..., "paradigm": ..., "subjects": [...]}`` for a named
        dataset, or ``{"sha256": data_fingerprint(X, y, subjects)}``.
    recipe : Recipe | dict
    model : str
    model_kwargs : dict | None
    hyperparameters : dict
        Training settings (epochs, batch size, learning rate, ...).
    seed : int
    classes : list of str | None
        Output order of the model.
    """
    from . import __version__

    return {
        "kind": "pretrain",
        "data": data,
        "recipe": recipe.to_dict() if hasattr(recipe, "to_dict") else dict(recipe),
        "model": str(model),
        "model_kwargs": dict(model_kwargs or {}),
        "hyperparameters": dict(hyperparameters),
        "seed": int(seed),
        "classes": None if classes is None else [str(c) for c in classes],
        "eegtransfer_version": __version__,
    }


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the block.

    Uses ``fcntl.flock`` across processes, and a per-path lock across the
    threads of this process. Without ``fcntl`` (Windows) only the latter.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCKS_GUARD:
        tlock = _THREAD_LOCKS.setdefault(str(path.absolute()), threading.Lock())
    with tlock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        with open(path, "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class PretrainCache:
    """Population bundles on disk, keyed by :func:`cache_key` of a specification.

    Parameters
    ----------
    root : path | None
        The cache folder (see :func:`default_cache_dir`).

    Attributes
    ----------
    hits, misses, rebuilt : int
        Counts for this instance: entries read, entries trained, and
        unreadable entries that were removed and trained again.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = default_cache_dir(root)
        self.hits = 0
        self.misses = 0
        self.rebuilt = 0

    def __repr__(self) -> str:
        return (f"<PretrainCache {self.root}: {len(self.keys())} entries; this session "
                f"{self.hits} hits, {self.misses} misses, {self.rebuilt} rebuilt>")

    @property
    def folder(self) -> Path:
        return self.root / "pretrain"

    def path(self, key: str) -> Path:
        """Folder of the entry ``key``."""
        if not key or any(c not in "0123456789abcdef" for c in key):
            raise EEGTransferError(f"cache key must be lowercase hex, got {key!r}")
        return self.folder / key

    def keys(self) -> list[str]:
        """Keys of the complete-looking entries on disk."""
        if not self.folder.is_dir():
            return []
        return sorted(p.name for p in self.folder.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and (p / "bundle.json").exists())

    def get(self, key: str) -> Bundle | None:
        """The entry ``key``, or ``None`` when absent; an unreadable entry is removed."""
        from .bundle import Bundle

        path = self.path(key)
        if not path.exists():
            return None
        try:
            return Bundle.load(path)
        except Exception as err:  # corrupt, truncated or half-written: rebuild it
            logger.warning("pretrain cache entry %s is unreadable (%s); removing it to rebuild",
                           path, err)
            shutil.rmtree(path, ignore_errors=True)
            self.rebuilt += 1
            return None

    def get_or_train(self, spec: dict[str, Any], train: Callable[[], Bundle]) -> tuple[Bundle, bool]:
        """Return the cached bundle for ``spec``, training and storing it if needed.

        Parameters
        ----------
        spec : dict
            The model's specification (see :func:`pretrain_spec`); its key is
            :func:`cache_key` of it.
        train : callable
            Returns a new population :class:`Bundle`; called at most once per
            key across processes sharing the cache folder.

        Returns
        -------
        bundle : Bundle
        hit : bool
            ``True`` when the bundle came from the cache.
        """
        key = cache_key(spec)
        path = self.path(key)
        with file_lock(self.folder / f"{key}.lock"):
            bundle = self.get(key)
            if bundle is not None:
                self.hits += 1
                logger.info("pretrain cache hit: %s", path)
                return bundle, True
            self.misses += 1
            logger.info("pretrain cache miss: training %s", path)
            bundle = train()
            bundle.provenance["cache_key"] = key
            bundle.save(path, overwrite=True)
            (path / SPEC_FILE).write_text(json.dumps(json.loads(canonical_json(spec)), indent=2))
            return bundle, False

    def clear(self) -> int:
        """Remove every entry; return how many were removed."""
        keys = self.keys()
        for key in keys:
            shutil.rmtree(self.path(key), ignore_errors=True)
        return len(keys)


def cached_pretrain(
    X: np.ndarray,
    labels: np.ndarray,
    meta: Any,
    recipe: Any,
    *,
    cache_dir: str | os.PathLike | None = None,
    data: dict[str, Any] | None = None,
    model: str = "EEGNet",
    model_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    classes: list[str] | None = None,
    **kwargs: Any,
) -> tuple[Bundle, bool]:
    """:func:`eegtransfer.pretrain.pretrain` through a :class:`PretrainCache`.

    Parameters
    ----------
    X, labels, meta, recipe : as for :func:`~eegtransfer.pretrain.pretrain`.
    cache_dir : path | None
        See :func:`default_cache_dir`.
    data : dict | None
        How to name the data in the key (dataset, paradigm, subjects); by
        default the SHA-256 of ``X``, ``labels`` and ``meta["subject"]``.
    model, model_kwargs, seed, classes : as for ``pretrain``.
    **kwargs
        Other ``pretrain`` settings. Those that change the weights go into the
        key; ``device``, ``progress`` and ``provenance`` do not.

    Returns
    -------
    bundle : Bundle
    hit : bool
    """
    from .pretrain import pretrain

    not_in_key = {"device", "progress", "provenance", "checkpoint"}
    if data is None:
        subjects = None if meta is None else np.asarray(meta["subject"]).astype(str)
        data = {"sha256": data_fingerprint(np.asarray(X, np.float32), np.asarray(labels).astype(str),
                                           subjects)}
    spec = pretrain_spec(data=data, recipe=recipe, model=model, model_kwargs=model_kwargs,
                         hyperparameters={k: v for k, v in sorted(kwargs.items()) if k not in not_in_key},
                         seed=seed, classes=classes)

    def train() -> Bundle:
        return pretrain(X, labels, meta, recipe, model=model, model_kwargs=model_kwargs, seed=seed,
                        classes=classes, **kwargs)

    return PretrainCache(cache_dir).get_or_train(spec, train)


def cached_pretrain_on_dataset(
    dataset: Any,
    subjects: list[int],
    *,
    recipe: Any = None,
    cache_dir: str | os.PathLike | None = None,
    model: str = "EEGNet",
    seed: int = 0,
    **kwargs: Any,
) -> tuple[Bundle, bool]:
    """A population model of MOABB ``subjects``, keyed by dataset name rather than bytes.

    On a hit the dataset is not even loaded. See
    :func:`eegtransfer.pretrain.pretrain_on_dataset` for the parameters.
    """
    from .io.moabb import dataset_name, default_recipe, get_dataset, load_dataset
    from .pretrain import pretrain

    if isinstance(dataset, str):
        dataset = get_dataset(dataset)
    recipe = recipe or default_recipe(dataset)
    name = dataset_name(dataset)
    data = {"dataset": name, "paradigm": getattr(dataset, "paradigm", None),
            "subjects": sorted(int(s) for s in subjects),
            "known_duplicates": "removed"}  # the dataset-level rule of load_dataset
    not_in_key = {"device", "progress", "provenance", "checkpoint"}
    spec = pretrain_spec(data=data, recipe=recipe, model=model, model_kwargs=kwargs.get("model_kwargs"),
                         hyperparameters={k: v for k, v in sorted(kwargs.items())
                                          if k not in not_in_key | {"model_kwargs"}},
                         seed=seed, classes=kwargs.get("classes"))

    def train() -> Bundle:
        X, meta, rec = load_dataset(dataset, subjects, recipe)
        prov = {"dataset": name, "paradigm": getattr(dataset, "paradigm", None)}
        prov.update(kwargs.pop("provenance", None) or {})
        return pretrain(X, meta["label"].to_numpy(), meta, rec, model=model, seed=seed,
                        provenance=prov, **kwargs)

    return PretrainCache(cache_dir).get_or_train(spec, train)
