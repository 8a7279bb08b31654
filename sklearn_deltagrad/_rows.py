"""The training rows an estimator keeps, each with a stable id.

Rows of ``fit`` get ids ``0..n-1``; rows added later get ids above the highest id ever
assigned, so ids are never reused and the rows stay sorted by id. Removed rows are
dropped from memory once their removal has been applied.
"""

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

        Moving the kept rows over the removed ones avoids allocating a copy of ``X``
        per request; the freed tail is zeroed, so no removed row stays in memory.
        Read-only storage (e.g. memory-mapped) is copied instead.
        """
        positions = self.positions(ids)
        arrays = (self.X, self.Y, self.ids)
        if not all(a.flags.writeable and a.flags.c_contiguous for a in arrays):
            return TrainingRows(
                *(np.delete(a, positions, axis=0) for a in arrays), self.next_id
            )
        n_kept = _compact(self.X, self.Y, self.ids, positions)
        self.X[n_kept:] = 0.0
        self.Y[n_kept:] = 0.0
        return TrainingRows(
            self.X[:n_kept], self.Y[:n_kept], self.ids[:n_kept], self.next_id
        )

    def with_added(self, X, Y):
        new_ids = np.arange(self.next_id, self.next_id + X.shape[0], dtype=np.int64)
        rows = TrainingRows(
            np.concatenate([self.X, X]),
            np.concatenate([self.Y, Y]),
            np.concatenate([self.ids, new_ids]),
            self.next_id + X.shape[0],
        )
        return rows, new_ids


@njit(cache=True)
def _compact(X, Y, ids, removed_positions):
    """Shift the rows not in ``removed_positions`` (sorted) to the front, in order."""
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
    return write


def _row_keys(X, Y):
    """One hashable, sortable byte string per row (``-0.0`` folded into ``0.0``)."""
    parts = [X] if Y is None else [X, Y]
    block = np.ascontiguousarray(np.hstack(parts) + 0.0)
    return block.view(np.dtype((np.void, block.shape[1] * block.itemsize))).ravel()
