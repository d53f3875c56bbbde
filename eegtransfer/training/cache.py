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
* the eegtransfer, torch and braindecode versions and the device type
  (CUDA trains in bf16 autocast: not the same weights as the CPU).

The key is the SHA-256 of a canonical JSON of these (sorted keys, no
whitespace), so equal specifications give equal keys in any process.

The cache folder is ``cache_dir`` when given, else ``$EEGTRANSFER_CACHE``, else
``~/.cache/eegtransfer``. Entries live in ``<cache>/pretrain/<key>/``.
Entries are published whole, by renaming a complete folder into place.
Reading an entry goes through :meth:`Bundle.load`, which verifies the weights'
and metadata's SHA-256: an entry that fails that check (altered, truncated,
unparsable) is logged, removed and trained again. Any other error (a broken
install, a full disk) is raised and the entry kept.

Two processes (or threads) that want the same missing entry serialise on the
lock file ``<cache>/pretrain/<key>.lock``, created with ``O_EXCL`` and holding
the holder's pid, host and start time (see :func:`file_lock`): unlike
``flock``, this also excludes processes on other hosts of a network file
system (Dask workers). The second one waits, then finds the entry the first
one wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cachefolders import KeyedCache
from ..cachefolders import default_cache_dir as default_cache_dir  # part of this module's API
from ..errors import EEGTransferError

if TYPE_CHECKING:  # pragma: no cover
    from ..bundle import Bundle

logger = logging.getLogger("eegtransfer")

SPEC_FILE = "cache_spec.json"

# A lock whose holder is on another host and has not refreshed it for this long is stale.
LOCK_STALE_SECONDS = 600.0
# How often a holder refreshes its lock file's mtime (well under LOCK_STALE_SECONDS).
LOCK_HEARTBEAT_SECONDS = 30.0

# The lock file excludes other processes; threads of one process also take a
# per-key in-process lock, so that they wait without polling.
_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


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
    device_type: str | None = None,
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
    device_type : str | None
        ``"cpu"``, ``"cuda"`` or ``"mps"``: where it trains (not which GPU).
    """
    from .. import __version__
    from ..bundle import package_versions

    versions = package_versions()
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
        "torch_version": versions["torch"],
        "braindecode_version": versions["braindecode"],
        "device_type": device_type,
    }


def _read_lock(path: Path) -> tuple[dict[str, Any], float] | None:
    """The holder record of a lock file and its age in seconds; ``None`` when there is no lock."""
    try:
        age = time.time() - path.stat().st_mtime
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text)
    except json.JSONDecodeError:  # a holder between creating and writing it
        info = {}
    return (info if isinstance(info, dict) else {}), age


def _lock_is_stale(info: dict[str, Any], age: float, stale_after: float) -> bool:
    """A holder on this host whose pid is gone, or a lock not refreshed for ``stale_after`` s."""
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            return True
        except OSError:  # EPERM: the process exists
            pass
    return age > stale_after


def _try_lock(path: Path, record: dict[str, Any]) -> bool:
    """Create the lock file with ``O_EXCL`` (atomic, also on NFS v3+); ``False`` if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(record))
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _heartbeat(path: Path, record_id: str, stop: threading.Event, every: float) -> None:
    """Refresh the lock's mtime while it is held, so a long training never looks stale."""
    while not stop.wait(every):
        held = _read_lock(path)
        if held is None or held[0].get("id") != record_id:
            return
        try:
            os.utime(path)
        except OSError:
            return


def _acquire(path: Path, record: dict[str, Any], timeout: float | None, stale_after: float,
             poll: float) -> None:
    t0 = time.monotonic()
    while not _try_lock(path, record):
        held = _read_lock(path)
        if held is None:
            continue  # released meanwhile
        info, age = held
        if _lock_is_stale(info, age, stale_after):
            # Rename, then delete: of two waiters that judged it stale, one renames it.
            broken = path.with_name(f"{path.name}.stale-{record['id']}")
            try:
                os.rename(path, broken)
                broken.unlink()
                logger.warning("%s: removed a stale lock (pid %s on %s, %.0f s old)", path,
                               info.get("pid"), info.get("host"), age)
            except OSError:
                pass
            continue
        if timeout is not None and time.monotonic() - t0 > timeout:
            raise EEGTransferError(
                f"{path}: still locked after {timeout:g} s by pid {info.get('pid')} on "
                f"{info.get('host')} (since {info.get('time')}); if that process is gone, delete the file")
        time.sleep(poll)


@contextmanager
def file_lock(path: Path, *, timeout: float | None = None, stale_after: float = LOCK_STALE_SECONDS,
              poll: float = 0.2, heartbeat: float = LOCK_HEARTBEAT_SECONDS) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block, across threads, processes and hosts.

    The lock is the file itself, created with ``O_EXCL`` and holding the
    holder's pid, host and start time (``flock`` does not exclude other hosts
    on many network file systems). A lock is stale, and broken, when its
    holder is a dead process of this host, or when it was not refreshed for
    ``stale_after`` seconds (the holder refreshes it every ``heartbeat`` s).

    Parameters
    ----------
    path : Path
    timeout : float | None
        Give up after this many seconds with an error naming the holder
        (``None``: wait as long as it takes).
    stale_after, poll, heartbeat : float
        Seconds; see above.

    Raises
    ------
    EEGTransferError
        On ``timeout``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCKS_GUARD:
        tlock = _THREAD_LOCKS.setdefault(str(path.absolute()), threading.Lock())
    if not tlock.acquire(timeout=-1 if timeout is None else timeout):
        raise EEGTransferError(f"{path}: still locked by another thread after {timeout:g} s")
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "id": secrets.token_hex(8)}
        _acquire(path, record, timeout, stale_after, poll)
        stop = threading.Event()
        beat = threading.Thread(target=_heartbeat, args=(path, record["id"], stop, heartbeat), daemon=True)
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()
            held = _read_lock(path)
            if held is not None and held[0].get("id") == record["id"]:
                path.unlink(missing_ok=True)
    finally:
        tlock.release()


class PretrainCache(KeyedCache):
    """Population bundles on disk (``<root>/pretrain/<key>/``), keyed by :func:`cache_key` of a
    specification; see :class:`KeyedCache`."""

    kind = "pretrain"
    marker = "bundle.json"

    def get(self, key: str) -> Bundle | None:
        """The entry ``key``, or ``None`` when absent or when it failed its integrity check.

        Only a proven integrity failure (:class:`~eegtransfer.errors.BundleError`:
        a checksum mismatch, a missing, truncated or unparsable file) removes
        the entry. Any other error, e.g. a broken torch install, is raised and
        the entry kept: wiping a whole cache for it would cost days of training.
        """
        from ..bundle import Bundle
        from ..errors import BundleError

        path = self.path(key)
        if not path.exists():
            return None
        try:
            return Bundle.load(path)
        except BundleError as err:
            logger.warning("pretrain cache entry %s failed its integrity check (%s); removing it to "
                           "rebuild", path, err)
            self._remove(path)
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
            # The specification goes in with the bundle: the entry appears whole, in one rename.
            bundle.save(path, overwrite=True,
                        extra_files={SPEC_FILE: json.dumps(json.loads(canonical_json(spec)), indent=2)})
            return bundle, False


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
    """:func:`eegtransfer.training.pretraining.pretrain` through a :class:`PretrainCache`.

    Parameters
    ----------
    X, labels, meta, recipe : as for :func:`~eegtransfer.training.pretraining.pretrain`.
    cache_dir : path | None
        See :func:`~eegtransfer.cachefolders.default_cache_dir`.
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
    from .engine import resolve_device
    from .pretraining import pretrain

    not_in_key = {"device", "progress", "provenance", "checkpoint"}
    device_type = resolve_device(kwargs.get("device", "auto")).type
    if data is None:
        subjects = None if meta is None else np.asarray(meta["subject"]).astype(str)
        data = {"sha256": data_fingerprint(np.asarray(X, np.float32), np.asarray(labels).astype(str),
                                           subjects)}
    spec = pretrain_spec(data=data, recipe=recipe, model=model, model_kwargs=model_kwargs,
                         hyperparameters={k: v for k, v in sorted(kwargs.items()) if k not in not_in_key},
                         seed=seed, classes=classes, device_type=device_type)

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
    :func:`eegtransfer.training.pretraining.pretrain_on_dataset` for the parameters.
    """
    from ..io.moabb import dataset_name, default_recipe, get_dataset, load_dataset
    from .engine import resolve_device
    from .pretraining import pretrain

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
                         seed=seed, classes=kwargs.get("classes"),
                         device_type=resolve_device(kwargs.get("device", "auto")).type)

    def train() -> Bundle:
        X, meta, rec = load_dataset(dataset, subjects, recipe)
        prov = {"dataset": name, "paradigm": getattr(dataset, "paradigm", None)}
        prov.update(kwargs.pop("provenance", None) or {})
        return pretrain(X, meta["label"].to_numpy(), meta, rec, model=model, seed=seed,
                        provenance=prov, **kwargs)

    return PretrainCache(cache_dir).get_or_train(spec, train)
