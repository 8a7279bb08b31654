"""The training rows an estimator keeps, each with a stable id.

Rows of ``fit`` get ids ``0..n-1``; rows added later get ids above the highest id ever
assigned, so ids are never reused and the rows stay sorted by id. Removed rows are
dropped from memory once their removal has been applied.
"""

import mmap
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from numba import njit


@dataclass
class TrainingRows:
    """Features, encoded targets and stable ids of the live training rows."""

    X: np.ndarray
    Y: np.ndarray
    ids: np.ndarray
    next_id: int

    @classmethod
    def from_fit(cls, X, Y):
        n_samples = X.shape[0]
        return cls(X, Y, np.arange(n_samples, dtype=np.int64), n_samples)

    def positions(self, ids):
        """Row positions of ``ids`` (live ids; the rows are sorted by id)."""
        return np.searchsorted(self.ids, ids)

    def unknown_ids(self, ids):
        """The ids of ``ids`` that are not live rows."""
        positions = np.minimum(self.positions(ids), self.ids.shape[0] - 1)
        return ids[self.ids[positions] != ids]

    def match(self, X, Y=None):
        """Ids of one live row equal to each row of ``X`` (and ``Y``), or -1.

        Duplicate training rows are consumed one per matching query row.
        """
        keys = _row_keys(self.X, self.Y if Y is not None else None)
        query = _row_keys(X, Y)
        candidates = np.flatnonzero(np.isin(keys, query))
        pool = defaultdict(list)
        for position in candidates[::-1]:
            pool[keys[position].tobytes()].append(self.ids[position])
        found = np.full(X.shape[0], -1, dtype=np.int64)
        for i, key in enumerate(query):
            matches = pool[key.tobytes()]
            if matches:
                found[i] = matches.pop()
        return found

    def without(self, ids):
        """The rows without ``ids``, compacted in place (this object is consumed).

        Equivalent to ``self.removal(ids).apply()``; see :class:`PendingRemoval`.
        """
        return self.removal(ids).apply()

    def removal(self, ids):
        """Prepare the removal of ``ids`` without touching any row (see below).

        Everything that can fail (lookups, allocations) happens here; the returned
        :class:`PendingRemoval` then compacts the rows in place with one compiled
        call, which Python cannot interrupt, and can undo it.
        """
        return PendingRemoval(self, self.positions(ids))

    def with_added(self, X, Y):
        new_ids = np.arange(self.next_id, self.next_id + X.shape[0], dtype=np.int64)
        rows = TrainingRows(
            np.concatenate([self.X, X]),
            np.concatenate([self.Y, Y]),
            np.concatenate([self.ids, new_ids]),
            self.next_id + X.shape[0],
        )
        return rows, new_ids


class PendingRemoval:
    """A removal of rows from a :class:`TrainingRows`, ready to apply and undo.

    Moving the kept rows over the removed ones avoids allocating a copy of ``X``
    per request; the freed tail is zeroed, so no removed row stays in memory.
    Read-only, non-contiguous or memory-mapped storage is copied instead, in the
    constructor, so that :meth:`apply` cannot fail half-way and never writes into
    a mapped file (even one mapped writeable, ``mmap_mode="r+"``). The removed rows
    are kept aside (they are few) until :meth:`forget`, so that :meth:`undo` can
    put every row back where it was: a request that fails after the compaction
    leaves the rows exactly as before.
    """

    def __init__(self, rows, positions):
        self.rows = rows
        self.positions = np.ascontiguousarray(positions, dtype=np.int64)
        arrays = (rows.X, rows.Y, rows.ids)
        self.in_place = all(
            a.flags.writeable and a.flags.c_contiguous and not maps_a_file(a)
            for a in arrays
        )
        # Set by the compiled compaction itself, so that it always tells whether the
        # rows were moved, even when an interrupt arrives right after the call.
        self.compacted = np.zeros(1, dtype=np.bool_)
        if self.in_place:
            self.removed = tuple(a[self.positions] for a in arrays)
            self.result = None
        else:
            self.removed = None
            self.result = TrainingRows(
                *(np.delete(a, self.positions, axis=0) for a in arrays), rows.next_id
            )

    def apply(self):
        """The rows without the removed ones (compacting the storage in place)."""
        if not self.in_place:
            return self.result
        rows = self.rows
        n_kept = _compact(rows.X, rows.Y, rows.ids, self.positions, self.compacted)
        return TrainingRows(
            rows.X[:n_kept], rows.Y[:n_kept], rows.ids[:n_kept], rows.next_id
        )

    def undo(self):
        """Put the removed rows back (after :meth:`apply`), in their old places."""
        if self.in_place:
            rows = self.rows
            _uncompact(
                rows.X, rows.Y, rows.ids, self.positions, *self.removed, self.compacted
            )

    def forget(self):
        """Drop the removed rows kept for :meth:`undo` (the removal is final)."""
        self.removed = None
        self.rows = None


@njit(cache=True)
def _compact(X, Y, ids, removed_positions, compacted):
    """Shift the rows not in ``removed_positions`` (sorted) to the front, in order.

    Sets ``compacted[0]`` (no-op when already set).
    """
    if compacted[0]:
        return X.shape[0] - removed_positions.shape[0]
    write = removed_positions[0]
    skip = 0
    for read in range(removed_positions[0], X.shape[0]):
        if skip < removed_positions.shape[0] and read == removed_positions[skip]:
            skip += 1
            continue
        X[write] = X[read]
        Y[write] = Y[read]
        ids[write] = ids[read]
        write += 1
    X[write:] = 0.0
    Y[write:] = 0.0
    compacted[0] = True
    return write


@njit(cache=True)
def _uncompact(
    X, Y, ids, removed_positions, removed_X, removed_Y, removed_ids, compacted
):
    """Undo :func:`_compact` (if ``compacted[0]``): spread the kept rows out again
    and put the removed ones back; clears ``compacted[0]``."""
    if not compacted[0]:
        return
    n = X.shape[0]
    n_removed = removed_positions.shape[0]
    read = n - n_removed - 1
    skip = n_removed - 1
    for write in range(n - 1, removed_positions[0] - 1, -1):
        if skip >= 0 and write == removed_positions[skip]:
            X[write] = removed_X[skip]
            Y[write] = removed_Y[skip]
            ids[write] = removed_ids[skip]
            skip -= 1
            continue
        X[write] = X[read]
        Y[write] = Y[read]
        ids[write] = ids[read]
        read -= 1
    compacted[0] = False


def maps_a_file(array):
    """Whether ``array``'s memory is (part of) a memory-mapped file."""
    while array is not None:
        if isinstance(array, mmap.mmap):
            return True
        array = getattr(array, "base", None)
    return False


def _row_keys(X, Y):
    """One hashable, sortable byte string per row (``-0.0`` folded into ``0.0``)."""
    parts = [X] if Y is None else [X, Y]
    block = np.ascontiguousarray(np.hstack(parts) + 0.0)
    return block.view(np.dtype((np.void, block.shape[1] * block.itemsize))).ravel()
