"""Requests that overwrite the cached trajectory (``copy_cache=False``).

They give bitwise the results of the default requests, which build the new
trajectory aside. A request interrupted before its replay has started leaves the
estimator as it was; one interrupted later is finished with the exact method
(``fallback="interrupted"``) before the exception propagates, and if that fails too,
the estimator is left unfitted.
"""

import copy
import dataclasses
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_array_equal
from sklearn.exceptions import NotFittedError

import sklearn_deltagrad._base as base_module
import sklearn_deltagrad._replay as replay_module
from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge
from sklearn_deltagrad._rows import PendingRemoval
from sklearn_deltagrad._training import LinearModel

from .test_bad_input import (
    NAMED_STATE,
    _assert_same,
    _lookup,
    assert_still_serves,
    assert_unchanged,
    fitted,
    snapshot,
)
from .test_reliability import Boom, _after, _raiser, _trace_interrupt

KINDS = ["clf", "reg"]


def _in_place(kind):
    est, X, y = fitted(kind)
    return est.set_params(copy_cache=False), X, y


def _requests(X, y):
    """(name, request(est, method)) of each kind of request."""
    return [
        ("unfit", lambda est, m: est.partial_unfit(indices=[3, 40, 77], method=m)),
        ("unfit-rows", lambda est, m: est.partial_unfit(X[10:12], y[10:12], method=m)),
        ("add", lambda est, m: est.partial_fit(X[105:108], y[105:108], method=m)),
        ("unfit-exact", lambda est, m: est.partial_unfit(indices=[5, 50], method=m)),
    ]


def _method(name, method):
    return "exact" if name == "unfit-exact" else method


def _assert_same_state(est, twin):
    for name in NAMED_STATE:
        actual, expected = _lookup(est, name), _lookup(twin, name)
        if sp.issparse(expected):
            assert actual.dtype == expected.dtype and actual.shape == expected.shape
            assert (actual != expected).nnz == 0, name
        else:
            _assert_same(actual, expected, name)
    if twin._cache.grams is not None:
        assert_array_equal(est._cache.grams, twin._cache.grams)


# ------------------------------------------------------------------- same results
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize(
    "kind, params",
    [
        ("binary", {}),  # the Gram model
        ("binary", {"curvature": "hessian"}),
        ("multinomial", {}),
        ("multinomial", {"curvature": "lbfgs"}),
        ("ridge", {}),
        ("multinomial", {"max_drift": 1e-9}),  # every request falls back
    ],
)
def test_in_place_requests_equal_copying_ones(kind, params, sparse):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 8))
    X[rng.random(X.shape) < 0.3] = 0.0
    if kind == "ridge":
        y, cls = X @ rng.normal(size=8), DeltaGradRidge
    else:
        bins = [0.0] if kind == "binary" else [-0.5, 0.5]
        y = np.digitize(X[:, 0] + rng.normal(size=600), bins)
        cls = DeltaGradLogisticRegression
    rows = sp.csr_matrix(X) if sparse else X
    copying = cls(batch_size=64, max_iter=5, random_state=0, **params)
    copying.fit(rows[:550], y[:550])
    in_place = copy.deepcopy(copying).set_params(copy_cache=False)
    for step in range(5):
        for est in (copying, in_place):
            if step % 2 == 0:
                ids = est.sample_ids_[[1, 30, 200, 301, 499]]
                method = "exact" if step == 4 else "deltagrad"
                est.partial_unfit(indices=ids, method=method)
            else:
                added = slice(550 + 7 * step, 557 + 7 * step)
                est.partial_fit(rows[added], y[added])
        _assert_same_state(in_place, copying)
        reports = [
            dataclasses.replace(est.update_log_[-1], seconds=0.0)
            for est in (in_place, copying)
        ]
        assert reports[0] == reports[1]
    if params.get("max_drift"):
        assert copying.update_log_[-2].fallback == "max_drift"


def test_in_place_request_writes_the_old_arrays():
    est, _, _ = _in_place("clf")
    weights, gradients = est._cache.weights, est._cache.gradients
    est.partial_unfit(indices=[3, 40])
    assert est._cache.weights is weights
    assert est._cache.gradients is gradients
    copying, _, _ = fitted("clf")
    weights = copying._cache.weights
    copying.partial_unfit(indices=[3, 40])
    assert copying._cache.weights is not weights


def test_read_only_state_is_copied_even_without_copy_cache():
    est, _, _ = _in_place("reg")
    est._cache.weights.flags.writeable = False
    weights = est._cache.weights
    before = weights.copy()
    est.partial_unfit(indices=[3, 40])
    assert est._cache.weights is not weights
    assert_array_equal(weights, before)


# ------------------------------------------------------------------ interruptions
def _once(wrapper):
    """``wrapper(original, error)``, applied to the first call only."""

    def wrap(original, error):
        wrapped = wrapper(original, error)
        calls = [0]

        def call(*args, **kwargs):
            calls[0] += 1
            if calls[0] == 1:
                return wrapped(*args, **kwargs)
            return original(*args, **kwargs)

        return call

    return wrap


def _raise(original, error):
    return _raiser(error)


# (name, target, attribute, wrapper, whether the request is then rolled forward)
INJECTIONS = [
    ("remove_rows", base_module, "remove_rows", _raise, False),
    ("apply_change", base_module, "apply_change", _raise, False),
    ("before-replay", replay_module, "replay_iterations", _raise, True),
    ("after-replay", replay_module, "replay_iterations", _after, True),
    ("after-exact-retrain", replay_module, "run_sgd", _after, True),
    ("report", replay_module, "drift_estimate", _raise, True),
    ("split", LinearModel, "split", _raise, True),
    ("after-compaction", PendingRemoval, "apply", _after, True),
    ("set-coefficients", None, "_set_coefficients", _raise, True),
]


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt, Boom])
@pytest.mark.parametrize("where", [i[0] for i in INJECTIONS])
@pytest.mark.parametrize("kind", KINDS)
def test_in_place_request_interrupted_once_is_undone_or_finished_exactly(
    kind, where, error, monkeypatch
):
    _, target, attribute, wrapper, rolled_forward = next(
        i for i in INJECTIONS if i[0] == where
    )
    base, X, y = _in_place(kind)
    target = type(base) if target is None else target
    original = getattr(target, attribute)
    n_raised = 0
    for name, request in _requests(X, y):
        est = copy.deepcopy(base)
        exact = copy.deepcopy(base)
        request(exact, "exact")
        before = snapshot(est)
        with monkeypatch.context() as patch:
            patch.setattr(target, attribute, _once(wrapper)(original, error))
            try:
                request(est, _method(name, "deltagrad"))
            except error:
                n_raised += 1
            else:
                continue  # the injection point is not on this request's path
        if rolled_forward:
            _assert_same_state(est, exact)
            last = est.update_log_[-1]
            assert (last.method, last.fallback) == ("exact", "interrupted")
            assert last.requested_method == _method(name, "deltagrad")
            # And it serves the next request as the exact twin does.
            for model in (est, exact):
                model.partial_unfit(indices=[7, 60])
            _assert_same_state(est, exact)
        else:
            assert_unchanged(est, before)
            assert_still_serves(est, kind)
    assert n_raised > 0


@pytest.mark.parametrize("kind", KINDS)
def test_in_place_request_failing_again_leaves_the_estimator_unfitted(
    kind, monkeypatch
):
    est, X, y = _in_place(kind)
    monkeypatch.setattr(LinearModel, "split", _raiser(Boom))
    with pytest.raises(Boom):
        est.partial_unfit(indices=[3, 40])
    assert est.get_params()["copy_cache"] is False
    assert not hasattr(est, "coef_")
    with pytest.raises(NotFittedError):
        est.predict(X[:3])
    monkeypatch.undo()
    est.fit(X[:100], y[:100])  # and it can be fitted again
    assert est.predict(X[:3]).shape == (3,)


@pytest.mark.parametrize("error", [KeyboardInterrupt, ValueError])
@pytest.mark.parametrize("kind", KINDS)
def test_in_place_request_interrupted_at_random_lines(kind, error):
    """At any line of the package's Python code: the state is the old one, the
    completed request's, or the exact request's (rolled forward)."""
    base, X, y = _in_place(kind)
    rng = np.random.default_rng(0)
    outcomes = set()
    for name, request in _requests(X, y):
        method = _method(name, "deltagrad")
        done = copy.deepcopy(base)
        tracer, count = _trace_interrupt(None, error)
        sys.settrace(tracer)
        try:
            request(done, method)
        finally:
            sys.settrace(None)
        exact = copy.deepcopy(base)
        request(exact, "exact")
        for at in np.unique(rng.integers(1, count[0] + 1, size=12)):
            est = copy.deepcopy(base)
            before = snapshot(est)
            tracer, _ = _trace_interrupt(int(at), error)
            sys.settrace(tracer)
            try:
                request(est, method)
                raised = False
            except error:
                raised = True
            finally:
                sys.settrace(None)
            if not raised:
                outcome = "done"
            elif est.n_samples_seen_ == before["n_samples_seen_"]:
                outcome = "unchanged"
                assert_unchanged(est, before)
            elif est.update_log_[-1].fallback == "interrupted":
                outcome = "exact"
                _assert_same_state(est, exact)
            else:
                outcome = "done"
            if outcome == "done":
                _assert_same_state(est, done)
            outcomes.add(outcome)
    assert outcomes >= {"unchanged", "exact"}
