"""The training rows an estimator keeps, each with a stable id and a weight.

Rows of ``fit`` get ids ``0..n-1``; rows added later get ids above the highest id ever
assigned, so ids are never reused and the rows stay sorted by id. Removed rows are
dropped from memory once their removal has been applied. ``X`` is a dense array (in
the dtype it was given, float64 or float32) or a scipy CSR matrix.

Dense rows are the first rows of a larger zeroed buffer (see :func:`rows_with_room`):
an addition writes its rows into the spare rows after them instead of copying the
whole training set, and a removal's compaction frees rows there.
"""

import copy
import mmap
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numba import njit


def nonzeros_per_row(X):
    """Mean number of non-zero values per row of a dense or sparse ``X`` (for a
    sparse one, its stored values)."""
    n_stored = X.nnz if sp.issparse(X) else np.count_nonzero(X)
    return n_stored / max(X.shape[0], 1)


# Spare rows that a dense buffer gets when it is (re)allocated: one per this many
# rows, at least _MIN_ROOM. A buffer then grows geometrically, so an added row is
# copied a bounded number of times on average, and an addition of 0.1% of a9a's
# rows writes its 32 rows instead of copying 32 MB (1.15 ms timed alone). The
# spare rows are zero pages that the system maps only when they are written.
_ROWS_PER_SPARE_ROW = 16
_MIN_ROOM = 16


def rows_with_room(X, added=None):
    """A C-contiguous copy of the dense rows ``X`` (then ``added``), as the first
    rows of a zeroed buffer with spare rows after them (:func:`spare_rows`)."""
    n_rows = X.shape[0] + (0 if added is None else added.shape[0])
    capacity = n_rows + max(_MIN_ROOM, n_rows // _ROWS_PER_SPARE_ROW)
    buffer = np.zeros((capacity, X.shape[1]), dtype=X.dtype)
    buffer[: X.shape[0]] = X
    if added is not None:
        buffer[X.shape[0] : n_rows] = added
    return buffer[:n_rows]


def spare_rows(X):
    """How many rows of ``X``'s buffer follow ``X``: 0 unless ``X`` is the first
    rows of a C-contiguous buffer of the estimator's own memory (as from
    :func:`rows_with_room`, not a copy or a memory map of one)."""
    buffer = getattr(X, "base", None)  # CSR rows have no spare rows
    if (
        not isinstance(buffer, np.ndarray)
        or buffer.ndim != 2
        or buffer.dtype != X.dtype
        or buffer.shape[1] != X.shape[1]
        or not (buffer.flags.c_contiguous and X.flags.c_contiguous)
        or buffer.ctypes.data != X.ctypes.data
        or not writable_in_place(buffer)
    ):
        return 0
    return buffer.shape[0] - X.shape[0]


@dataclass
class TrainingRows:
    """Features, encoded targets, stable ids and weights of the live training rows.

    ``in_use`` (dense rows; not a field, since it describes the buffer rather than
    the rows) is shared by every state whose ``X`` views the same buffer: a
    one-element array with the number of the buffer's rows that any of them may
    hold. An addition writes into the spare rows only where it extends a state that
    holds all of them, and claims its rows before it writes, so two states (an
    estimator and its shallow copy) never write the same spare rows.
    """

    X: np.ndarray
    Y: np.ndarray
    ids: np.ndarray
    next_id: int
    weights: np.ndarray
    in_use = None

    @classmethod
    def from_fit(cls, X, Y, weights):
        n_samples = X.shape[0]
        rows = cls(X, Y, np.arange(n_samples, dtype=np.int64), n_samples, weights)
        if not sp.issparse(X):
            rows.in_use = np.array([n_samples], dtype=np.int64)
        return rows

    def __deepcopy__(self, memo):
        # A copy keeps spare rows where the original has them, so that it adds rows
        # as the original would (pickles hold the rows alone, and the first addition
        # after loading one makes the room).
        copied = copy.copy(self)
        memo[id(self)] = copied
        room = spare_rows(self.X) > 0
        for name, value in vars(self).items():
            if not (room and name in ("X", "in_use")):
                setattr(copied, name, copy.deepcopy(value, memo))
        if room:
            copied.X = rows_with_room(self.X)
            copied.in_use = np.array([self.X.shape[0]], dtype=np.int64)
        return copied

    def __setstate__(self, state):
        # Pickles from before sample weights: every row weighs 1.
        self.__dict__.update(state)
        if self.__dict__.get("weights") is None:
            self.weights = np.ones(self.ids.shape[0])

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
        query = _row_keys(_like(X, self.X), Y)
        candidates = np.flatnonzero(np.isin(keys, query))
        pool = defaultdict(list)
        for position in candidates[::-1]:
            pool[_as_bytes(keys[position])].append(self.ids[position])
        found = np.full(X.shape[0], -1, dtype=np.int64)
        for i, key in enumerate(query):
            matches = pool[_as_bytes(key)]
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

    def with_added(self, X, Y, weights):
        """The rows with ``X`` (converted to the stored layout and dtype) added."""
        new_ids = np.arange(self.next_id, self.next_id + X.shape[0], dtype=np.int64)
        X = _like(X, self.X)
        in_use = None
        if sp.issparse(self.X):
            stored = sp.vstack([self.X, X], format="csr")
        else:
            stored, in_use = self._dense_with_added(X)
        rows = TrainingRows(
            stored,
            np.concatenate([self.Y, Y]),
            np.concatenate([self.ids, new_ids]),
            self.next_id + X.shape[0],
            np.concatenate([self.weights, weights]),
        )
        rows.in_use = in_use
        return rows, new_ids

    def _dense_with_added(self, X):
        """The dense rows with ``X`` after them, written into the spare rows of the
        buffer where this state is its newest and they fit (claiming them), into
        a new buffer with room otherwise; and the new rows' ``in_use``."""
        n_rows, n_added = self.X.shape[0], X.shape[0]
        in_use = self.in_use
        if in_use is not None and in_use[0] == n_rows and spare_rows(self.X) >= n_added:
            in_use[0] = n_rows + n_added
            stored = self.X.base[: n_rows + n_added]
            stored[n_rows:] = X
            return stored, in_use
        stored = rows_with_room(self.X, X)
        return stored, np.array([stored.shape[0]], dtype=np.int64)

    def discard_added(self, n_added):
        """Undo :meth:`with_added` of the rows that made this state, when its request
        fails: their spare rows are zeroed and given back (no-op where the buffer
        has a newer state)."""
        if self.in_use is None or self.in_use[0] != self.X.shape[0]:
            return
        n_rows = self.X.shape[0] - n_added
        self.X[n_rows:] = 0
        self.in_use[0] = n_rows


class PendingRemoval:
    """A removal of rows from a :class:`TrainingRows`, ready to apply and undo.

    Moving the kept rows over the removed ones (for CSR rows, their entries, with
    ``indptr`` rewritten) avoids allocating a copy of ``X`` per request; the freed
    tail is zeroed, so no removed row stays in memory.
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
        arrays = (rows.X, rows.Y, rows.ids, rows.weights)
        sparse = sp.issparse(rows.X)
        storage = (
            (rows.X.data, rows.X.indices, rows.X.indptr, *arrays[1:])
            if sparse
            else arrays
        )
        self.in_place = all(
            writable_in_place(a) and a.flags.c_contiguous for a in storage
        )
        # Set by the compiled compaction itself, so that it always tells whether the
        # rows were moved, even when an interrupt arrives right after the call.
        self.compacted = np.zeros(1, dtype=np.bool_)
        if self.in_place:
            removed_X = rows.X[self.positions]
            if sparse:
                # The removed rows' entries, and every row's old extent (the undo
                # moves the kept rows back to it).
                removed_X = (removed_X.data, removed_X.indices, removed_X.indptr)
                self.old_indptr = rows.X.indptr.copy()
            self.removed = (removed_X, *(a[self.positions] for a in arrays[1:]))
            self.result = None
        else:
            self.removed = None
            keep = np.ones(rows.ids.shape[0], dtype=bool)
            keep[self.positions] = False
            X, Y, ids, weights = (a[keep] for a in arrays)
            self.result = TrainingRows(X, Y, ids, rows.next_id, weights)

    def apply(self):
        """The rows without the removed ones (compacting the storage in place)."""
        if not self.in_place:
            return self.result
        rows = self.rows
        if sp.issparse(rows.X):
            X = rows.X
            n_kept, n_entries = _compact_csr(
                X.data, X.indices, X.indptr, rows.Y, rows.ids, rows.weights,
                self.positions, self.compacted,
            )  # fmt: skip
            # Views of the compacted arrays (same index dtype: scipy copies none).
            X = sp.csr_matrix(
                (X.data[:n_entries], X.indices[:n_entries], X.indptr[: n_kept + 1]),
                shape=(n_kept, X.shape[1]),
                copy=False,
            )
        else:
            n_kept = _compact(
                rows.X, rows.Y, rows.ids, rows.weights, self.positions, self.compacted
            )
            X = rows.X[:n_kept]
            # The freed (zeroed) rows join the spare rows after the kept ones.
            if rows.in_use is not None and rows.in_use[0] == rows.X.shape[0]:
                rows.in_use[0] = n_kept
        kept = TrainingRows(
            X, rows.Y[:n_kept], rows.ids[:n_kept], rows.next_id, rows.weights[:n_kept]
        )
        kept.in_use = rows.in_use
        return kept

    def undo(self):
        """Put the removed rows back (after :meth:`apply`), in their old places."""
        if self.in_place and sp.issparse(self.rows.X):
            rows = self.rows
            X = rows.X
            _uncompact_csr(
                X.data, X.indices, X.indptr, rows.Y, rows.ids, rows.weights,
                self.positions, self.old_indptr, *self.removed[0],
                *self.removed[1:], self.compacted,
            )  # fmt: skip
        elif self.in_place:
            rows = self.rows
            n_kept = rows.X.shape[0] - self.positions.shape[0]
            if rows.in_use is not None and rows.in_use[0] == n_kept:
                rows.in_use[0] = rows.X.shape[0]
            _uncompact(
                rows.X,
                rows.Y,
                rows.ids,
                rows.weights,
                self.positions,
                *self.removed,
                self.compacted,
            )

    def forget(self):
        """Drop the removed rows kept for :meth:`undo` (the removal is final)."""
        self.removed = None
        self.rows = None


@njit(cache=True)
def _compact(X, Y, ids, weights, removed_positions, compacted):
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
        weights[write] = weights[read]
        write += 1
    X[write:] = 0.0
    Y[write:] = 0.0
    weights[write:] = 0.0
    compacted[0] = True
    return write


@njit(cache=True)
def _uncompact(
    X,
    Y,
    ids,
    weights,
    removed_positions,
    removed_X,
    removed_Y,
    removed_ids,
    removed_weights,
    compacted,
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
            weights[write] = removed_weights[skip]
            skip -= 1
            continue
        X[write] = X[read]
        Y[write] = Y[read]
        ids[write] = ids[read]
        weights[write] = weights[read]
        read -= 1
    compacted[0] = False


@njit(cache=True)
def _compact_csr(data, indices, indptr, Y, ids, weights, removed_positions, compacted):
    """:func:`_compact` for CSR rows: the kept rows' entries move to the front of
    ``data``/``indices`` and ``indptr`` is rewritten, in one forward pass (a write
    never overtakes a read). Returns ``(rows kept, entries kept)``; the freed
    entries are zeroed."""
    n = indptr.shape[0] - 1
    n_kept = n - removed_positions.shape[0]
    if compacted[0]:
        return n_kept, indptr[n_kept]
    first = removed_positions[0]
    write_row = first
    write_entry = indptr[first]
    read_lo = indptr[first]
    skip = 0
    for read in range(first, n):
        # indptr[read + 1] is read before any write reaches it (writes stay at or
        # below ``read`` once the first removed row has been skipped).
        read_hi = indptr[read + 1]
        if skip < removed_positions.shape[0] and read == removed_positions[skip]:
            skip += 1
        else:
            for e in range(read_lo, read_hi):
                data[write_entry] = data[e]
                indices[write_entry] = indices[e]
                write_entry += 1
            Y[write_row] = Y[read]
            ids[write_row] = ids[read]
            weights[write_row] = weights[read]
            write_row += 1
            indptr[write_row] = write_entry
        read_lo = read_hi
    data[write_entry:] = 0.0
    indices[write_entry:] = 0
    indptr[write_row + 1 :] = write_entry
    Y[write_row:] = 0.0
    weights[write_row:] = 0.0
    compacted[0] = True
    return write_row, write_entry


@njit(cache=True)
def _uncompact_csr(
    data,
    indices,
    indptr,
    Y,
    ids,
    weights,
    removed_positions,
    old_indptr,
    removed_data,
    removed_indices,
    removed_indptr,
    removed_Y,
    removed_ids,
    removed_weights,
    compacted,
):
    """Undo :func:`_compact_csr` (if ``compacted[0]``): back to front, every kept row
    returns to its old extent (``old_indptr``) and the removed rows are put back;
    clears ``compacted[0]``."""
    if not compacted[0]:
        return
    n = old_indptr.shape[0] - 1
    n_removed = removed_positions.shape[0]
    read = n - n_removed - 1
    skip = n_removed - 1
    for write in range(n - 1, removed_positions[0] - 1, -1):
        lo = old_indptr[write]
        n_entries = old_indptr[write + 1] - lo
        if skip >= 0 and write == removed_positions[skip]:
            _copy_entries_back_to_front(
                data, indices, lo, removed_data, removed_indices,
                removed_indptr[skip], n_entries,
            )  # fmt: skip
            Y[write] = removed_Y[skip]
            ids[write] = removed_ids[skip]
            weights[write] = removed_weights[skip]
            skip -= 1
            continue
        # The old extent never starts before the compacted one.
        _copy_entries_back_to_front(
            data, indices, lo, data, indices, indptr[read], n_entries
        )
        Y[write] = Y[read]
        ids[write] = ids[read]
        weights[write] = weights[read]
        read -= 1
    indptr[:] = old_indptr
    compacted[0] = False


@njit(cache=True, inline="always")
def _copy_entries_back_to_front(data, indices, start, from_data, from_indices, at, n):
    """Entries ``at..at+n-1`` of ``from_data``/``from_indices`` to ``start..`` of
    ``data``/``indices``, the last first (right for overlapping ranges with
    ``start >= at``)."""
    for e in range(n - 1, -1, -1):
        data[start + e] = from_data[at + e]
        indices[start + e] = from_indices[at + e]


def writable_in_place(array):
    """Whether ``array`` (or ``None``) may be written in place: the estimator's
    own memory, neither read-only nor mapped from a file."""
    return array is None or (array.flags.writeable and not maps_a_file(array))


def maps_a_file(array):
    """Whether ``array``'s memory is (part of) a memory-mapped file."""
    while array is not None:
        if isinstance(array, mmap.mmap):
            return True
        array = getattr(array, "base", None)
    return False


def _like(X, stored):
    """``X`` in the layout (dense or CSR) and dtype of the ``stored`` rows."""
    if sp.issparse(stored):
        return sp.csr_matrix(X, dtype=stored.dtype)
    return np.asarray(X, dtype=stored.dtype)


def _row_keys(X, Y):
    """One hashable, sortable byte string per row (``-0.0`` folded into ``0.0``).

    Sparse rows are keyed by their sorted non-zero columns and values, so that no
    row is densified.
    """
    if sp.issparse(X):
        return _sparse_row_keys(X, Y)
    parts = [X] if Y is None else [X, Y]
    block = np.ascontiguousarray(np.hstack(parts) + 0.0)
    return block.view(np.dtype((np.void, block.shape[1] * block.itemsize))).ravel()


def _as_bytes(key):
    return key if isinstance(key, bytes) else key.tobytes()


def _sparse_row_keys(X, Y):
    X = sp.csr_matrix(X, copy=True)
    X.sum_duplicates()  # also sorts the column indices
    X.data = X.data + 0.0
    X.eliminate_zeros()
    keys = np.empty(X.shape[0], dtype=object)
    for i in range(X.shape[0]):
        lo, hi = X.indptr[i], X.indptr[i + 1]
        key = X.indices[lo:hi].astype(np.int64).tobytes() + X.data[lo:hi].tobytes()
        if Y is not None:
            key += b"|" + np.ascontiguousarray(Y[i] + 0.0).tobytes()
        keys[i] = b"%d:" % (hi - lo) + key
    return keys
