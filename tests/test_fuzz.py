"""Fuzzing the requests with hypothesis (issue #6).

Random shapes, dtypes, NaN/inf, empty, 1-D/3-D, non-contiguous and read-only arrays,
ids out of range, negative, repeated, float or bool, already-removed rows, unseen
labels and wrong feature counts. Every case either works correctly or raises a
``ValueError``/``TypeError`` with a message; a failed request leaves the estimator
exactly as it was, and no request touches the caller's arrays. Each test reports how
many cases it tried (run with ``-s`` to see the counts).
"""

import copy
import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .test_bad_input import _assert_same, assert_unchanged, fitted, snapshot

N_FEATURES = 4
LIVE = np.arange(2, 105)  # ids live in fitted(kind); 0 and 1 were removed
FUZZ_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TRIED = {}
SNAPSHOTS = {}


@functools.cache
def _base(kind):
    est, X, y = fitted(kind)
    SNAPSHOTS[kind] = snapshot(est)
    return est, X, y


def _fresh(kind):
    est, X, y = _base(kind)
    return copy.deepcopy(est), X, y


def _run(est, method, args, kwargs):
    """Call; on failure check the error type, message and that nothing changed.

    Returns the exception, or None when the call succeeded. The caller's arguments
    are always checked to be untouched.
    """
    passed = copy.deepcopy((args, kwargs))
    flags = [
        a.flags.writeable
        for a in (*args, *kwargs.values())
        if isinstance(a, np.ndarray)
    ]
    before = snapshot(est)
    try:
        getattr(est, method)(*args, **kwargs)
        error = None
    except (ValueError, TypeError) as caught:
        error = caught
        assert len(str(error)) > 15, f"unclear message: {error!r}"
        assert_unchanged(est, before)
    _assert_same(_comparable((args, kwargs)), _comparable(passed), "caller's args")
    assert flags == [
        a.flags.writeable
        for a in (*args, *kwargs.values())
        if isinstance(a, np.ndarray)
    ]
    return error


def _comparable(value):
    """Object arrays as nested tuples (``_assert_same`` treats NaN equal there)."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        return ("object array", value.shape, tuple(value.ravel().tolist()))
    if isinstance(value, list | tuple):
        return type(value)(_comparable(v) for v in value)
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    return value


def _layout(draw, A):
    """``A`` as is, non-contiguous, Fortran-ordered, read-only, or a list."""
    how = draw(st.sampled_from(["plain", "strided", "fortran", "readonly", "list"]))
    if how == "strided" and A.ndim >= 1:
        wide = np.repeat(A, 2, axis=-1) if A.ndim > 1 else np.repeat(A, 2)
        return wide[..., ::2] if A.ndim > 1 else wide[::2]
    if how == "fortran":
        return np.asfortranarray(A)
    if how == "readonly":
        A = A.copy()
        A.flags.writeable = False
        return A
    if how == "list":
        return A.tolist()
    return A


# ------------------------------------------------------------------ indices
@st.composite
def index_requests(draw):
    kind = draw(st.sampled_from(["clf", "reg"]))
    shape = draw(
        st.sampled_from(["1d", "1d", "1d", "1d", "empty", "0d", "2d", "scalar"])
    )
    n = draw(st.integers(1, 6))
    if draw(st.booleans()):
        # Live ids, once each (valid unless the layout or dtype spoils them).
        pool = st.lists(st.integers(2, 104), min_size=n, max_size=n, unique=True)
    else:
        edge = st.integers(-5, 115) | st.sampled_from([0, 1, 2, 104, 105])
        pool = st.lists(edge, min_size=n, max_size=n)
    values = np.array(draw(pool), dtype=np.int64)
    if draw(st.integers(0, 3)) == 0:
        values = np.concatenate([values, values[:1]])  # a repeated id
    dtype = draw(
        st.sampled_from(
            ["int64", "int64", "int32", "int8", "uint16", "float64", "bool", "str"]
        )
    )
    if dtype == "str":
        ids = values.astype(str)
    elif dtype == "uint16":
        ids = np.abs(values).astype(np.uint16)
    else:
        ids = values.astype(dtype)
    if shape == "empty":
        ids = ids[:0]
    elif shape == "0d":
        ids = np.asarray(ids[0])
    elif shape == "2d":
        ids = ids.reshape(1, -1)
    elif shape == "scalar":
        ids = ids[0].item()
    elif shape == "1d":
        ids = _layout(draw, ids)
    return kind, ids


@FUZZ_SETTINGS
@given(index_requests())
def _fuzz_indices(case):
    TRIED["indices"] = TRIED.get("indices", 0) + 1
    kind, ids = case
    est, X, y = _fresh(kind)
    error = _run(est, "partial_unfit", (), {"indices": ids})
    array = np.asarray(ids)
    valid = (
        array.ndim == 1
        and array.size > 0
        and array.dtype.kind in "iu"
        and np.unique(array).size == array.size
        and np.isin(array, LIVE).all()
    )
    if not valid:
        assert error is not None, f"accepted bad ids {ids!r}"
        return
    if error is not None:
        # The only valid ids a request may refuse: emptying a class.
        assert "no training rows of class" in str(error), error
        return
    TRIED["indices-ok"] = TRIED.get("indices-ok", 0) + 1
    expected = np.setdiff1d(LIVE, array)
    np.testing.assert_array_equal(est.sample_ids_, expected)
    np.testing.assert_array_equal(est._rows.ids, expected)
    np.testing.assert_array_equal(est._rows.X, X[expected])


def test_fuzz_indices():
    _fuzz_indices()
    print(
        f"\nfuzz: {TRIED['indices']} index requests tried, "
        f"{TRIED.get('indices-ok', 0)} valid and served"
    )
    assert TRIED["indices"] >= 200 and TRIED.get("indices-ok", 0) >= 10


# -------------------------------------------------------------- added rows
@st.composite
def add_requests(draw):
    kind = draw(st.sampled_from(["clf", "reg"]))
    n = draw(st.integers(0, 5))
    n_features = draw(st.sampled_from([N_FEATURES] * 5 + [3, 5]))
    ndim = draw(st.sampled_from([2] * 8 + [1, 3]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    X = rng.normal(size=(n, n_features))
    if ndim == 1:
        X = X.ravel()
    elif ndim == 3:
        X = X.reshape(n, n_features, 1)
    bad_value = draw(st.sampled_from([None] * 6 + [np.nan, np.inf, -np.inf]))
    if bad_value is not None and X.size:
        X.flat[draw(st.integers(0, X.size - 1))] = bad_value
    dtype = draw(st.sampled_from(["float64", "float64", "float32", "int64", "object"]))
    X = (
        X.astype(dtype)
        if dtype != "int64"
        else np.round(np.where(np.isfinite(X), X, 0.0) * 3).astype(np.int64)
    )
    n_labels = n + draw(st.sampled_from([0] * 8 + [-1, 1]))
    if kind == "clf":
        labels = draw(
            st.lists(
                st.sampled_from([0, 1, 2] * 6 + [7]),
                min_size=max(n_labels, 0),
                max_size=max(n_labels, 0),
            )
        )
        y = np.array(labels, dtype=np.int64)
    else:
        y = rng.normal(size=max(n_labels, 0))
        if draw(st.integers(0, 7)) == 0 and y.size:
            y[0] = draw(st.sampled_from([np.nan, np.inf]))
        if draw(st.integers(0, 7)) == 0:
            y = y.reshape(-1, 1)
    return kind, _layout(draw, X), _layout(draw, y)


@FUZZ_SETTINGS
@given(add_requests())
def _fuzz_add(case):
    TRIED["add"] = TRIED.get("add", 0) + 1
    kind, X_new, y_new = case
    est, _, _ = _fresh(kind)
    n_before = est.n_samples_seen_
    error = _run(est, "partial_fit", (X_new, y_new), {})
    A = np.asarray(X_new, dtype=object)
    Y = np.asarray(y_new)
    valid = A.ndim == 2 and A.shape[0] > 0 and A.shape[1] == N_FEATURES
    if valid:
        values = A.astype(np.float64)
        valid = np.isfinite(values).all() and Y.shape[0] == A.shape[0]
        if kind == "clf":
            valid = valid and Y.ndim == 1 and np.isin(Y, [0, 1, 2]).all()
        else:
            valid = valid and Y.ndim in (1, 2) and np.isfinite(Y).all()
    if not valid:
        assert error is not None, f"accepted bad rows {X_new!r}, {y_new!r}"
        return
    assert error is None, error
    TRIED["add-ok"] = TRIED.get("add-ok", 0) + 1
    n = A.shape[0]
    assert est.n_samples_seen_ == n_before + n
    np.testing.assert_array_equal(est.sample_ids_[-n:], np.arange(105, 105 + n))
    np.testing.assert_array_equal(est._rows.X[-n:], values)
    assert np.isfinite(est.coef_).all()


def test_fuzz_added_rows():
    _fuzz_add()
    print(
        f"\nfuzz: {TRIED['add']} addition requests tried, "
        f"{TRIED.get('add-ok', 0)} valid and served"
    )
    assert TRIED["add"] >= 200 and TRIED.get("add-ok", 0) >= 10


# --------------------------------------------------------- removal by value
@st.composite
def value_requests(draw):
    kind = draw(st.sampled_from(["clf", "reg"]))
    _, X, y = _base(kind)
    # Rows 0-1 were removed, 2..104 are live, 105..109 were never seen.
    picks = draw(st.lists(st.integers(0, 109), min_size=0, max_size=5, unique=True))
    rows = X[picks]
    labels = y[picks]
    tweak = draw(st.sampled_from(["none"] * 6 + ["nan", "features", "label", "1d"]))
    if tweak == "nan" and rows.size:
        rows = rows.copy()
        rows[0, 0] = np.nan
    elif tweak == "features":
        rows = rows[:, :3]
    elif tweak == "label" and labels.size:
        labels = labels.copy()
        labels[0] = 7 if kind == "clf" else labels[0] + 1.0
    elif tweak == "1d":
        rows = rows.ravel()
    with_y = draw(st.booleans())
    return kind, picks, tweak, _layout(draw, rows), labels if with_y else None


@FUZZ_SETTINGS
@given(value_requests())
def _fuzz_by_value(case):
    TRIED["value"] = TRIED.get("value", 0) + 1
    kind, picks, tweak, rows, labels = case
    est, X, _ = _fresh(kind)
    error = _run(est, "partial_unfit", (rows,), {"y": labels})
    valid = (
        len(picks) > 0
        and all(2 <= p <= 104 for p in picks)
        and (tweak == "none" or (tweak == "label" and labels is None))
    )
    if not valid:
        assert error is not None, f"accepted bad rows {picks}, {tweak}"
        return
    if error is not None:
        assert "no training rows of class" in str(error), error
        return
    TRIED["value-ok"] = TRIED.get("value-ok", 0) + 1
    expected = np.setdiff1d(LIVE, picks)
    np.testing.assert_array_equal(est.sample_ids_, expected)
    np.testing.assert_array_equal(est._rows.X, X[expected])


def test_fuzz_removal_by_value():
    _fuzz_by_value()
    print(
        f"\nfuzz: {TRIED['value']} removal-by-value requests tried, "
        f"{TRIED.get('value-ok', 0)} valid and served"
    )
    assert TRIED["value"] >= 200 and TRIED.get("value-ok", 0) >= 10


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_fuzzed_estimator_still_serves(kind):
    """The shared fitted estimators were only ever deep-copied by the fuzzers."""
    est, X, y = _base(kind)
    assert_unchanged(est, SNAPSHOTS[kind])
