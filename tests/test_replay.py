"""Removing and adding rows: the exact retrain and the DeltaGrad replay against the
plain-NumPy reference, and the bookkeeping of a request (first iteration, emptied
batches, stable ids)."""

import copy

import numpy as np
import pytest

from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge

from . import reference as ref

N_SAMPLES, N_FEATURES = 48, 4
KINDS = ["binary", "multiclass", "ridge", "ridge-multi"]


def make_data(kind, n_samples=N_SAMPLES, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, N_FEATURES)) * [1.0, 2.0, 0.5, 1.0]
    X += [0.3, 0.0, -1.0, 0.0]
    X[rng.random(X.shape) < 0.2] = 0.0
    coef = np.array([1.0, -0.5, 2.0, 0.3])
    score = X @ coef + 0.5 * rng.standard_normal(n_samples)
    if kind == "binary":
        # Labels that always contain both classes, also in short slices.
        return X, np.where(score > np.median(score), "yes", "no")
    if kind == "multiclass":
        return X, np.digitize(score, np.quantile(score, [0.33, 0.66])) * 10 + 1
    if kind == "ridge":
        return X, score + 2.0
    return X, np.column_stack([score, -score + 1.0, X[:, 0] * 3.0])


def make_estimator(kind, **params):
    Est = DeltaGradRidge if kind.startswith("ridge") else DeltaGradLogisticRegression
    defaults = {
        "alpha": 0.05,
        "max_iter": 6,
        "batch_size": 8,
        "random_state": 0,
        "exact_period": 4,
        "burn_in": 3,
    }
    return Est(**{**defaults, **params})


def new_rows(kind, n_rows, seed=1):
    X, y = make_data(kind, n_samples=n_rows, seed=seed)
    return X + 0.25, y


def rel_diff(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


def assert_rel_close(actual, expected, tol, what):
    err = rel_diff(actual, expected)
    assert err < tol, f"{what}: relative difference {err:.3e} > {tol:.0e}"


def batches(schedule):
    ptr, ids = schedule.batch_ptr, schedule.batch_ids
    return [ids[ptr[t] : ptr[t + 1]] for t in range(len(ptr) - 1)]


def assert_cache_close(est, weights, gradients, final, tol=1e-10):
    cache = est._cache
    assert_rel_close(cache.weights, weights, tol, "weights")
    assert_rel_close(cache.gradients, gradients, tol, "gradients")
    assert_rel_close(cache.final, final, tol, "final")


# ----------------------------------------------------------- the exact retrain
@pytest.mark.parametrize("request_kind", ["remove", "add"])
@pytest.mark.parametrize("kind", KINDS)
def test_exact_method_is_the_numpy_retrain_on_the_changed_schedule(kind, request_kind):
    X, y = make_data(kind)
    est = make_estimator(kind).fit(X, y)
    old = copy.deepcopy(est)
    if request_kind == "remove":
        removed = np.array([5, 17, 30])
        est.partial_unfit(indices=removed, method="exact")
        for before, after in zip(
            batches(old._schedule), batches(est._schedule), strict=True
        ):
            np.testing.assert_array_equal(after, before[~np.isin(before, removed)])
    else:
        Xn, yn = new_rows(kind, 3)
        est.partial_fit(Xn, yn, method="exact")
        added = np.array([48, 49, 50])
        olds, news = batches(old._schedule), batches(est._schedule)
        per_epoch = old._schedule.batches_per_epoch
        for before, after in zip(olds, news, strict=True):
            # Old rows keep their order, added rows come at the end of the batch.
            np.testing.assert_array_equal(after[: before.size], before)
            assert np.isin(after[before.size :], added).all()
        for epoch in range(len(olds) // per_epoch):
            joined = np.concatenate(news[epoch * per_epoch : (epoch + 1) * per_epoch])
            np.testing.assert_array_equal(np.sort(joined[joined >= 48]), added)
    np.testing.assert_array_equal(
        est._schedule.learning_rates, old._schedule.learning_rates
    )
    assert est._cache.exact.all()
    rows, schedule = est._rows, est._schedule
    weights, gradients, final = ref.exact_retrain(
        rows.X,
        rows.Y,
        rows.ids,
        est._model,
        schedule.batch_ptr,
        schedule.batch_ids,
        schedule.learning_rates,
    )
    assert_cache_close(est, weights, gradients, final)
    assert rel_diff(final, old._cache.final) > 1e-6  # the request changed the model
    report = est.last_update_
    assert report.method == "exact"
    assert report.n_exact_iterations == len(weights) - report.first_iteration
    assert report.n_approximate_iterations == 0


def mirrored_data(kind):
    """Rows in mirrored pairs ``c + D[i]``, ``c - D[i]`` (rows ``i`` and ``i + 24``):
    dropping or adding whole pairs leaves the feature means at ``c``, so a model
    centred on the means at ``fit`` is parametrised the same way as a fresh fit."""
    X, y = make_data(kind)
    centre = np.array([0.5, -1.0, 2.0, 0.25])
    half = N_SAMPLES // 2
    D = X[:half] - X[:half].mean(axis=0)
    return np.vstack([centre + D, centre - D]), y, centre


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_full_batch_exact_requests_equal_a_fresh_fit(kind, fit_intercept):
    """Full-batch GD with a fixed step: the schedule does not depend on the rows."""
    X, y, centre = mirrored_data(kind)
    params = {
        "batch_size": None,
        "learning_rate": 0.1,
        "max_iter": 30,
        "fit_intercept": fit_intercept,
    }
    est = make_estimator(kind, **params).fit(X, y)
    removed = np.array([0, 7, 21, 24, 31, 45])  # three mirrored pairs
    est.partial_unfit(indices=removed, method="exact")
    keep = np.setdiff1d(np.arange(N_SAMPLES), removed)
    fresh = make_estimator(kind, **params).fit(X[keep], y[keep])
    assert est.last_update_.first_iteration == 0
    assert est._cache.weights.shape == fresh._cache.weights.shape
    assert_rel_close(est._cache.final, fresh._cache.final, 1e-10, "final")
    assert_rel_close(est._cache.weights, fresh._cache.weights, 1e-10, "weights")
    assert_rel_close(est._cache.gradients, fresh._cache.gradients, 1e-10, "gradients")
    np.testing.assert_allclose(est.coef_, fresh.coef_, rtol=1e-10, atol=1e-12)

    rng = np.random.default_rng(5)
    D = rng.standard_normal((2, N_FEATURES))
    Xn = np.vstack([centre + D, centre - D])
    yn = np.concatenate([y[:2], y[2:4]])
    est.partial_fit(Xn, yn, method="exact")
    X_all, y_all = np.concatenate([X[keep], Xn]), np.concatenate([y[keep], yn])
    fresh = make_estimator(kind, **params).fit(X_all, y_all)
    assert_rel_close(est._cache.final, fresh._cache.final, 1e-10, "final")
    assert_rel_close(est._cache.weights, fresh._cache.weights, 1e-10, "weights")
    np.testing.assert_allclose(est.intercept_, fresh.intercept_, rtol=1e-10, atol=1e-12)


# ------------------------------------------- DeltaGrad with every iteration exact
@pytest.mark.parametrize("curvature", ["lbfgs", "hessian"])
@pytest.mark.parametrize("kind", KINDS)
def test_deltagrad_with_exact_period_one_is_the_exact_retrain(kind, curvature):
    X, y = make_data(kind)
    est = make_estimator(kind, exact_period=1, burn_in=0, curvature=curvature)
    est.fit(X, y)
    Xn, yn = new_rows(kind, 3)
    requests = [
        ("unfit", {"indices": [2, 19, 33]}),
        ("fit", {"X": Xn, "y": yn}),
        ("unfit", {"indices": [49, 4]}),
    ]
    for name, kwargs in requests:
        exact = copy.deepcopy(est)
        getattr(exact, f"partial_{name}")(**kwargs, method="exact")
        getattr(est, f"partial_{name}")(**kwargs, method="deltagrad")
        assert est.last_update_.n_approximate_iterations == 0
        assert est.last_update_.first_iteration == exact.last_update_.first_iteration
        c, e = est._cache, exact._cache
        assert_cache_close(est, e.weights, e.gradients, e.final)
        np.testing.assert_array_equal(c.exact, e.exact)
        np.testing.assert_array_equal(est.sample_ids_, exact.sample_ids_)


# ------------------------------------------- DeltaGrad against the NumPy replay
REPLAY_SETTINGS = [
    # The L-BFGS memory never fills (at most 11 exact iterations).
    pytest.param({"curvature": "lbfgs", "lbfgs_memory": 32}, id="lbfgs-m32"),
    pytest.param(
        {"curvature": "lbfgs", "lbfgs_memory": 16, "exact_period": 3, "burn_in": 0},
        id="lbfgs-m16-j0",
    ),
    # A strong penalty: sigma = y's / s's of the newest pair falls below alpha and
    # is floored there.
    pytest.param(
        {"curvature": "lbfgs", "lbfgs_memory": 32, "alpha": 2.0, "exact_period": 3},
        id="lbfgs-sigma-floor",
    ),
    # The memory fills: new pairs replace the oldest ones, so the compact form's
    # middle matrix must be refactorised although the number of pairs is unchanged.
    pytest.param(
        {"curvature": "lbfgs", "lbfgs_memory": 2, "exact_period": 3, "burn_in": 2},
        id="lbfgs-m2-full",
    ),
    pytest.param(
        {"curvature": "lbfgs", "lbfgs_memory": 5, "exact_period": 5, "burn_in": 6},
        id="lbfgs-m5-full",
    ),
    pytest.param({"curvature": "hessian", "hessian_rows": 3}, id="hessian-3rows"),
    pytest.param(
        {"curvature": "hessian", "hessian_rows": 64, "exact_period": 6, "burn_in": 1},
        id="hessian-allrows",
    ),
]


def check_against_reference(est, before, chained=None, tol=1e-9):
    """Compare the request that took snapshot ``before`` to ``est`` with the NumPy
    replay; ``chained`` replaces the input cache by the reference's own previous
    output. Returns the reference output."""
    after = ref.state_of(est)
    if chained is not None:
        before = {
            **before,
            **{k: chained[k] for k in ("weights", "gradients", "exact")},
        }
    out = ref.replay_request(before, after, est._model, est)
    report = est.last_update_
    assert report.method == "deltagrad"
    assert report.first_iteration == out["first_iteration"]
    assert report.n_exact_iterations == out["n_exact"]
    n_replayed = len(after["learning_rates"]) - out["first_iteration"]
    assert report.n_exact_iterations + report.n_approximate_iterations == n_replayed
    np.testing.assert_array_equal(after["exact"], out["exact"])
    for key in ("weights", "gradients", "final"):
        assert_rel_close(after[key], out[key], tol, f"{key} (Numba vs NumPy replay)")
    return out


@pytest.mark.parametrize("settings", REPLAY_SETTINGS)
@pytest.mark.parametrize("request_kind", ["remove", "add"])
@pytest.mark.parametrize("kind", KINDS)
def test_deltagrad_replay_matches_numpy_replay(kind, request_kind, settings):
    X, y = make_data(kind)
    est = make_estimator(kind, **settings).fit(X, y)
    before = ref.state_of(est)
    if request_kind == "remove":
        est.partial_unfit(indices=[3, 11, 26, 40])
    else:
        est.partial_fit(*new_rows(kind, 4))
    out = check_against_reference(est, before)
    # Some iterations were approximate, so the curvature model was exercised.
    assert 0 < est.last_update_.n_approximate_iterations
    assert not out["exact"].all()


@pytest.mark.parametrize("settings", REPLAY_SETTINGS)
@pytest.mark.parametrize("kind", ["multiclass", "ridge"])
def test_sequence_of_requests_matches_numpy_replay(kind, settings):
    """Each request replays from the cache the previous one left (online use)."""
    X, y = make_data(kind)
    est = make_estimator(kind, **settings).fit(X, y)
    Xn, yn = new_rows(kind, 5)
    requests = [
        lambda: est.partial_unfit(indices=[1, 9, 30]),
        lambda: est.partial_fit(Xn[:3], yn[:3]),
        lambda: est.partial_unfit(indices=[49, 12]),  # 49 was added just before
        lambda: est.partial_fit(Xn[3:], yn[3:]),
        lambda: est.partial_unfit(indices=[44]),
    ]
    chained = None
    for request in requests:
        before = ref.state_of(est)
        request()
        chained = check_against_reference(est, before, chained)


# ------------------------------------------------------- bookkeeping of a request
def first_iteration_with(schedule, ids):
    for t, batch in enumerate(batches(schedule)):
        if np.isin(batch, ids).any():
            return t
    raise AssertionError("no batch holds these ids")


@pytest.mark.parametrize("method", ["deltagrad", "exact"])
@pytest.mark.parametrize("kind", ["binary", "ridge-multi"])
def test_replay_starts_at_first_changed_iteration(kind, method):
    X, y = make_data(kind)
    est = make_estimator(kind).fit(X, y)
    # A row whose first appearance is late in the first epoch.
    first_batch_ids = batches(est._schedule)[: est._schedule.batches_per_epoch]
    row = first_batch_ids[-2][0]
    t0 = first_iteration_with(est._schedule, [row])
    assert t0 >= est._schedule.batches_per_epoch - 2 > 0
    before = copy.deepcopy(est._cache)
    est.partial_unfit(indices=[row], method=method)
    assert est.last_update_.first_iteration == t0
    cache = est._cache
    np.testing.assert_array_equal(cache.weights[: t0 + 1], before.weights[: t0 + 1])
    np.testing.assert_array_equal(cache.gradients[:t0], before.gradients[:t0])
    np.testing.assert_array_equal(cache.exact[:t0], before.exact[:t0])
    assert not np.array_equal(cache.gradients[t0], before.gradients[t0])
    assert not np.array_equal(cache.weights[t0 + 1], before.weights[t0 + 1])

    # An addition starts where the first added row was placed.
    before_schedule = copy.deepcopy(est._schedule)
    before = copy.deepcopy(est._cache)
    est.partial_fit(*new_rows(kind, 1), method=method)
    new_id = est.sample_ids_[-1]
    t1 = first_iteration_with(est._schedule, [new_id])
    assert est.last_update_.first_iteration == t1
    np.testing.assert_array_equal(
        est._cache.weights[: t1 + 1], before.weights[: t1 + 1]
    )
    for t in range(t1):
        np.testing.assert_array_equal(
            batches(est._schedule)[t], batches(before_schedule)[t]
        )


def emptied_batch_setup(kind, **params):
    X, y = make_data(kind)
    est = make_estimator(kind, learning_rate=0.05, **params).fit(X, y)
    t = 3
    return est, t, batches(est._schedule)[t]


@pytest.mark.parametrize("method", ["deltagrad", "exact"])
@pytest.mark.parametrize("kind", ["ridge", "multiclass"])
def test_emptied_batch_is_skipped(kind, method):
    """A batch whose rows are all removed leaves w unchanged (no penalty step)."""
    est, t, batch = emptied_batch_setup(kind)
    T = est._schedule.n_iterations
    est.partial_unfit(indices=batch, method=method)
    cache = est._cache
    assert cache.weights.shape[0] == cache.gradients.shape[0] == T
    assert np.diff(est._schedule.batch_ptr)[t] == 0
    np.testing.assert_array_equal(cache.gradients[t], 0.0)
    np.testing.assert_array_equal(cache.weights[t + 1], cache.weights[t])
    assert np.abs(cache.weights[t]).max() > 0  # the penalty would have moved it


@pytest.mark.parametrize("kind", ["ridge", "multiclass"])
def test_emptied_batch_numpy_retrain(kind):
    """The exact retrain after emptying a batch is the NumPy SGD that skips it."""
    est, t, batch = emptied_batch_setup(kind)
    est.partial_unfit(indices=batch, method="exact")
    rows, schedule = est._rows, est._schedule
    weights, gradients, final = ref.exact_retrain(
        rows.X,
        rows.Y,
        rows.ids,
        est._model,
        schedule.batch_ptr,
        schedule.batch_ids,
        schedule.learning_rates,
    )
    assert_cache_close(est, weights, gradients, final)


@pytest.mark.parametrize("kind", ["ridge", "multiclass"])
def test_emptied_batch_deltagrad_matches_numpy_replay_and_refills(kind):
    """Deltagrad skips the emptied batch, and a later addition that lands in it
    replays it exactly (its old batch is empty)."""
    est, t, batch = emptied_batch_setup(kind, batch_size=4, max_iter=4)
    before = ref.state_of(est)
    est.partial_unfit(indices=batch)
    chained = check_against_reference(est, before)
    Xn, yn = new_rows(kind, 12)
    before = ref.state_of(est)
    est.partial_fit(Xn, yn)
    check_against_reference(est, before, chained)
    new_ids = est.sample_ids_[-12:]
    assert np.isin(batches(est._schedule)[t], new_ids).any()


@pytest.mark.parametrize("kind", ["binary", "ridge"])
def test_ids_are_stable_and_never_reused(kind):
    X, y = make_data(kind)
    est = make_estimator(kind).fit(X, y)
    np.testing.assert_array_equal(est.sample_ids_, np.arange(N_SAMPLES))
    est.partial_unfit(indices=[47, 3, 20])  # 47 is the highest id
    expected = np.setdiff1d(np.arange(N_SAMPLES), [3, 20, 47])
    np.testing.assert_array_equal(est.sample_ids_, expected)
    assert est.n_samples_seen_ == N_SAMPLES - 3
    assert not np.isin([3, 20, 47], est._schedule.batch_ids).any()

    Xn, yn = new_rows(kind, 4)
    est.partial_fit(Xn[:2], yn[:2])
    np.testing.assert_array_equal(est.sample_ids_[-2:], [48, 49])
    est.partial_unfit(indices=[49])
    est.partial_fit(Xn[2:], yn[2:])
    np.testing.assert_array_equal(est.sample_ids_[-3:], [48, 50, 51])
    assert np.all(np.diff(est.sample_ids_) > 0)
    # Each id still names its row.
    by_id = {i: X[i] for i in range(N_SAMPLES)}
    by_id.update({48: Xn[0], 50: Xn[2], 51: Xn[3]})
    for position, row_id in enumerate(est.sample_ids_):
        np.testing.assert_array_equal(est._rows.X[position], by_id[row_id])
    assert set(est._schedule.batch_ids) == set(est.sample_ids_)
    with pytest.raises(ValueError):
        est.partial_unfit(indices=[49])


FIDELITY_SETTINGS = [
    pytest.param({"curvature": "lbfgs", "lbfgs_memory": 2}, id="lbfgs-m2"),
    pytest.param({"curvature": "lbfgs", "lbfgs_memory": 32}, id="lbfgs-m32"),
    pytest.param({"curvature": "hessian", "hessian_rows": 4}, id="hessian-4rows"),
]


@pytest.mark.parametrize("settings", FIDELITY_SETTINGS)
@pytest.mark.parametrize("kind", KINDS)
def test_deltagrad_is_much_closer_to_the_retrain_than_the_old_model(kind, settings):
    """DESIGN section 6: ``||w_DG - w_U|| / ||w - w_U||`` is small."""
    X, y = make_data(kind)
    est = make_estimator(kind, max_iter=10, **settings).fit(X, y)
    w_old = est._cache.final.copy()
    exact = copy.deepcopy(est).partial_unfit(indices=[3, 11, 26], method="exact")
    est.partial_unfit(indices=[3, 11, 26])
    w_u = exact._cache.final
    ratio = np.linalg.norm(est._cache.final - w_u) / np.linalg.norm(w_old - w_u)
    assert ratio < 0.5
