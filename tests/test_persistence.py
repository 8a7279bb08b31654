"""Persistence safety and determinism (issue #6).

Pickles carry the package version and warn when loaded by another one; skops.io can
save and load the estimators (their types must be trusted explicitly). Same data,
parameters and ``random_state`` give bitwise the same model, cache and schedule: across
two fits, after a pickle round trip, and after identical request sequences.
"""

import copy
import io
import pickle
import warnings

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression

import sklearn_deltagrad
from sklearn_deltagrad import (
    DeltaGradLogisticRegression,
    DeltaGradRidge,
    InconsistentDeltaGradVersionWarning,
)

from .test_bad_input import NAMED_STATE, _assert_same, _lookup, assert_unchanged

KINDS = ["clf", "reg", "multi"]

EXTRA_STATE = [
    "_schedule.learning_rates",
    "_schedule.seed",
    "_schedule.n_additions",
    "_max_row_norm",
    "drift_",
    "_cache.grams",
    "_cache.gram_points",
    "_cache.reference_point",
    "_cache.reference_hessian",
    "_cache.reference_weight",
]


def make(kind, **params):
    params = {
        "batch_size": 32,
        "max_iter": 5,
        "burn_in": 3,
        "exact_period": 4,
        **params,
    }
    if kind == "reg":
        X, y = make_regression(n_samples=260, n_features=6, noise=1.0, random_state=1)
        return DeltaGradRidge(**params), X, y / y.std()
    if kind == "multi-ref":
        kind = "multi"
        params.update(curvature="hessian", reference_correction=True)
    n_classes = 2 if kind == "clf" else 3
    X, y = make_classification(
        n_samples=260,
        n_features=6,
        n_informative=4,
        n_classes=n_classes,
        random_state=1,
    )
    return DeltaGradLogisticRegression(**params), X, y


def serve(est, X, y):
    """A fixed sequence of requests (rows 200.. are held out for additions)."""
    est.partial_unfit(indices=[3, 17, 150])
    est.partial_fit(X[200:210], y[200:210])
    est.partial_unfit(X[20:22], y[20:22])
    est.partial_unfit(indices=[203, 5], method="exact")
    est.partial_fit(X[210:215], y[210:215], method="exact")
    est.partial_unfit(indices=[40])
    return est


def assert_bitwise_same(a, b):
    for name in NAMED_STATE + EXTRA_STATE:
        _assert_same(_lookup(a, name), _lookup(b, name), name)
    for ra, rb in zip(a.update_log_, b.update_log_, strict=True):
        # Everything but the timing.
        for field in ("method", "n_exact_iterations", "drift", "first_iteration"):
            assert getattr(ra, field) == getattr(rb, field), field


# ----------------------------------------------------------------- versions
@pytest.mark.parametrize("kind", KINDS)
def test_pickle_carries_the_package_version(kind):
    est, X, y = make(kind, random_state=0)
    est.fit(X[:200], y[:200])
    state = est.__getstate__()
    assert state["_sklearn_deltagrad_version"] == sklearn_deltagrad.__version__
    assert "_sklearn_deltagrad_version" not in est.__dict__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = pickle.loads(pickle.dumps(est))
    assert "_sklearn_deltagrad_version" not in loaded.__dict__
    assert_bitwise_same(loaded, est)


@pytest.mark.parametrize("fitted", [True, False])
def test_pickle_from_another_version_warns(fitted):
    est, X, y = make("clf", random_state=0)
    if fitted:
        est.fit(X[:200], y[:200])
    version = sklearn_deltagrad.__version__.encode()
    fake = b"9" * len(version)
    data = pickle.dumps(est)
    assert data.count(version) == 1
    tampered = data.replace(version, fake)
    with pytest.warns(InconsistentDeltaGradVersionWarning) as record:
        loaded = pickle.loads(tampered)
    warning = record[0].message
    assert isinstance(warning, UserWarning)
    assert warning.original_version == fake.decode()
    assert warning.current_version == sklearn_deltagrad.__version__
    assert "DeltaGradLogisticRegression" in str(warning) and fake.decode() in str(
        warning
    )
    assert "_sklearn_deltagrad_version" not in loaded.__dict__
    if fitted:
        assert_bitwise_same(loaded, est)


def test_pickle_without_a_version_warns():
    est, X, y = make("reg", random_state=0)
    est.fit(X[:200], y[:200])
    state = est.__getstate__()
    del state["_sklearn_deltagrad_version"]
    new = DeltaGradRidge.__new__(DeltaGradRidge)
    with pytest.warns(InconsistentDeltaGradVersionWarning, match="version unknown"):
        new.__setstate__(state)
    assert_bitwise_same(new, est)


def test_pickle_from_before_the_kept_row_norm_bound_gets_its_rows_bound():
    """Pickles from before ``_max_row_norm`` get the bound of their current rows."""
    est, X, y = make("multi", random_state=0)
    serve(est.fit(X[:200], y[:200]), X, y)
    state = est.__getstate__()
    del state["_max_row_norm"]
    new = DeltaGradLogisticRegression.__new__(DeltaGradLogisticRegression)
    new.__setstate__(state)
    rows = est._rows.X
    expected = (((rows - est._model.offset) ** 2).sum(axis=1) + 1.0).max()
    assert new._max_row_norm == pytest.approx(expected, rel=1e-12)
    assert new._max_row_norm <= est._max_row_norm
    new.partial_unfit(indices=[100])
    assert new.last_update_.method == "deltagrad"


@pytest.mark.parametrize("kind", ["reg", "clf"])
def test_pickle_from_before_the_pending_centring_row_gets_one(kind):
    """Pickles whose Gram matrices are square (before each got its pending
    centring row) load with a zero row appended and serve the same requests."""
    est, X, y = make(kind, random_state=0, curvature="gram")
    est.fit(X[:200], y[:200])
    state = pickle.loads(pickle.dumps(est)).__getstate__()  # shares nothing
    grams = state["_cache"].grams
    np.testing.assert_array_equal(grams[:, -1], 0.0)  # a fit leaves none pending
    state["_cache"].grams = np.ascontiguousarray(grams[:, :-1])
    new = type(est).__new__(type(est))
    new.__setstate__(state)
    np.testing.assert_array_equal(new._cache.grams, est._cache.grams)
    serve(new, X, y)
    serve(est, X, y)
    assert_bitwise_same(new, est)


def test_pickle_from_before_the_copy_and_reference_parameters_gets_defaults():
    est, X, y = make("multi", random_state=0)
    est.fit(X[:200], y[:200])
    state = pickle.loads(pickle.dumps(est)).__getstate__()  # shares nothing
    del state["copy_cache"], state["reference_correction"]
    new = DeltaGradLogisticRegression.__new__(DeltaGradLogisticRegression)
    new.__setstate__(state)
    params = new.get_params()
    assert params["copy_cache"] is True
    assert params["reference_correction"] is False
    serve(new, X, y)
    serve(est.set_params(reference_correction=False), X, y)
    assert_bitwise_same(new, est)


def test_getstate_does_not_touch_the_estimator():
    est, X, y = make("multi", random_state=0)
    serve(est.fit(X[:200], y[:200]), X, y)
    before = dict(est.__dict__)
    snapshot = copy.deepcopy(est.__dict__)
    est.__getstate__()
    pickle.dumps(est)
    assert est.__dict__.keys() == before.keys()
    assert_unchanged(est, snapshot)


# ---------------------------------------------------------------------- skops
@pytest.mark.parametrize("kind", KINDS)
def test_skops_round_trip(kind):
    sio = pytest.importorskip("skops.io")
    est, X, y = make(kind, random_state=0)
    serve(est.fit(X[:200], y[:200]), X, y)
    dumped = sio.dumps(est)
    untrusted = sio.get_untrusted_types(data=dumped)
    # Nothing is loaded without trusting the package's own types explicitly.
    assert all(name.startswith("sklearn_deltagrad.") for name in untrusted)
    assert f"sklearn_deltagrad._estimators.{type(est).__name__}" in untrusted
    with pytest.raises(Exception, match="[Uu]ntrusted"):
        sio.loads(dumped)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = sio.loads(dumped, trusted=untrusted)
    assert_bitwise_same(loaded, est)
    for model in (loaded, est):
        model.partial_unfit(indices=[60, 61])
        model.partial_fit(X[215:220], y[215:220])
    assert_bitwise_same(loaded, est)


# ---------------------------------------------------------------- determinism
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("random_state", [0, 12345, "instance"])
def test_two_fits_are_bitwise_identical(kind, random_state):
    def state():
        return np.random.RandomState(7) if random_state == "instance" else random_state

    a, X, y = make(kind, random_state=state())
    b, _, _ = make(kind, random_state=state())
    a.fit(X[:200], y[:200])
    b.fit(X[:200], y[:200])
    assert_bitwise_same(a, b)
    serve(a, X, y)
    serve(b, X, y)
    assert_bitwise_same(a, b)


# "multi-ref": the Hessian model's reference Hessian travels with the estimator
# and is kept current by the requests after loading as before.
@pytest.mark.parametrize("kind", [*KINDS, "multi-ref"])
@pytest.mark.parametrize("how", ["pickle", "joblib", "midway-pickle"])
def test_persisted_estimator_serves_requests_bitwise_identically(kind, how):
    a, X, y = make(kind, random_state=3)
    if kind == "multi-ref":
        assert a.fit(X[:200], y[:200])._cache.reference_hessian is not None
    a.fit(X[:200], y[:200])
    if how == "midway-pickle":
        a.partial_unfit(indices=[9, 10])
        b = pickle.loads(pickle.dumps(a))
    elif how == "pickle":
        b = pickle.loads(pickle.dumps(a))
    else:
        buffer = io.BytesIO()
        joblib.dump(a, buffer)
        buffer.seek(0)
        b = joblib.load(buffer)
    assert_bitwise_same(a, b)
    serve(a, X, y)
    serve(b, X, y)
    assert_bitwise_same(a, b)
    # And a second round trip after the requests.
    c = pickle.loads(pickle.dumps(b))
    for model in (a, c):
        model.partial_unfit(indices=[100])
    assert_bitwise_same(a, c)


def test_a_different_random_state_gives_a_different_schedule():
    a, X, y = make("clf", random_state=0)
    b, _, _ = make("clf", random_state=1)
    a.fit(X[:200], y[:200])
    b.fit(X[:200], y[:200])
    assert not np.array_equal(a._schedule.batch_ids, b._schedule.batch_ids)
