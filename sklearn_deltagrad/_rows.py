"""The training rows an estimator keeps, each with a stable id.

Rows of ``fit`` get ids ``0..n-1``; rows added later get ids above the highest id ever
assigned, so ids are never reused and the rows stay sorted by id. Removed rows are
dropped from memory once their removal has been applied.
"""

from collections import defaultdict
from dataclasses import dataclass

import numpy as np


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

    def unknown_ids(self, ids):
        """The ids of ``ids`` that are not live rows."""
        return np.setdiff1d(ids, self.ids)

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
        keep = ~np.isin(self.ids, ids)
        return TrainingRows(self.X[keep], self.Y[keep], self.ids[keep], self.next_id)

    def with_added(self, X, Y):
        new_ids = np.arange(self.next_id, self.next_id + X.shape[0], dtype=np.int64)
        rows = TrainingRows(
            np.concatenate([self.X, X]),
            np.concatenate([self.Y, Y]),
            np.concatenate([self.ids, new_ids]),
            self.next_id + X.shape[0],
        )
        return rows, new_ids


def _row_keys(X, Y):
    """One hashable, sortable byte string per row (``-0.0`` folded into ``0.0``)."""
    parts = [X] if Y is None else [X, Y]
    block = np.ascontiguousarray(np.hstack(parts) + 0.0)
    return block.view(np.dtype((np.void, block.shape[1] * block.itemsize))).ravel()
