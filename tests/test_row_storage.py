"""Dense training rows are the first rows of a buffer with spare rows after them.

Additions write their rows there instead of copying the whole training set, a
removal's compaction frees rows there, and two states that view one buffer never
write the same spare rows. None of it changes a model: an estimator with spare rows
and one without (loaded from a pickle) serve requests bit for bit alike.
"""

import copy
import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_array_equal
from sklearn.datasets import make_classification, make_regression

import sklearn_deltagrad._base as base_module
from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge
from sklearn_deltagrad._rows import PendingRemoval, spare_rows

from .test_reliability import Boom, _after, _raiser

N_FIT = 200


def _fitted(kind):
    if kind == "clf":
        X, y = make_classification(
            n_samples=400, n_features=6, n_informative=4, n_classes=3, random_state=0
        )
        est = DeltaGradLogisticRegression(random_state=0, max_iter=4, batch_size=64)
    else:
        X, y = make_regression(n_samples=400, n_features=6, random_state=0)
        est = DeltaGradRidge(random_state=0, max_iter=4, batch_size=64)
    return est.fit(X[:N_FIT], y[:N_FIT]), X, y


def _buffer(est):
    return est._rows.X.base


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_addition_writes_into_the_spare_rows(kind):
    est, X, y = _fitted(kind)
    buffer = _buffer(est)
    assert spare_rows(est._rows.X) >= 16
    # A pickle holds the rows alone: its first addition makes a new buffer.
    loaded = pickle.loads(pickle.dumps(est))
    assert spare_rows(loaded._rows.X) == 0
    for model in (est, loaded):
        model.partial_fit(X[N_FIT : N_FIT + 5], y[N_FIT : N_FIT + 5])
    assert _buffer(est) is buffer
    assert_array_equal(est._rows.X, X[: N_FIT + 5])
    assert est._rows.in_use[0] == N_FIT + 5
    assert spare_rows(loaded._rows.X) > 0
    assert_array_equal(loaded._rows.X, X[: N_FIT + 5])
    assert_array_equal(loaded.coef_, est.coef_)
    assert_array_equal(loaded.intercept_, est.intercept_)


def test_additions_fill_the_room_then_move_to_a_larger_buffer():
    est, X, y = _fitted("clf")
    buffers = [_buffer(est)]
    n_rows = N_FIT
    for _ in range(10):
        est.partial_fit(X[n_rows : n_rows + 7], y[n_rows : n_rows + 7])
        n_rows += 7
        if _buffer(est) is not buffers[-1]:
            buffers.append(_buffer(est))
        assert_array_equal(est._rows.X, X[:n_rows])
        assert est._rows.in_use[0] == n_rows
    # 16 spare rows after fit: two additions of 7 fit, the third moves.
    assert len(buffers) >= 2
    assert buffers[1].shape[0] > N_FIT + 21
    assert_array_equal(buffers[-1][n_rows:], 0.0)


def test_removal_frees_rows_that_a_later_addition_uses():
    est, X, y = _fitted("clf")
    buffer = _buffer(est)
    est.partial_unfit(indices=[3, 50, 120])
    assert est._rows.in_use[0] == N_FIT - 3
    assert_array_equal(buffer[N_FIT - 3 : N_FIT], 0.0)
    est.partial_fit(X[N_FIT : N_FIT + 4], y[N_FIT : N_FIT + 4])
    assert _buffer(est) is buffer
    kept = np.delete(np.arange(N_FIT + 4), [3, 50, 120])
    assert_array_equal(est._rows.X, X[kept])


def test_states_sharing_a_buffer_never_write_the_same_spare_rows():
    est, X, _ = _fitted("clf")
    rows = est._rows
    Y = np.zeros((2, rows.Y.shape[1]))
    first, _ = rows.with_added(X[300:302], Y, np.ones(2))
    # The same old state extended again (as by a shallow copy of the estimator):
    # the spare rows are taken, so it gets a buffer of its own.
    second, _ = rows.with_added(X[310:312], Y, np.ones(2))
    assert first.X.base is rows.X.base
    assert second.X.base is not rows.X.base
    assert_array_equal(first.X, np.vstack([X[:N_FIT], X[300:302]]))
    assert_array_equal(second.X, np.vstack([X[:N_FIT], X[310:312]]))
    # And the first, which holds every claimed row, extends in place again.
    third, _ = first.with_added(X[320:321], Y[:1], np.ones(1))
    assert third.X.base is rows.X.base
    assert_array_equal(third.X[-1], X[320])


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt, Boom])
def test_failed_addition_gives_its_spare_rows_back(error, monkeypatch):
    est, X, y = _fitted("clf")
    buffer = _buffer(est)
    with monkeypatch.context() as patch:
        patch.setattr(base_module, "apply_change", _raiser(error))
        with pytest.raises(error):
            est.partial_fit(X[N_FIT : N_FIT + 3], y[N_FIT : N_FIT + 3])
    assert est._rows.in_use[0] == N_FIT
    # The rows that were not added are not kept in memory either.
    assert_array_equal(buffer[N_FIT:], 0.0)
    est.partial_fit(X[N_FIT : N_FIT + 3], y[N_FIT : N_FIT + 3])
    assert _buffer(est) is buffer


def test_failed_removal_keeps_the_rows_in_use(monkeypatch):
    est, X, y = _fitted("clf")
    with monkeypatch.context() as patch:
        patch.setattr(PendingRemoval, "apply", _after(PendingRemoval.apply, Boom))
        with pytest.raises(Boom):
            est.partial_unfit(indices=[3, 50])
    assert est._rows.in_use[0] == N_FIT
    assert_array_equal(est._rows.X, X[:N_FIT])


def test_copies_keep_their_own_spare_rows_and_pickles_hold_none():
    est, X, y = _fitted("clf")
    twin = copy.deepcopy(est)
    assert spare_rows(twin._rows.X) == spare_rows(est._rows.X)
    assert _buffer(twin) is not _buffer(est)
    assert twin._rows.in_use is not est._rows.in_use
    twin.partial_fit(X[N_FIT : N_FIT + 2], y[N_FIT : N_FIT + 2])
    assert_array_equal(est._rows.X, X[:N_FIT])
    assert_array_equal(_buffer(est)[N_FIT:], 0.0)
    assert len(pickle.dumps(est._rows.X)) < est._rows.X.nbytes + 1000


def test_sparse_rows_have_no_spare_rows_and_copy_as_before():
    X, y = make_classification(n_samples=300, n_features=8, random_state=0)
    X[np.abs(X) < 0.8] = 0.0
    X = sp.csr_matrix(X)
    est = DeltaGradLogisticRegression(random_state=0, max_iter=4, batch_size=64)
    est.fit(X[:N_FIT], y[:N_FIT])
    assert spare_rows(est._rows.X) == 0
    assert est._rows.in_use is None
    twin = copy.deepcopy(est)
    for model in (est, twin):
        model.partial_fit(X[N_FIT : N_FIT + 3], y[N_FIT : N_FIT + 3])
    assert_array_equal(twin._rows.X.toarray(), X[: N_FIT + 3].toarray())
    assert_array_equal(twin.coef_, est.coef_)
