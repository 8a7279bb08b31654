"""Reliability (issue #6): atomic requests, drift and fallback, audit log, memory guard.

A request either completes or leaves the estimator exactly as it was, whatever
interrupts it (an error or ``KeyboardInterrupt``, at any line of the package's Python
code); the estimator then serves the next request exactly as an untouched twin does.
"""

import copy
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_classification, make_regression
from sklearn.utils._param_validation import InvalidParameterError

import sklearn_deltagrad._base as base_module
import sklearn_deltagrad._replay as replay_module
from sklearn_deltagrad import (
    CacheTooLargeError,
    DeltaGradLogisticRegression,
    DeltaGradRidge,
)
from sklearn_deltagrad._replay import ReplayReport
from sklearn_deltagrad._rows import PendingRemoval
from sklearn_deltagrad._training import LinearModel

from .test_bad_input import (
    NAMED_STATE,
    PARAMS,
    _assert_same,
    _lookup,
    assert_still_serves,
    assert_unchanged,
    fitted,
    make_data,
    snapshot,
)

KINDS = ["clf", "reg"]


def _requests(X, y):
    """The requests to interrupt: (name, callable(est))."""
    return [
        ("unfit-ids", lambda est: est.partial_unfit(indices=[3, 40, 77])),
        ("unfit-rows", lambda est: est.partial_unfit(X[10:12], y[10:12])),
        ("add", lambda est: est.partial_fit(X[105:108], y[105:108])),
        (
            "unfit-exact",
            lambda est: est.partial_unfit(indices=[5, 50], method="exact"),
        ),
    ]


class Boom(Exception):
    pass


def _raiser(error):
    def raise_(*args, **kwargs):
        raise error("injected failure")

    return raise_


def _after(original, error):
    """Run ``original`` (which may mutate its arguments), then raise."""

    def run_then_raise(*args, **kwargs):
        original(*args, **kwargs)
        raise error("injected failure after the call")

    return run_then_raise


# Where to inject: (name, target object, attribute, wrapper(original, error)).
INJECTIONS = [
    ("remove_rows", base_module, "remove_rows", lambda o, e: _raiser(e)),
    ("add_rows", base_module, "add_rows", lambda o, e: _raiser(e)),
    ("apply_change", base_module, "apply_change", lambda o, e: _raiser(e)),
    ("before-replay", replay_module, "replay_iterations", lambda o, e: _raiser(e)),
    ("after-replay", replay_module, "replay_iterations", _after),
    ("after-exact-retrain", replay_module, "run_sgd", _after),
    ("report", replay_module, "drift_estimate", lambda o, e: _raiser(e)),
    ("split", LinearModel, "split", lambda o, e: _raiser(e)),
    ("after-compaction", PendingRemoval, "apply", _after),
    ("set-coefficients", None, "_set_coefficients", lambda o, e: _raiser(e)),
]


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt, Boom])
@pytest.mark.parametrize("where", [i[0] for i in INJECTIONS])
@pytest.mark.parametrize("kind", KINDS)
def test_request_interrupted_anywhere_changes_nothing(kind, where, error, monkeypatch):
    est = _interrupt_each_request(lambda: fitted(kind), where, error, monkeypatch)
    assert_still_serves(est, kind)


def _interrupt_each_request(make, where, error, monkeypatch):
    """Each request of ``_requests`` on ``make()``'s estimator with ``error``
    injected at ``where``: one that raises leaves the estimator unchanged. Some
    must raise. Returns the last estimator."""
    _, target, attribute, wrap = next(i for i in INJECTIONS if i[0] == where)
    est, X, y = make()
    if target is None:
        target = type(est)
    original = getattr(target, attribute)
    n_raised = 0
    for _name, request in _requests(X, y):
        before = snapshot(est)
        with monkeypatch.context() as patch:
            patch.setattr(target, attribute, wrap(original, error))
            try:
                request(est)
            except error:
                n_raised += 1
                assert_unchanged(est, before)
                continue
        # The injection point was not on this request's path: it completed.
        est, X, y = make()
    assert n_raised > 0
    return est


@pytest.mark.parametrize(
    "where", ["before-replay", "after-replay", "after-exact-retrain", "report"]
)
def test_request_with_the_reference_hessian_interrupted_changes_nothing(
    where, monkeypatch
):
    """The reference Hessian that a request updates is its own copy: an
    interrupted request leaves the old one (and everything else) as it was."""
    X, y = make_data("clf")

    def make():
        est = DeltaGradLogisticRegression(
            **PARAMS, curvature="hessian", reference_correction=True
        )
        est.fit(X[:100], y[:100])
        assert est._cache.reference_hessian is not None
        return est, X, y

    _interrupt_each_request(make, where, ValueError, monkeypatch)


def _state(est):
    return {name: _lookup(est, name) for name in NAMED_STATE}


def _trace_interrupt(at, error):
    """A ``sys.settrace`` function raising ``error`` at the ``at``-th line event of
    the package's own code; with ``at=None`` it only counts the events."""
    count = [0]

    def local(frame, event, arg):
        if event == "line":
            count[0] += 1
            if at is not None and count[0] == at:
                raise error(f"interrupted at line event {at}")
        return local

    def global_(frame, event, arg):
        if "sklearn_deltagrad" in frame.f_code.co_filename:
            return local
        return None

    return global_, count


@pytest.mark.parametrize("error", [KeyboardInterrupt, ValueError])
@pytest.mark.parametrize("kind", KINDS)
def test_request_interrupted_at_random_lines_is_atomic(kind, error):
    """Interrupt each request at random lines of the package's Python code."""
    base, X, y = fitted(kind)
    rng = np.random.default_rng(0)
    n_tried = 0
    for _name, request in _requests(X, y):
        done = copy.deepcopy(base)
        tracer, count = _trace_interrupt(None, error)
        sys.settrace(tracer)
        try:
            request(done)
        finally:
            sys.settrace(None)
        n_lines = count[0]
        assert n_lines > 20
        for at in np.unique(rng.integers(1, n_lines + 1, size=12)):
            est = copy.deepcopy(base)
            before = snapshot(est)
            tracer, _ = _trace_interrupt(int(at), error)
            sys.settrace(tracer)
            try:
                request(est)
                raised = False
            except error:
                raised = True
            finally:
                sys.settrace(None)
            n_tried += 1
            if raised and _state(est)["n_samples_seen_"] == before["n_samples_seen_"]:
                assert_unchanged(est, before)
                assert_still_serves(est, kind)
            else:
                # Interrupted after the commit (or not at all): the request is done.
                for key in NAMED_STATE:
                    _assert_same(_lookup(est, key), _lookup(done, key), key)
    assert n_tried >= 30


@pytest.mark.parametrize("kind", KINDS)
def test_failed_fit_leaves_a_fitted_estimator_unchanged(kind, monkeypatch):
    est, X, y = fitted(kind)
    before = snapshot(est)
    monkeypatch.setattr(base_module, "run_sgd", _raiser(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        est.fit(X[:50] * 2, y[:50])
    assert_unchanged(est, before)
    monkeypatch.undo()
    assert_still_serves(est, kind)


def test_failed_first_fit_leaves_the_estimator_unfitted(monkeypatch):
    X, y = make_classification(n_samples=60, n_features=4, random_state=0)
    est = DeltaGradLogisticRegression(random_state=0)
    monkeypatch.setattr(base_module, "run_sgd", _raiser(ValueError))
    with pytest.raises(ValueError, match="injected"):
        est.partial_fit(X, y, classes=[0, 1])
    assert not hasattr(est, "n_features_in_")
    assert not hasattr(est, "classes_")


# ---------------------------------------------- the Gram matrices' in-place update
def _gram_model(cls):
    """A Gram-model estimator that has served a removal and an addition."""
    X, y = make_regression(n_samples=130, n_features=4, noise=1.0, random_state=0)
    if cls is DeltaGradLogisticRegression:
        y = y > 0
    est = cls(**PARAMS, curvature="gram").fit(X[:100], y[:100])
    est.partial_unfit(indices=[0, 1])
    est.partial_fit(X[100:105], y[100:105])
    assert est._cache.grams is not None
    return est, X, y


def _gram_requests(X, y):
    return [
        lambda est: est.partial_unfit(indices=[3, 40, 77]),
        lambda est: est.partial_fit(X[105:108], y[105:108]),
        lambda est: est.partial_unfit(indices=[5, 50], method="exact"),
    ]


def _assert_same_state(est, twin):
    for name in [*NAMED_STATE, "_cache.grams", "_cache.gram_points"]:
        _assert_same(_lookup(est, name), _lookup(twin, name), name)


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
@pytest.mark.parametrize("cls", [DeltaGradRidge, DeltaGradLogisticRegression])
def test_request_interrupted_around_the_gram_update(cls, error, monkeypatch):
    """The commit changes the Grams, which the old and the new state share, in
    place as its last step: interrupted before, the estimator is as it was (Grams
    included); interrupted right after, the request is done."""
    base, X, y = _gram_model(cls)
    original = replay_module.GramUpdate.apply
    for request in _gram_requests(X, y):
        est = copy.deepcopy(base)
        before = snapshot(est)
        with monkeypatch.context() as patch:
            patch.setattr(replay_module.GramUpdate, "apply", _raiser(error))
            with pytest.raises(error, match="injected"):
                request(est)
        assert_unchanged(est, before)
        done = copy.deepcopy(base)
        request(done)
        _assert_same_state(est, base)
        with monkeypatch.context() as patch:
            patch.setattr(replay_module.GramUpdate, "apply", _after(original, error))
            with pytest.raises(error, match="after the call"):
                request(est)
        _assert_same_state(est, done)
        assert len(est.update_log_) == len(done.update_log_)


@pytest.mark.parametrize("cls", [DeltaGradRidge, DeltaGradLogisticRegression])
def test_gram_update_in_place_equals_the_copy(cls):
    """Grams that cannot be written (read-only, or mapped from a file) are
    updated into new memory instead, bitwise as the in-place update; the new
    state then owns writable Grams again, and the old memory is left as it was."""
    base, X, y = _gram_model(cls)
    for request in _gram_requests(X, y):
        in_place, copied = copy.deepcopy(base), copy.deepcopy(base)
        shared = in_place._cache.grams
        frozen = copied._cache.grams
        frozen.flags.writeable = False
        kept = frozen.copy()
        request(in_place)
        request(copied)
        assert in_place._cache.grams is shared
        assert copied._cache.grams is not frozen
        assert copied._cache.grams.flags.writeable
        np.testing.assert_array_equal(frozen, kept)
        assert not np.array_equal(shared, kept)
        _assert_same_state(in_place, copied)
        base = in_place


# ------------------------------------------------------- drift, fallback, audit
def _problem(kind, n=2000, seed=0):
    if kind == "clf":
        X, y = make_classification(
            n_samples=n,
            n_features=12,
            n_informative=8,
            n_classes=3,
            random_state=seed,
        )
        return X, y, DeltaGradLogisticRegression
    X, y = make_regression(n_samples=n, n_features=12, noise=5.0, random_state=seed)
    return X, y / y.std(), DeltaGradRidge


PROBLEM_PARAMS = dict(
    batch_size=128,
    max_iter=6,
    alpha=1e-3,
    burn_in=5,
    exact_period=5,
    curvature="lbfgs",
    random_state=0,
)


@pytest.mark.parametrize("kind", KINDS)
def test_audit_log_and_drift(kind):
    X, y, cls = _problem(kind)
    est = cls(**PROBLEM_PARAMS).fit(X[:1900], y[:1900])
    assert est.drift_ == 0.0 and est.update_log_ == [] and est.last_update_ is None
    est.partial_unfit(indices=np.arange(0, 19))  # 1%: no fallback by default
    first = est.last_update_
    assert first.method == first.requested_method == "deltagrad"
    assert first.fallback is None
    assert first.n_approximate_iterations > 0 and first.n_residual_checks > 0
    assert (first.n_removed, first.n_added, first.n_samples) == (19, 0, 1881)
    assert first.drift > 0 and first.drift_total == est.drift_ == first.drift
    est.partial_fit(X[1900:1919], y[1900:1919])
    second = est.last_update_
    assert (second.n_removed, second.n_added, second.n_samples) == (0, 19, 1900)
    assert est.drift_ == pytest.approx(np.hypot(first.drift, second.drift))
    assert est.drift_ > first.drift
    est.partial_unfit(indices=[30, 31], method="exact")
    third = est.last_update_
    assert third.method == "exact" and third.drift == 0 and est.drift_ == 0.0
    assert [r.method for r in est.update_log_] == ["deltagrad", "deltagrad", "exact"]
    assert all(isinstance(r, ReplayReport) for r in est.update_log_)
    assert est.update_log_[-1] is est.last_update_
    assert sum(r.seconds for r in est.update_log_) > 0
    # A refit starts a new log.
    est.fit(X[:100], y[:100])
    assert est.update_log_ == [] and est.drift_ == 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_exact_request_is_the_reference_retrain_of_the_whole_history(kind):
    """After DeltaGrad requests, method="exact" recomputes from the first estimated
    gradient, so it equals a twin that served every request exactly."""
    X, y, cls = _problem(kind)
    est = cls(**PROBLEM_PARAMS).fit(X[:1900], y[:1900])
    twin = copy.deepcopy(est)
    est.partial_unfit(indices=np.arange(100, 119))
    est.partial_fit(X[1900:1910], y[1900:1910])
    assert not est._cache.exact.all()
    twin.partial_unfit(indices=np.arange(100, 119), method="exact")
    twin.partial_fit(X[1900:1910], y[1900:1910], method="exact")
    est.partial_unfit(indices=[7], method="exact")
    twin.partial_unfit(indices=[7], method="exact")
    assert est._cache.exact.all()
    assert_allclose(est._cache.final, twin._cache.final, rtol=1e-10, atol=1e-12)
    assert_allclose(est._cache.weights, twin._cache.weights, rtol=1e-10, atol=1e-12)


def test_drift_estimate_tracks_the_true_error():
    """On a 20,000-row problem the drift estimate is within a factor ~10 of the
    true relative error ||w_DG - w_U|| / ||w_U|| (measured 5.8-6.8x)."""
    X, y = make_classification(
        n_samples=20000, n_features=30, n_informative=15, n_classes=4, random_state=0
    )
    params = dict(batch_size=1024, max_iter=10, alpha=1e-3, random_state=0)
    est = DeltaGradLogisticRegression(**params).fit(X, y)
    exact = copy.deepcopy(est)
    rng = np.random.default_rng(0)
    for _ in range(3):
        ids = rng.choice(est.sample_ids_, 200, replace=False)
        est.partial_unfit(indices=ids)
        exact.partial_unfit(indices=ids, method="exact")
        a, b = est._cache.final, exact._cache.final
        true = np.linalg.norm(a - b) / np.linalg.norm(b)
        assert 0.5 * true < est.drift_ < 30 * true


@pytest.mark.parametrize("kind", KINDS)
def test_change_share_fallback(kind):
    X, y, cls = _problem(kind, n=400)
    est = cls(**PROBLEM_PARAMS, max_change_share=0.1).fit(X[:300], y[:300])
    twin = copy.deepcopy(est)
    est.partial_unfit(indices=np.arange(31))  # 10.3% > 10%
    twin.partial_unfit(indices=np.arange(31), method="exact")
    report = est.last_update_
    assert report.method == "exact" and report.requested_method == "deltagrad"
    assert report.fallback == "max_change_share" and est.drift_ == 0.0
    assert_array_equal(est._cache.final, twin._cache.final)
    # Exactly at the share: DeltaGrad.
    est.partial_unfit(indices=np.arange(31, 58))  # 27 of 269 rows, 10.04%
    assert est.last_update_.fallback == "max_change_share"
    est.partial_unfit(indices=np.arange(58, 82))  # 24 of 242 rows, 9.9%
    assert est.last_update_.method == "deltagrad"
    assert est.last_update_.fallback is None
    # Additions count too.
    est.partial_fit(X[300:330], y[300:330])
    assert est.last_update_.fallback == "max_change_share"
    # None disables it.
    est.set_params(max_change_share=None).partial_unfit(indices=np.arange(82, 200))
    assert est.last_update_.method == "deltagrad"


@pytest.mark.parametrize("kind", KINDS)
def test_default_fallback_does_not_trigger_for_one_percent(kind):
    X, y, cls = _problem(kind)
    est = cls(**PROBLEM_PARAMS).fit(X, y)
    for start in range(0, 100, 20):
        est.partial_unfit(indices=np.arange(start, start + 20))  # 1%
        assert est.last_update_.method == "deltagrad"
        assert est.last_update_.fallback is None


@pytest.mark.parametrize("kind", KINDS)
def test_drift_fallback(kind, capsys):
    X, y, cls = _problem(kind)
    est = cls(**PROBLEM_PARAMS).fit(X, y)
    est.partial_unfit(indices=np.arange(20))
    drift = est.drift_
    assert drift > 0
    twin = copy.deepcopy(est)
    # A threshold the next request would pass: exact instead, drift reset.
    est.set_params(max_drift=drift * 1.0001, verbose=1)
    est.partial_unfit(indices=np.arange(20, 40))
    assert "fallback: max_drift" in capsys.readouterr().out
    report = est.last_update_
    assert report.method == "exact" and report.fallback == "max_drift"
    assert est.drift_ == 0.0 and report.drift_total == 0.0
    twin.partial_unfit(indices=np.arange(20, 40), method="exact")
    assert_array_equal(est._cache.final, twin._cache.final)
    # Below the threshold: DeltaGrad, and the drift accumulates from 0 again.
    est.set_params(max_drift=100 * drift)
    est.partial_unfit(indices=np.arange(40, 60))
    assert est.last_update_.method == "deltagrad"
    assert 0 < est.drift_ == est.last_update_.drift


@pytest.mark.parametrize(
    "params",
    [
        {"max_change_share": 0},
        {"max_change_share": 1.5},
        {"max_change_share": "big"},
        {"max_drift": 0},
        {"max_drift": -1.0},
        {"max_cache_bytes": 0},
        {"max_cache_bytes": 1.5},
    ],
)
def test_reliability_parameters_are_validated(params):
    X, y = make_classification(n_samples=40, n_features=4, random_state=0)
    with pytest.raises(InvalidParameterError):
        DeltaGradLogisticRegression(**params).fit(X, y)
    est = DeltaGradLogisticRegression(random_state=0).fit(X, y)
    before = snapshot(est)
    est.set_params(**params)
    with pytest.raises(InvalidParameterError):
        est.partial_unfit(indices=[0])
    est.set_params(**{k: DeltaGradLogisticRegression().get_params()[k] for k in params})
    assert_unchanged(est, before)


# ----------------------------------------------------------------- memory guard
@pytest.mark.parametrize("kind", KINDS)
def test_memory_guard(kind):
    X, y, cls = _problem(kind, n=500)
    est = cls(**PROBLEM_PARAMS).fit(X, y)
    nbytes = est.cache_nbytes_
    assert cls(**PROBLEM_PARAMS, max_cache_bytes=nbytes).fit(X, y).cache_nbytes_ == (
        nbytes
    )
    small = cls(**PROBLEM_PARAMS, max_cache_bytes=nbytes - 1)
    with pytest.raises(CacheTooLargeError, match=rf"\({nbytes} bytes") as info:
        small.fit(X, y)
    assert isinstance(info.value, MemoryError) and isinstance(info.value, ValueError)
    assert "max_cache_bytes" in str(info.value)
    assert not hasattr(small, "n_features_in_") and not hasattr(small, "coef_")
    # A fitted estimator whose refit would be too large is left as it was.
    before = snapshot(est)
    est.set_params(max_iter=1000, max_cache_bytes=10 * nbytes)
    with pytest.raises(CacheTooLargeError, match="GiB"):
        est.fit(X, y)
    est.set_params(max_iter=PROBLEM_PARAMS["max_iter"], max_cache_bytes=8 * 2**30)
    assert_unchanged(est, before)
    assert cls(**PROBLEM_PARAMS, max_cache_bytes=None).fit(X, y).cache_nbytes_ > 0


@pytest.mark.parametrize("cls", [DeltaGradRidge, DeltaGradLogisticRegression])
def test_memory_guard_counts_gram_matrices(cls):
    """The Grams (built at fit) and, for the logistic loss, the iterates they are
    weighted at count, and the message says so."""
    X, y = make_regression(n_samples=300, n_features=5, random_state=0)
    if cls is DeltaGradLogisticRegression:
        y = y > 0
    params = dict(batch_size=32, max_iter=4, curvature="gram", random_state=0)
    est = cls(**params).fit(X, y)
    cache = est._cache
    assert cache.grams is not None
    points = 0 if cache.gram_points is None else cache.gram_points.nbytes
    assert (points > 0) == (cls is DeltaGradLogisticRegression)
    nbytes = est.cache_nbytes_
    assert nbytes >= cache.grams.nbytes + points + cache.weights.nbytes * 2
    cls(**params, max_cache_bytes=nbytes).fit(X, y)
    with pytest.raises(CacheTooLargeError, match="'gram' curvature model"):
        cls(**params, max_cache_bytes=nbytes - 1).fit(X, y)
    # Without the Gram model the same fit is smaller than that by the Grams, and
    # the Hessian model's reference matrix counts in their place.
    plain = {**params, "curvature": "hessian", "reference_correction": False}
    hessian = cls(**plain).fit(X, y)
    assert hessian.cache_nbytes_ == nbytes - cache.grams.nbytes - points
    referenced = cls(**{**plain, "reference_correction": True}).fit(X, y)
    reference = referenced._cache.reference_hessian
    assert reference.shape == (6, 6)
    assert referenced.cache_nbytes_ >= hessian.cache_nbytes_ + reference.nbytes


def test_memory_guard_message_for_a_huge_fit():
    """The estimate is computed from the shapes: no allocation before the check."""
    X = np.zeros((200_000, 2))
    X[::2, 0] = 1.0
    y = (X[:, 0] > 0).astype(int)
    est = DeltaGradLogisticRegression(batch_size=1, max_iter=10**4)
    with pytest.raises(CacheTooLargeError, match=r"about [0-9.]+ GiB"):
        est.fit(X, y)
