"""Cache folders shared by the pretrain cache and the trial cache (no heavy imports).

``<root>/<kind>/<key>/``: one folder per entry, keyed by the SHA-256 of a canonical
specification (:func:`eegtransfer.training.cache.cache_key`). The root is ``cache_dir``, else
``$EEGTRANSFER_CACHE``, else ``~/.cache/eegtransfer``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from .errors import EEGTransferError

ENV_VAR = "EEGTRANSFER_CACHE"


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$EEGTRANSFER_CACHE``, else ``~/.cache/eegtransfer``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "eegtransfer"


class KeyedCache:
    """Entries in ``<root>/<kind>/<key>/``, one folder each, keyed by
    :func:`~eegtransfer.training.cache.cache_key`.

    What the pretrain and the trial caches share: the folder, the key check, the listing of
    complete entries (those holding ``marker``), and removal. Subclasses set ``kind`` and
    ``marker`` and say how an entry is read and written.

    Parameters
    ----------
    root : path | None
        The cache folder (see :func:`default_cache_dir`).

    Attributes
    ----------
    hits, misses, rebuilt : int
        Counts for this instance: entries read, entries made, and unreadable entries that
        were removed and made again.
    """

    kind: str  # the subfolder of the cache root
    marker: str  # a file that every complete entry holds

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = default_cache_dir(root)
        self.hits = self.misses = self.rebuilt = 0

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.folder}: {len(self.keys())} entries; this session "
                f"{self.hits} hits, {self.misses} misses, {self.rebuilt} rebuilt>")

    @property
    def folder(self) -> Path:
        return self.root / self.kind

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
                      if p.is_dir() and not p.name.startswith(".") and (p / self.marker).exists())

    @staticmethod
    def _remove(path: Path) -> None:
        """Take an entry out of sight in one rename, then delete it."""
        trash = path.with_name(f".{path.name}.trash-{secrets.token_hex(4)}")
        try:
            os.rename(path, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def clear(self) -> int:
        """Remove every entry; return how many were removed."""
        keys = self.keys()
        for key in keys:
            self._remove(self.path(key))
        return len(keys)
