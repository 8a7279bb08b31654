"""Bad requests fail loudly and change nothing.

Every bad input must raise an error whose message names the problem, leave the
estimator exactly as it was (public attributes, the SGD cache, the schedule and the
kept training rows, compared bit for bit), leave the caller's arrays untouched, and
leave the estimator able to serve the next request as if the bad one never happened.
"""

import copy
import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge
from sklearn_deltagrad._backend import resolve_device

PARAMS = dict(batch_size=16, max_iter=4, burn_in=2, exact_period=3, random_state=0)
N_FEATURES = 4


def make_data(kind):
    """110 rows: 0..99 for fit, 100..104 added later, 105..109 never seen."""
    if kind == "clf":
        X, y = make_classification(
            n_samples=110,
            n_features=N_FEATURES,
            n_informative=3,
            n_redundant=0,
            n_classes=3,
            n_clusters_per_class=1,
            random_state=0,
        )
        return X, y
    X, y = make_regression(
        n_samples=110, n_features=N_FEATURES, noise=1.0, random_state=0
    )
    return X, y / y.std()


def unfitted(kind):
    cls = DeltaGradLogisticRegression if kind == "clf" else DeltaGradRidge
    return cls(**PARAMS)


def fitted(kind):
    """An estimator that has served a removal and an addition, and its data.

    Row ``i`` of the data has stable id ``i``; ids 0 and 1 are removed, so the live
    ids are ``2..104``.
    """
    X, y = make_data(kind)
    est = unfitted(kind).fit(X[:100], y[:100])
    est.partial_unfit(indices=[0, 1])
    est.partial_fit(X[100:105], y[100:105])
    assert_array_equal(est.sample_ids_, np.arange(2, 105))
    return est, X, y


# --------------------------------------------------------------------- helpers
def snapshot(est):
    return copy.deepcopy(est.__dict__)


def _assert_same(actual, expected, where):
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray), where
        assert actual.dtype == expected.dtype, where
        assert actual.shape == expected.shape, where
        same = np.array_equal(actual, expected, equal_nan=actual.dtype.kind in "fc")
        assert same, f"{where} changed"
    elif dataclasses.is_dataclass(expected) and not isinstance(expected, type):
        assert type(actual) is type(expected), where
        for field in dataclasses.fields(expected):
            _assert_same(
                getattr(actual, field.name),
                getattr(expected, field.name),
                f"{where}.{field.name}",
            )
    elif isinstance(expected, dict):
        assert actual.keys() == expected.keys(), where
        for key in expected:
            _assert_same(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, list | tuple):
        assert type(actual) is type(expected) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_same(a, e, f"{where}[{i}]")
    else:
        assert type(actual) is type(expected), where
        assert actual == expected or (actual != actual and expected != expected), where


NAMED_STATE = [
    "coef_",
    "intercept_",
    "sample_ids_",
    "n_samples_seen_",
    "_cache.weights",
    "_cache.gradients",
    "_cache.exact",
    "_cache.final",
    "_schedule.batch_ids",
    "_schedule.batch_ptr",
    "_rows.X",
    "_rows.Y",
    "_rows.ids",
    "_rows.weights",
]


def _lookup(obj, dotted):
    for name in dotted.split("."):
        obj = obj[name] if isinstance(obj, dict) else getattr(obj, name)
    return obj


def assert_unchanged(est, before):
    """``est`` is exactly as in the ``snapshot`` ``before``."""
    assert est.__dict__.keys() == before.keys(), "attributes appeared or vanished"
    if "coef_" in before:
        for name in NAMED_STATE:
            _assert_same(_lookup(est.__dict__, name), _lookup(before, name), name)
    # Then everything else.
    _assert_same(est.__dict__, before, type(est).__name__)


def assert_still_serves(est, kind):
    """The next request gives bitwise what a never-disturbed twin gives."""
    twin, X, y = fitted(kind)
    for model in (est, twin):
        model.partial_unfit(indices=[7, 60])
        model.partial_fit(X[105:107], y[105:107])
    for name in NAMED_STATE:
        _assert_same(_lookup(est, name), _lookup(twin, name), name)


def call_and_check(est, method, args, kwargs, error, match):
    """Make the bad call; check the error, the estimator and the caller's arrays."""
    passed = copy.deepcopy((args, kwargs))
    before = snapshot(est)
    with pytest.raises(error, match=match):
        getattr(est, method)(*args, **kwargs)
    assert_unchanged(est, before)
    _assert_same((args, kwargs), passed, "caller's arguments")


# ------------------------------------------------------ bad requests, fitted
def _live(est):
    return est.sample_ids_.copy()


def _with_nan(A, value=np.nan):
    A = np.array(A, dtype=np.float64)
    A.flat[1] = value
    return A


# (name, kinds, builder(est, X, y) -> (method, args, kwargs), error, match)
N_FEAT_MSG = r"X has {} features, but \w+ is expecting 4 features as input"
CASES = [
    # --- ids
    (
        "unknown-ids",
        "both",
        lambda est, X, y: ("partial_unfit", (), {"indices": np.array([3, 500])}),
        ValueError,
        r"ids that are not live training rows: \[500\]",
    ),
    (
        "already-removed-id",
        "both",
        lambda est, X, y: ("partial_unfit", (), {"indices": [5, 0]}),
        ValueError,
        r"ids that are not live training rows: \[0\]",
    ),
    (
        "repeated-ids",
        "both",
        lambda est, X, y: ("partial_unfit", (), {"indices": np.array([4, 9, 4])}),
        ValueError,
        r"repeats row ids \[4\]",
    ),
    (
        "negative-ids",
        "both",
        lambda est, X, y: ("partial_unfit", (), {"indices": np.array([-1, 3])}),
        ValueError,
        r"ids that are not live training rows: \[-1\]",
    ),
    (
        "float-ids",
        "both",
        lambda est, X, y: ("partial_unfit", (), {"indices": np.array([3.0, 4.0])}),
        TypeError,
        r"indices must be integer row ids.*float64",
    ),
    (
        "bool-ids",
        "both",
        lambda est, X, y: (
            "partial_unfit",
            (),
            {"indices": np.arange(est.n_samples_seen_) < 3},
        ),
        TypeError,
        r"indices must be integer row ids.*bool",
    ),
    (
        "string-ids",
        "clf",
        lambda est, X, y: ("partial_unfit", (), {"indices": ["3"]}),
        TypeError,
        r"indices must be integer row ids",
    ),
    (
        "2d-ids",
        "both",
        lambda est, X, y: ("partial_unfit", (), {"indices": np.array([[3, 4]])}),
        ValueError,
        r"indices must be 1-D, got an array of shape \(1, 2\)",
    ),
    (
        "scalar-id",
        "reg",
        lambda est, X, y: ("partial_unfit", (), {"indices": 3}),
        ValueError,
        r"indices must be 1-D",
    ),
    (
        "empty-ids",
        "both",
        lambda est, X, y: ("partial_unfit", (), {"indices": np.array([], dtype=int)}),
        ValueError,
        r"indices is empty",
    ),
    (
        "empty-id-list",
        "clf",
        lambda est, X, y: ("partial_unfit", (), {"indices": []}),
        ValueError,
        r"indices is empty",
    ),
    # --- removals that would empty a class or the whole set
    (
        "class-emptied-by-ids",
        "clf",
        lambda est, X, y: (
            "partial_unfit",
            (),
            {"indices": _live(est)[y[_live(est)] == 1]},
        ),
        ValueError,
        r"would leave no training rows of class\(es\) \[1\]",
    ),
    (
        "class-emptied-by-value",
        "clf",
        lambda est, X, y: ("partial_unfit", (X[_live(est)][y[_live(est)] == 2],), {}),
        ValueError,
        r"would leave no training rows of class\(es\) \[2\]",
    ),
    (
        "all-rows-by-ids",
        "both",
        lambda est, X, y: ("partial_unfit", (), {"indices": _live(est)}),
        ValueError,
        r"Removing these 103 rows would leave no training rows\.",
    ),
    (
        "all-rows-by-value",
        "both",
        lambda est, X, y: ("partial_unfit", (X[2:105], y[2:105]), {}),
        ValueError,
        r"Removing these 103 rows would leave no training rows\.",
    ),
    # --- rows by value that are not there
    (
        "row-not-in-training-set",
        "both",
        lambda est, X, y: ("partial_unfit", (np.vstack([X[5], X[6] + 100.0]),), {}),
        ValueError,
        r"1 of the rows to remove are not in the training set "
        r"\(positions in X: \[1\]\)",
    ),
    (
        "never-seen-rows",
        "both",
        lambda est, X, y: ("partial_unfit", (X[[5, 106, 107]],), {}),
        ValueError,
        r"2 of the rows to remove are not in the training set "
        r"\(positions in X: \[1, 2\]\)",
    ),
    (
        "already-removed-row",
        "both",
        lambda est, X, y: ("partial_unfit", (X[[0]], y[[0]]), {}),
        ValueError,
        r"not in the training set \(positions in X: \[0\]\)",
    ),
    (
        "more-copies-than-trained",
        "both",
        lambda est, X, y: ("partial_unfit", (X[[5, 5]],), {}),
        ValueError,
        r"not in the training set \(positions in X: \[1\]\)",
    ),
    (
        "row-with-other-label",
        "clf",
        lambda est, X, y: ("partial_unfit", (X[[5]], [(y[5] + 1) % 3]), {}),
        ValueError,
        r"not in the training set \(positions in X: \[0\]\)",
    ),
    (
        "row-with-other-target",
        "reg",
        lambda est, X, y: ("partial_unfit", (X[[5]], y[[5]] + 1.0), {}),
        ValueError,
        r"not in the training set \(positions in X: \[0\]\)",
    ),
    # --- X versus indices
    (
        "X-and-indices",
        "both",
        lambda est, X, y: ("partial_unfit", (X[[5]],), {"indices": [5]}),
        ValueError,
        r"needs exactly one of X .* or indices",
    ),
    (
        "neither-X-nor-indices",
        "both",
        lambda est, X, y: ("partial_unfit", (), {}),
        ValueError,
        r"needs exactly one of X .* or indices",
    ),
    (
        "only-y",
        "both",
        lambda est, X, y: ("partial_unfit", (), {"y": y[[5]]}),
        ValueError,
        r"needs exactly one of X .* or indices",
    ),
    # --- labels
    (
        "unseen-label-partial-fit",
        "clf",
        lambda est, X, y: ("partial_fit", (X[105:107], np.array([0, 9])), {}),
        ValueError,
        r"y contains labels not seen at fit: \[9\]; classes_ is \[0, 1, 2\]",
    ),
    (
        "unseen-string-labels-partial-fit",
        "clf",
        lambda est, X, y: ("partial_fit", (X[105:107], ["cat", "0"]), {}),
        ValueError,
        r"labels not seen at fit: \['0', 'cat'\]",
    ),
    (
        "unseen-label-partial-unfit",
        "clf",
        lambda est, X, y: ("partial_unfit", (X[[5]], [7]), {}),
        ValueError,
        r"labels not seen at fit: \[7\]",
    ),
    # --- number of features
    (
        "few-features-partial-fit",
        "both",
        lambda est, X, y: ("partial_fit", (X[105:107, :3], y[105:107]), {}),
        ValueError,
        N_FEAT_MSG.format(3),
    ),
    (
        "many-features-partial-fit",
        "both",
        lambda est, X, y: (
            "partial_fit",
            (np.hstack([X[105:107], X[105:107, :1]]), y[105:107]),
            {},
        ),
        ValueError,
        N_FEAT_MSG.format(5),
    ),
    (
        "few-features-partial-unfit",
        "both",
        lambda est, X, y: ("partial_unfit", (X[[5, 6], :3],), {}),
        ValueError,
        N_FEAT_MSG.format(3),
    ),
    (
        "few-features-predict",
        "both",
        lambda est, X, y: ("predict", (X[:, :2],), {}),
        ValueError,
        N_FEAT_MSG.format(2),
    ),
    (
        "few-features-predict-proba",
        "clf",
        lambda est, X, y: ("predict_proba", (X[:, :2],), {}),
        ValueError,
        N_FEAT_MSG.format(2),
    ),
    (
        "few-features-decision-function",
        "clf",
        lambda est, X, y: ("decision_function", (X[:, :3],), {}),
        ValueError,
        N_FEAT_MSG.format(3),
    ),
    (
        "1d-X-partial-fit",
        "both",
        lambda est, X, y: ("partial_fit", (X[105], y[105:106]), {}),
        ValueError,
        r"Expected 2D array, got 1D array",
    ),
    (
        "no-rows-partial-fit",
        "both",
        lambda est, X, y: ("partial_fit", (X[:0], y[:0]), {}),
        ValueError,
        r"0 sample\(s\)",
    ),
    (
        "no-rows-partial-unfit",
        "both",
        lambda est, X, y: ("partial_unfit", (X[:0],), {}),
        ValueError,
        r"0 sample\(s\)",
    ),
    # --- NaN and infinity
    (
        "nan-X-partial-fit",
        "both",
        lambda est, X, y: ("partial_fit", (_with_nan(X[105:108]), y[105:108]), {}),
        ValueError,
        r"Input X contains NaN",
    ),
    (
        "inf-X-partial-fit",
        "both",
        lambda est, X, y: (
            "partial_fit",
            (_with_nan(X[105:108], np.inf), y[105:108]),
            {},
        ),
        ValueError,
        r"Input X contains infinity",
    ),
    (
        "nan-X-partial-unfit",
        "both",
        lambda est, X, y: ("partial_unfit", (_with_nan(X[5:8]),), {}),
        ValueError,
        r"Input X contains NaN",
    ),
    (
        "inf-X-partial-unfit",
        "both",
        lambda est, X, y: ("partial_unfit", (_with_nan(X[5:8], -np.inf),), {}),
        ValueError,
        r"Input X contains infinity",
    ),
    (
        "nan-X-predict",
        "both",
        lambda est, X, y: ("predict", (_with_nan(X[5:8]),), {}),
        ValueError,
        r"Input X contains NaN",
    ),
    (
        "nan-y-partial-fit",
        "both",
        lambda est, X, y: ("partial_fit", (X[105:108], _with_nan(y[105:108])), {}),
        ValueError,
        r"Input y contains NaN",
    ),
    (
        "inf-y-partial-fit",
        "reg",
        lambda est, X, y: (
            "partial_fit",
            (X[105:108], _with_nan(y[105:108], np.inf)),
            {},
        ),
        ValueError,
        r"Input y contains infinity",
    ),
    (
        "nan-y-partial-unfit",
        "reg",
        lambda est, X, y: ("partial_unfit", (X[5:8], _with_nan(y[5:8])), {}),
        ValueError,
        r"y contains NaN or infinity",
    ),
    (
        "inf-y-partial-unfit",
        "reg",
        lambda est, X, y: ("partial_unfit", (X[5:8], _with_nan(y[5:8], np.inf)), {}),
        ValueError,
        r"y contains NaN or infinity",
    ),
    (
        "nan-y-partial-unfit",
        "clf",
        lambda est, X, y: ("partial_unfit", (X[5:8], _with_nan(y[5:8])), {}),
        ValueError,
        r"labels not seen at fit: \[nan\]",
    ),
    # --- y that does not fit X
    (
        "short-y-partial-fit",
        "both",
        lambda est, X, y: ("partial_fit", (X[105:108], y[105:107]), {}),
        ValueError,
        r"inconsistent numbers of samples: \[3, 2\]",
    ),
    (
        "short-y-partial-unfit",
        "clf",
        lambda est, X, y: ("partial_unfit", (X[5:8], y[5:7]), {}),
        ValueError,
        r"y must be 1-D with one label per row of X, got shape \(2,\)",
    ),
    (
        "short-y-partial-unfit",
        "reg",
        lambda est, X, y: ("partial_unfit", (X[5:8], y[5:7]), {}),
        ValueError,
        r"y must have one row per row of X and 1 target\(s\), got shape \(2,\)",
    ),
    (
        "two-targets-partial-fit",
        "reg",
        lambda est, X, y: (
            "partial_fit",
            (X[105:108], np.column_stack([y[105:108], y[105:108]])),
            {},
        ),
        ValueError,
        r"1 target\(s\), got shape \(3, 2\)",
    ),
    # --- method
    (
        "bad-method-partial-unfit",
        "both",
        lambda est, X, y: ("partial_unfit", (), {"indices": [5], "method": "fast"}),
        ValueError,
        r"method must be 'deltagrad' or 'exact', got 'fast'",
    ),
    (
        "bad-method-partial-fit",
        "both",
        lambda est, X, y: (
            "partial_fit",
            (X[105:107], y[105:107]),
            {"method": "retrain"},
        ),
        ValueError,
        r"method must be 'deltagrad' or 'exact', got 'retrain'",
    ),
]


def _expand(cases):
    for name, kinds, builder, error, match in cases:
        for kind in ("clf", "reg") if kinds == "both" else (kinds,):
            yield pytest.param(kind, builder, error, match, id=f"{kind}-{name}")


@pytest.mark.parametrize("kind, builder, error, match", list(_expand(CASES)))
def test_bad_request_changes_nothing(kind, builder, error, match):
    est, X, y = fitted(kind)
    X_before, y_before = X.copy(), y.copy()
    method, args, kwargs = builder(est, X, y)
    call_and_check(est, method, args, kwargs, error, match)
    assert_array_equal(X, X_before, strict=True)
    assert_array_equal(y, y_before, strict=True)
    assert_still_serves(est, kind)


def test_cases_cover_both_estimators():
    ids = [param.id for param in _expand(CASES)]
    assert len(ids) == len(set(ids))
    assert sum(i.startswith("clf-") for i in ids) > 40
    assert sum(i.startswith("reg-") for i in ids) > 35


# ------------------------------------------------------------ bad parameters
BAD_PARAMS = [
    ({"alpha": -1.0}, r"'alpha' parameter"),
    ({"batch_size": 0}, r"'batch_size' parameter"),
    ({"device": "tpu"}, r"'device' parameter .* Got 'tpu'"),
    ({"max_iter": 0}, r"'max_iter' parameter"),
    ({"learning_rate": 0.0}, r"'learning_rate' parameter"),
    ({"learning_rate": "optimal"}, r"'learning_rate' parameter"),
    ({"exact_period": 0}, r"'exact_period' parameter"),
    ({"burn_in": -1}, r"'burn_in' parameter"),
    ({"curvature": "newton"}, r"'curvature' parameter"),
    ({"lbfgs_memory": 0}, r"'lbfgs_memory' parameter"),
    ({"hessian_rows": 0}, r"'hessian_rows' parameter"),
    ({"secant_correction": "yes"}, r"'secant_correction' parameter"),
    ({"fit_intercept": "yes"}, r"'fit_intercept' parameter"),
    ({"batch_size": 2.5}, r"'batch_size' parameter"),
]
BAD_PARAM_IDS = ["-".join(f"{k}={v}" for k, v in p.items()) for p, _ in BAD_PARAMS]


@pytest.mark.parametrize("kind", ["clf", "reg"])
@pytest.mark.parametrize("params, match", BAD_PARAMS, ids=BAD_PARAM_IDS)
def test_invalid_parameter_at_fit(kind, params, match):
    X, y = make_data(kind)
    X_before, y_before = X.copy(), y.copy()
    est = unfitted(kind).set_params(**params)
    before = snapshot(est)
    with pytest.raises(InvalidParameterError, match=match):
        est.fit(X, y)
    assert_unchanged(est, before)  # not even n_features_in_ was set
    assert_array_equal(X, X_before)
    assert_array_equal(y, y_before)
    if kind == "clf":
        with pytest.raises(InvalidParameterError, match=match):
            est.partial_fit(X, y, classes=[0, 1, 2])
        assert_unchanged(est, before)


@pytest.mark.parametrize("kind", ["clf", "reg"])
@pytest.mark.parametrize("params, match", BAD_PARAMS, ids=BAD_PARAM_IDS)
def test_invalid_parameter_set_after_fit(kind, params, match):
    """``set_params`` after ``fit`` is checked by every request, before any work."""
    est, X, y = fitted(kind)
    good = {name: est.get_params()[name] for name in params}
    est.set_params(**params)
    calls = [
        ("partial_unfit", (), {"indices": [5]}),
        ("partial_unfit", (X[[6]],), {}),
        ("partial_fit", (X[105:107], y[105:107]), {}),
        ("fit", (X, y), {}),
    ]
    for method, args, kwargs in calls:
        call_and_check(est, method, args, kwargs, InvalidParameterError, match)
    est.set_params(**good)
    assert_still_serves(est, kind)


CUDA_MESSAGE = (
    r"device='cuda' needs an NVIDIA GPU with a working CUDA driver and the "
    r"numba-cuda package .*none was found.*Use device='cpu' or device='auto'"
)


@pytest.mark.skipif(
    resolve_device("auto") == "cuda",
    reason="a CUDA GPU is present: device='cuda' works here (tests/cuda test it)",
)
@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_cuda_device_without_a_gpu_is_a_clear_error(kind):
    X, y = make_data(kind)
    est = unfitted(kind).set_params(device="cuda")
    before = snapshot(est)
    with pytest.raises(RuntimeError, match=CUDA_MESSAGE):
        est.fit(X, y)
    assert_unchanged(est, before)
    with pytest.raises(RuntimeError, match=CUDA_MESSAGE):
        if kind == "clf":
            est.partial_fit(X, y, classes=[0, 1, 2])
        else:
            est.partial_fit(X, y)
    assert_unchanged(est, before)

    # Switched to CUDA after fit: every request says so and changes nothing.
    est, X, y = fitted(kind)
    est.set_params(device="cuda")
    for method, args, kwargs in [
        ("partial_unfit", (), {"indices": [5]}),
        ("partial_unfit", (X[[6]],), {}),
        ("partial_fit", (X[105:107], y[105:107]), {}),
        ("fit", (X, y), {}),
    ]:
        call_and_check(est, method, args, kwargs, RuntimeError, CUDA_MESSAGE)
    est.set_params(device="cpu")
    assert_still_serves(est, kind)


@pytest.mark.skipif(
    resolve_device("auto") == "cuda", reason="a CUDA GPU is present: 'auto' uses it"
)
@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_auto_device_falls_back_to_cpu(kind):
    X, y = make_data(kind)
    auto = unfitted(kind).set_params(device="auto").fit(X, y)
    cpu = unfitted(kind).fit(X, y)
    for model in (auto, cpu):
        model.partial_unfit(indices=[3, 4]).partial_fit(X[:2], y[:2])
    for name in NAMED_STATE:
        _assert_same(_lookup(auto, name), _lookup(cpu, name), name)


def test_the_cpu_backend_never_imports_numba_cuda():
    """Importing the package and fitting on the CPU leave ``numba.cuda`` alone."""
    code = (
        "import sys, numpy as np\n"
        "from sklearn_deltagrad import DeltaGradLogisticRegression\n"
        "X = np.random.default_rng(0).standard_normal((30, 3))\n"
        "est = DeltaGradLogisticRegression(batch_size=10, max_iter=2)\n"
        "est.fit(X, X[:, 0] > 0).partial_unfit(indices=[1])\n"
        "assert 'numba.cuda' not in sys.modules, 'numba.cuda was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- unfitted
def test_partial_fit_first_call_needs_classes():
    X, y = make_data("clf")
    est = unfitted("clf")
    before = snapshot(est)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        est.partial_fit(X, y)
    assert_unchanged(est, before)
    with pytest.raises(ValueError, match=r"y contains labels \[2\] that are not in"):
        est.partial_fit(X, y, classes=[0, 1])
    assert not hasattr(est, "coef_")
    # With classes it is a fit; later calls need no classes.
    est.partial_fit(X[:100], y[:100], classes=np.array([0, 1, 2]))
    est.partial_fit(X[100:], y[100:])
    assert est.n_samples_seen_ == 110


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_unfitted_estimator_refuses_requests(kind):
    X, y = make_data(kind)
    est = unfitted(kind)
    before = snapshot(est)
    with pytest.raises(NotFittedError):
        est.partial_unfit(indices=[0])
    with pytest.raises(NotFittedError):
        est.partial_unfit(X[:2])
    with pytest.raises(NotFittedError):
        est.predict(X)
    assert_unchanged(est, before)


def test_fit_needs_two_classes():
    X, y = make_data("clf")
    with pytest.raises(
        ValueError, match=r"at least 2 classes.*only one class: (np\.int64\()?1"
    ):
        unfitted("clf").fit(X, np.ones_like(y))
    with pytest.raises(ValueError, match="Unknown label type"):
        unfitted("clf").fit(X, y + 0.5)


def test_snapshot_helper_sees_changes():
    """The comparison used above is not blind: each kind of change is caught."""
    est, X, y = fitted("clf")
    for change in (
        lambda e: e._cache.gradients.__setitem__((3, 0), 1.0),
        lambda e: e._cache.exact.__setitem__(5, not e._cache.exact[5]),
        lambda e: e._schedule.batch_ids.__setitem__(0, 99),
        lambda e: e._rows.X.__setitem__((0, 0), np.nan),
        lambda e: setattr(e, "n_samples_seen_", 3),
        lambda e: setattr(e, "new_attribute_", 1),
        lambda e: e.partial_unfit(indices=[50]),
    ):
        copy_ = copy.deepcopy(est)
        before = snapshot(copy_)
        change(copy_)
        with pytest.raises(AssertionError):
            assert_unchanged(copy_, before)
    clone_ = clone(est)
    with pytest.raises(AssertionError):
        assert_unchanged(clone_, snapshot(est))
