"""Trials that stay on disk: rows of a memory-mapped array read as training needs them.

A population larger than memory arrives as a read-only ``np.memmap`` (from
:func:`eegtransfer.io.load_dataset` with ``cache=``, or ``np.load(path, mmap_mode="r")``).
:class:`DiskTrials` is a view of some of its rows, optionally Euclidean-aligned
per subject, that is never read whole: :meth:`DiskTrials.read` fetches the rows a
batch needs into a buffer the caller gives (on CUDA, a pinned staging buffer).

Rows are read with ``os.preadv`` in file order (sorted, for locality) but land
in the order asked for, so a batch holds the same trials in the same order as
indexing an in-memory array would. ``preadv`` maps none of the file into the
process: its resident memory stays flat however large the file is (the
kernel's page cache keeps what was read and gives it back under pressure), and
it releases the GIL, so a background thread can read the next batch while the
current one trains (:class:`eegtransfer.training.engine._StreamBatcher`).
Where ``preadv`` is missing (Windows), or for an in-memory array, rows are
gathered by numpy indexing instead.
"""

from __future__ import annotations

import mmap
import os
import weakref
from typing import Any

import numpy as np

from ..errors import EEGTransferError

_PREADV = hasattr(os, "preadv")


def is_on_disk(X: Any) -> bool:
    """Whether ``X`` is trials on disk: a ``np.memmap`` or a :class:`DiskTrials`."""
    return isinstance(X, (np.memmap, DiskTrials))


def _file_layout(a: np.ndarray) -> tuple[str, int, int] | None:
    """``(file name, byte position of row 0, bytes between rows)`` of a memmap with contiguous
    native float32 rows (a whole ``np.load(..., mmap_mode="r")`` array or a view of its rows),
    else ``None``."""
    if not isinstance(a, np.memmap) or not a.filename or a.dtype != np.dtype("=f4") or a.ndim < 1:
        return None
    base = a
    while isinstance(base.base, np.ndarray):  # views of views: back to the array numpy mapped
        base = base.base
    if not isinstance(base, np.memmap) or not isinstance(base.base, mmap.mmap):
        return None
    row_strides = np.empty(a.shape[1:], dtype=a.dtype).strides
    if a.strides[1:] != row_strides:
        return None
    shift = a.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    return str(a.filename), int(base.offset) + shift, int(a.strides[0])


class _Reader:
    """A read-only file descriptor, closed when the last view using it is gone."""

    def __init__(self, filename: str, start: int, stride: int) -> None:
        self.filename, self.start, self.stride = filename, start, stride
        self.fd = os.open(filename, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        weakref.finalize(self, os.close, self.fd)

    def __reduce__(self) -> tuple[Any, ...]:  # another process opens the file again
        return _Reader, (self.filename, self.start, self.stride)


class DiskTrials:
    """A read-only view of rows of a trial array on disk, read a batch at a time.

    Parameters
    ----------
    source : ndarray | np.memmap | DiskTrials
        Trials, shape (n_trials, n_chans, n_times). A memmap stays on disk;
        an in-memory array works too (rows gathered by indexing).
    rows : array of int | None
        The rows of ``source`` this view holds, in this order (``None``: all).

    Notes
    -----
    Indexing (``view[i]``, ``view[a:b]``, ``view[index_array]``) reads the rows
    and returns an in-memory float32 array; :meth:`subset` returns another view
    without reading anything. ``np.asarray(view)`` reads it all.
    """

    def __init__(self, source: Any, rows: Any = None) -> None:
        if isinstance(source, DiskTrials):
            base_rows = source._base_rows(np.arange(len(source)) if rows is None else rows)
            self._src, self._reader, self._align = source._src, source._reader, source._align
            self._rows: np.ndarray | None = base_rows
            return
        if source.ndim != 3:
            raise EEGTransferError(f"expected trials of shape (n_trials, n_chans, n_times), got {source.shape}")
        self._src = source
        layout = _file_layout(source) if _PREADV else None
        self._reader = None if layout is None else _Reader(*layout)
        self._align: tuple[np.ndarray, np.ndarray] | None = None
        self._rows = None if rows is None else self._check_rows(rows, len(source))

    @staticmethod
    def _check_rows(rows: Any, n: int) -> np.ndarray:
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64).reshape(-1)
        if len(rows) and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"row index out of range for {n} trials")
        return np.where(rows < 0, rows + n, rows)

    def _base_rows(self, positions: Any) -> np.ndarray:
        pos = self._check_rows(positions, len(self))
        return pos if self._rows is None else self._rows[pos]

    @property
    def shape(self) -> tuple[int, ...]:
        n = len(self._src) if self._rows is None else len(self._rows)
        return (n, *self._src.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return 3

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * 4

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        where = "on disk" if self._reader is not None else "in memory"
        return f"<DiskTrials {self.shape} float32, {where}{', aligned' if self._align else ''}>"

    def subset(self, positions: Any) -> DiskTrials:
        """The rows at ``positions`` (ints or a boolean mask) of this view, as a view: nothing is read."""
        return DiskTrials(self, positions)

    def read(self, positions: Any, out: np.ndarray | None = None) -> np.ndarray:
        """The rows at ``positions``, in that order, as float32 (into ``out`` when given).

        Rows are fetched in file order, each straight into its place in ``out``.
        """
        rows = self._base_rows(positions)
        shape = (len(rows), *self.shape[1:])
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise EEGTransferError(f"out must be a C-contiguous float32 array of shape {shape}")
        order = np.argsort(rows, kind="stable")
        if self._reader is not None:
            r, size = self._reader, out[0].nbytes if len(out) else 0
            for k in order:
                if os.preadv(r.fd, [out[k]], r.start + int(rows[k]) * r.stride) != size:
                    raise EEGTransferError(f"{self._src.filename}: short read at row {rows[k]}; "
                                           "the file was truncated")
        elif len(rows):
            out[order] = self._src[rows[order]]
        if self._align is not None:
            from ..adaptation.alignment import apply_alignment

            codes, W = self._align
            g = codes[rows]
            for k in np.unique(g):
                m = g == k
                out[m] = apply_alignment(out[m], W[k])
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self.read([key])[0]
        if isinstance(key, slice):
            return self.read(np.arange(len(self))[key])
        return self.read(key)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        X = self.read(np.arange(len(self)))
        return X if dtype is None else X.astype(dtype, copy=False)

    def iter_chunks(self, size: int = 256) -> Any:
        """The trials in order, ``size`` at a time, as in-memory arrays."""
        for i in range(0, len(self), size):
            yield self[i:i + size]

    def aligned(self, groups: Any) -> DiskTrials:
        """This view with each group (subject) Euclidean-aligned by its own reference.

        The same trials as :func:`eegtransfer.adaptation.alignment.align_per_group`,
        without a new array: each group's reference matrix is computed from its
        trials, read one group at a time (one subject in memory, not the
        population), and rows are aligned as they are read.
        """
        from ..adaptation.alignment import alignment_matrix

        if self._align is not None:
            raise EEGTransferError("these trials are already aligned")
        groups = np.asarray(groups)
        if len(groups) != len(self):
            raise EEGTransferError(f"{len(groups)} group labels for {len(self)} trials")
        uniq, inverse = np.unique(groups, return_inverse=True)
        W = np.stack([alignment_matrix(self.read(np.flatnonzero(inverse == k))) for k in range(len(uniq))])
        codes = np.full(len(self._src), -1, dtype=np.int32)
        codes[self._base_rows(np.arange(len(self)))] = inverse
        view = DiskTrials(self)
        view._align = (codes, W)
        return view

    def flat_bytes(self, lo: int, hi: int) -> bytes:
        """Bytes ``lo:hi`` of the trials laid out as one C-ordered float32 array (for hashing)."""
        row = int(np.prod(self.shape[1:])) * 4
        first, last = lo // row, (hi - 1) // row + 1
        block = self.read(np.arange(first, last))
        return block.reshape(-1).view(np.uint8)[lo - first * row:hi - first * row].tobytes()
