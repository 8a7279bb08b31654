"""Removing and adding rows: the exact retrain and the DeltaGrad replay against the
plain-NumPy reference, and the bookkeeping of a request (first iteration, emptied
batches, stable ids)."""

import copy

import numpy as np
import pytest
import scipy.sparse as sp

from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge
from sklearn_deltagrad import _replay as replay_module
from sklearn_deltagrad._curvature import CURVATURE_CODES, batch_grams
from sklearn_deltagrad._kernels import cpu
from sklearn_deltagrad._replay import ReplaySettings, apply_change
from sklearn_deltagrad._schedule import (
    add_rows,
    gather,
    gather_into,
    make_schedule,
    position_table,
    remove_rows,
)
from sklearn_deltagrad._training import LinearModel, TrainingCache, run_sgd

from . import reference as ref
from .test_training import LOSS_KINDS, rows_in_layout, sgd_problem

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


def replay_tolerance(loss, curvature, referenced=False):
    """How close a replay comes to NumPy's: the logistic loss's Grams
    (``gram_dtype``) and the CPU's reference Hessian (``reference_operator``) are
    single precision, so products with them agree to about 1e-7."""
    single = referenced or (curvature == "gram" and loss == ref.BINARY_LOGISTIC)
    return 1e-7 if single else 1e-9


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
        {"curvature": "hessian", "hessian_rows": 3, "secant_correction": False},
        id="hessian-3rows-plain",
    ),
    pytest.param(
        {"curvature": "hessian", "hessian_rows": 3, "reference_correction": False},
        id="hessian-3rows-noref",
    ),
    # Checks at every second iteration: the secant weight is refitted often.
    pytest.param(
        {"curvature": "hessian", "hessian_rows": 5, "exact_period": 2, "burn_in": 3},
        id="hessian-5rows-t02",
    ),
    pytest.param(
        {"curvature": "hessian", "hessian_rows": 64, "exact_period": 6, "burn_in": 1},
        id="hessian-allrows",
    ),
]


def assert_report_counts(report, out):
    """The report's first iteration and iteration counts agree with the NumPy
    replay ``out``. Iterations skipped for an empty batch (or one of zero weight)
    are neither computed exactly nor modelled; the report may count them with
    either kind (see test_skipped_iterations_are_not_reported_as_approximate)."""
    assert report.first_iteration == out["first_iteration"]
    t0 = out["first_iteration"]
    n_approximate = int((~out["exact"][t0:]).sum())
    extra_exact = report.n_exact_iterations - out["n_exact"]
    extra_approximate = report.n_approximate_iterations - n_approximate
    assert extra_exact >= 0 and extra_approximate >= 0
    assert extra_exact + extra_approximate <= out["n_skipped"]


def check_against_reference(est, before, chained=None, tol=None):
    """Compare the request that took snapshot ``before`` to ``est`` with the NumPy
    replay (to ``tol``, by default :func:`replay_tolerance`'s); ``chained``
    replaces the input cache by the reference's own previous output. Returns the
    reference output."""
    if tol is None:
        tol = replay_tolerance(
            est._model.loss, ref.resolved_curvature(est), ref.uses_reference_of(est)
        )
    after = ref.state_of(est)
    if chained is not None:
        before = {
            **before,
            **{k: chained[k] for k in ("weights", "gradients", "exact")},
        }
    out = ref.replay_request(before, after, est._model, est)
    report = est.last_update_
    assert report.method == "deltagrad"
    assert_report_counts(report, out)
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


def test_schedule_ids_are_int32_until_an_id_needs_int64():
    rng = np.random.default_rng(0)
    schedule = make_schedule(10, 4, 3, 1.0, rng)
    assert schedule.batch_ids.dtype == np.int32
    wide = copy.deepcopy(schedule)
    wide.batch_ids = wide.batch_ids.astype(np.int64)
    # Removals keep the type; the edit is the same as on int64 ids.
    narrow_change = remove_rows(schedule, np.array([2, 7]))
    wide_change = remove_rows(wide, np.array([2, 7]))
    assert narrow_change.schedule.batch_ids.dtype == np.int32
    assert wide_change.schedule.batch_ids.dtype == np.int64
    np.testing.assert_array_equal(
        narrow_change.schedule.batch_ids, wide_change.schedule.batch_ids
    )
    np.testing.assert_array_equal(narrow_change.removed_ids, wide_change.removed_ids)
    # Small new ids stay int32; an id past 2**31 - 1 widens the schedule exactly.
    assert add_rows(schedule, np.array([10, 11])).schedule.batch_ids.dtype == np.int32
    big = np.array([2**31, 2**31 + 5], dtype=np.int64)
    grown = add_rows(schedule, big).schedule
    assert grown.batch_ids.dtype == np.int64
    assert set(grown.batch_ids.tolist()) == set(range(10)) | set(big.tolist())


@pytest.mark.parametrize("n_removed", [1, 2, 40, 300])
def test_removed_rows_leave_every_batch_they_were_in(n_removed):
    """``remove_rows`` against NumPy, for few removed rows (whose entries are
    found first and the runs between them copied) and many (one test per entry):
    the kept and the removed entries of each batch, in their order."""
    rng = np.random.default_rng(n_removed)
    schedule = make_schedule(1000, 64, 3, 1.0, rng)
    removed = np.sort(rng.choice(1000, n_removed, replace=False))
    # The removed rows' first and last entries included (the runs' ends).
    if n_removed > 1:
        removed[:2] = [schedule.batch_ids[0], schedule.batch_ids[-1]]
        removed = np.unique(removed)
    change = remove_rows(schedule, removed)
    # With the bound on the ids that the estimators pass, the same edit.
    bounded = remove_rows(schedule, removed, id_bound=1000)
    for name in ("removed_ptr", "removed_ids"):
        np.testing.assert_array_equal(getattr(bounded, name), getattr(change, name))
    np.testing.assert_array_equal(bounded.schedule.batch_ids, change.schedule.batch_ids)
    gone = np.isin(schedule.batch_ids, removed)
    iterations = np.repeat(np.arange(schedule.n_iterations), schedule.batch_sizes())
    n_iterations = schedule.n_iterations
    kept_counts = np.bincount(iterations[~gone], minlength=n_iterations)
    removed_counts = np.bincount(iterations[gone], minlength=n_iterations)
    np.testing.assert_array_equal(change.schedule.batch_ids, schedule.batch_ids[~gone])
    np.testing.assert_array_equal(change.removed_ids, schedule.batch_ids[gone])
    np.testing.assert_array_equal(np.diff(change.schedule.batch_ptr), kept_counts)
    np.testing.assert_array_equal(np.diff(change.removed_ptr), removed_counts)
    assert change.removed_ids.size == removed.size * 3  # once per epoch


def test_position_table_translates_ids_whole_or_a_stretch_at_a_time():
    row_ids = np.array([0, 2, 3, 7, 11], dtype=np.int64)  # sorted, with gaps
    table = position_table(row_ids)
    assert table.dtype == np.int32
    np.testing.assert_array_equal(table[row_ids], np.arange(5))
    assert (np.delete(table, row_ids) == -1).all()  # ids that are not rows
    ids = np.array([7, 0, 11, 2, 2, 3], dtype=np.int32)
    expected = np.searchsorted(row_ids, ids)
    np.testing.assert_array_equal(gather(table, ids), expected)
    buffer = np.full(8, -5, dtype=table.dtype)
    stretch = gather_into(table, ids, 2, 3, buffer)
    np.testing.assert_array_equal(stretch, expected[2:5])
    assert np.shares_memory(stretch, buffer) and (buffer[3:] == -5).all()
    assert gather_into(table, ids, 6, 0, buffer).shape == (0,)


def test_added_rows_join_the_end_of_their_batches():
    """``add_rows`` equals a stable sort of all entries by iteration (old entries
    first), on batches of uneven sizes, including emptied ones."""
    rng = np.random.default_rng(1)
    schedule = make_schedule(23, 5, 4, 1.0, rng)
    schedule = remove_rows(schedule, batch_of(schedule, 2)).schedule
    next_id = 23
    for n_new in [1, 4, 2]:
        new_ids = np.arange(next_id, next_id + n_new)
        next_id += n_new
        change = add_rows(schedule, new_ids)
        added_iterations = np.repeat(
            np.arange(schedule.n_iterations), np.diff(change.added_ptr)
        )
        old_iterations = np.repeat(
            np.arange(schedule.n_iterations), schedule.batch_sizes()
        )
        order = np.argsort(
            np.concatenate([old_iterations, added_iterations]), kind="stable"
        )
        expected = np.concatenate([schedule.batch_ids, change.added_ids])[order]
        np.testing.assert_array_equal(change.schedule.batch_ids, expected)
        np.testing.assert_array_equal(
            np.diff(change.schedule.batch_ptr),
            schedule.batch_sizes() + np.diff(change.added_ptr),
        )
        # Each new row joins one batch of every epoch.
        epochs = added_iterations // schedule.batches_per_epoch
        for row in new_ids:
            assert sorted(epochs[change.added_ids == row]) == list(range(4))
        schedule = change.schedule


@pytest.mark.parametrize("kind", ["binary", "multiclass", "ridge"])
def test_requests_on_an_int64_schedule_give_the_same_model(kind):
    """Pickles from before the int32 schedule hold int64 ids: same results."""
    X, y = make_data(kind)
    Xn, yn = new_rows(kind, 3)
    narrow = make_estimator(kind).fit(X, y)
    wide = copy.deepcopy(narrow)
    wide._schedule.batch_ids = wide._schedule.batch_ids.astype(np.int64)
    for est in (narrow, wide):
        est.partial_unfit(indices=[3, 20])
    assert wide._schedule.batch_ids.dtype == np.int64
    assert narrow.cache_nbytes_ < wide.cache_nbytes_
    for est in (narrow, wide):
        est.partial_fit(Xn, yn)  # narrows the ids that fit int32
        est.partial_unfit(indices=[49], method="exact")
    assert narrow._schedule.batch_ids.dtype == np.int32
    np.testing.assert_array_equal(narrow.coef_, wide.coef_)
    np.testing.assert_array_equal(narrow.intercept_, wide.intercept_)
    np.testing.assert_array_equal(narrow._cache.weights, wide._cache.weights)
    np.testing.assert_array_equal(narrow._schedule.batch_ids, wide._schedule.batch_ids)


def centred_max_norm(X, est):
    """The largest ``||(x_i - offset, 1)||^2`` over the rows of dense ``X``."""
    return float((((X - est._model.offset) ** 2).sum(axis=1) + 1.0).max())


@pytest.mark.parametrize("kind", ["binary", "multiclass", "ridge"])
def test_requests_take_the_row_norm_bound_the_estimator_keeps(kind, monkeypatch):
    """The replay's curvature bound needs the largest centred row norm. The
    estimator keeps it, so that no request makes a pass over the rows for it: the
    rows' own at fit, raised by added rows, left as it is (a looser bound) by
    removals."""
    seen = []
    true_bound = replay_module.curvature_bound

    def spy(X, model, max_row_norm=None):
        seen.append(max_row_norm)
        return true_bound(X, model, max_row_norm)

    monkeypatch.setattr(replay_module, "curvature_bound", spy)
    X, y = make_data(kind)
    est = make_estimator(kind).fit(X, y)
    fit_norm = centred_max_norm(X, est)
    assert est._max_row_norm == pytest.approx(fit_norm, rel=1e-12)

    est.partial_unfit(indices=[3, 20])
    assert seen[-1] == est._max_row_norm == pytest.approx(fit_norm, rel=1e-12)

    Xn, yn = new_rows(kind, 2)
    Xn[1] *= 10.0  # far longer than any training row
    long_norm = centred_max_norm(Xn[1:], est)
    assert long_norm > 2 * fit_norm
    est.partial_fit(Xn, yn)
    assert seen[-1] == est._max_row_norm == pytest.approx(long_norm, rel=1e-12)

    est.partial_unfit(indices=[est.sample_ids_[-1]])  # the long row goes
    assert seen[-1] == est._max_row_norm == pytest.approx(long_norm, rel=1e-12)
    assert len(seen) == 3


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


# ------------------------- apply_change with sample weights, float32 and CSR rows
N_OLD, N_NEW = 48, 5
BATCH, EPOCHS = 8, 6

# (loss, n_outputs, curvature, burn_in, exact_period, lbfgs_memory, hessian_rows)
WEIGHTED_CASES = [
    pytest.param(ref.SQUARED, 1, "lbfgs", 3, 4, 32, 0, id="squared-lbfgs"),
    pytest.param(ref.BINARY_LOGISTIC, 1, "lbfgs", 3, 4, 32, 0, id="binary-lbfgs"),
    pytest.param(ref.MULTINOMIAL, 3, "lbfgs", 2, 3, 2, 0, id="multinomial-lbfgs-m2"),
    pytest.param(ref.SQUARED, 3, "hessian", 3, 4, 2, 3, id="squared-multi-hessian"),
    pytest.param(ref.BINARY_LOGISTIC, 1, "hessian", 3, 4, 2, 3, id="binary-hessian"),
    pytest.param(ref.MULTINOMIAL, 3, "hessian", 1, 6, 2, 64, id="multinomial-hessian"),
    pytest.param(ref.SQUARED, 1, "gram", 1, 5, 2, 0, id="squared-gram"),
    pytest.param(ref.SQUARED, 3, "gram", 3, 4, 2, 0, id="squared-multi-gram"),
    pytest.param(ref.BINARY_LOGISTIC, 1, "gram", 3, 4, 2, 0, id="binary-gram"),
]
# (weights, layout) of the rows given to apply_change.
ROW_VARIANTS = [
    pytest.param("unit", "dense64", id="unit-dense64"),
    pytest.param("random", "dense64", id="random-dense64"),
    pytest.param("random", "dense32", id="random-dense32"),
    pytest.param("random", "csr", id="random-csr"),
]


def weighted_rows(loss, n_outputs, seed=0):
    """``N_OLD + N_NEW`` rows (ids = positions), targets, and a model centred on the
    means of the first ``N_OLD`` rows."""
    X, Y, _, rng = sgd_problem(loss, n_outputs, n_samples=N_OLD + N_NEW, seed=seed)
    model = LinearModel(loss, n_outputs, True, 0.05, X[:N_OLD].mean(axis=0))
    return X, Y, model, rng


def numpy_retrain(X, Y, sample_weight, ids, model, change, schedule):
    """The reference retrain of the rows ``ids`` on the changed schedule."""
    return ref.exact_retrain(
        X[ids],
        Y[ids],
        ids,
        model,
        change.schedule.batch_ptr,
        change.schedule.batch_ids,
        schedule.learning_rates,
        sample_weight=sample_weight[ids],
    )


def apply_to_rows(
    X, Y, sample_weight, ids, model, change, cache, method, settings, defer=False
):
    """``apply_change`` on the rows ``ids`` (stable ids = positions here): the new
    cache and the report; with ``defer`` the Grams' update is left to the caller
    and made here (in place, as an estimator's commit makes it)."""
    cache, report, gram_update = apply_change(
        X[ids],
        Y[ids],
        sample_weight[ids],
        ids,
        model,
        change,
        cache,
        method,
        settings,
        defer_grams=defer,
    )
    assert (gram_update is not None) == (defer and cache.grams is not None)
    if gram_update is not None:
        gram_update.apply()
        assert gram_update.done[0]
    return cache, report


def batch_of(schedule, t):
    return schedule.batch_ids[schedule.batch_ptr[t] : schedule.batch_ptr[t + 1]]


def weighted_request(loss, n_outputs, request, weights, seed=0):
    """The rows, model, old schedule, change and weights of one request.

    Random weights have zeros (also on a removed and on an added row), and are
    arranged so that the replay meets a batch whose weight the change takes to
    zero (a removal; ``marks["emptied"]``), or a batch of zero weight that gains
    weight (an addition; ``marks["filled"]``).
    """
    X, Y, model, rng = weighted_rows(loss, n_outputs, seed)
    schedule = make_schedule(N_OLD, BATCH, EPOCHS, 1.0, rng)
    sole = batch_of(schedule, 8)[0]  # batch 8's only row of positive weight
    if request == "remove":
        change = remove_rows(schedule, np.unique([sole, 11, 26, 40]))
    else:
        change = add_rows(schedule, np.arange(N_OLD, N_OLD + N_NEW))
    marks = {}
    if weights == "unit":
        sample_weight = np.ones(N_OLD + N_NEW)
    else:
        sample_weight = rng.uniform(0.05, 3.0, N_OLD + N_NEW)
        sample_weight[[11, 30, N_OLD + 1]] = 0.0  # 11 is removed, 49 added
        if request == "remove":
            # Batch 8 keeps rows of zero weight only once its sole row of positive
            # weight is removed.
            marks["emptied"] = t = 8
            sample_weight[batch_of(schedule, t)] = 0.0
            sample_weight[sole] = 1.5
        else:
            # A batch of zero weight that gains an added row of positive weight.
            gaining = [
                t
                for t in np.flatnonzero(np.diff(change.added_ptr) > 0)
                if sample_weight[change.added_ids[change.added_ptr[t]]] > 0
            ]
            marks["filled"] = t = int(gaining[1])
            new = batch_of(change.schedule, t)
            sample_weight[new[new < N_OLD]] = 0.0
        assert (sample_weight[:N_OLD] > 0).sum() > N_OLD // 2
    return X, Y, model, schedule, change, sample_weight, marks


def old_cache(X_in, Y, sample_weight, model, schedule):
    """The cache of the SGD run on the old schedule (rows ``0..N_OLD-1``)."""
    cache = TrainingCache.empty(schedule.n_iterations, model.n_params)
    return run_sgd(
        X_in[:N_OLD],
        Y[:N_OLD],
        sample_weight[:N_OLD],
        model,
        schedule.batch_ptr,
        schedule.batch_ids,
        schedule.learning_rates,
        0,
        cache,
    )


def set_learning_rate(schedule, X, model):
    """A step of ``1 / curvature bound`` (the edited schedules share the array)."""
    schedule.learning_rates[:] = 1.0 / ref.curvature_bound(X, model)


def reference_replay(X, Y, ids, sample_weight, model, old, new, cache, settings):
    """The NumPy replay of the change of schedule ``old`` to ``new`` on the rows
    ``ids`` (``sample_weight`` None: unweighted)."""
    return ref.deltagrad_replay(
        X[ids],
        Y[ids],
        ids,
        model,
        (old.batch_ptr, old.batch_ids, old.learning_rates),
        (new.batch_ptr, new.batch_ids, new.learning_rates),
        cache["weights"],
        cache["gradients"],
        cache["exact"],
        burn_in=settings["burn_in"],
        exact_period=settings["exact_period"],
        curvature=settings["curvature"],
        lbfgs_memory=settings["lbfgs_memory"],
        hessian_rows=settings["hessian_rows"],
        secant_correction=settings.get("secant_correction", True),
        sample_weight=None if sample_weight is None else sample_weight[ids],
        curvature_bound=ref.curvature_bound(X[ids], model),
        # Built at the first request: at the iterates of the cache it started from.
        gram_points=cache.get("gram_points", cache["weights"]),
    )


def replay_settings(settings):
    return ReplaySettings(
        burn_in=settings["burn_in"],
        exact_period=settings["exact_period"],
        curvature=CURVATURE_CODES[settings["curvature"]],
        lbfgs_memory=settings["lbfgs_memory"],
        hessian_rows=settings["hessian_rows"],
        secant_correction=settings.get("secant_correction", True),
    )


def cache_arrays(cache):
    return {
        "weights": cache.weights,
        "gradients": cache.gradients,
        "exact": cache.exact,
    }


def request_rows(request):
    """Ids (= positions) of the rows a request hands to apply_change."""
    return np.arange(N_OLD if request == "remove" else N_OLD + N_NEW)


@pytest.mark.parametrize("weights, layout", ROW_VARIANTS)
@pytest.mark.parametrize("request_kind", ["remove", "add"])
@pytest.mark.parametrize(
    "loss, n_outputs, curvature, burn_in, exact_period, lbfgs_memory, hessian_rows",
    WEIGHTED_CASES,
)
def test_weighted_replay_matches_numpy_replay(
    loss,
    n_outputs,
    curvature,
    burn_in,
    exact_period,
    lbfgs_memory,
    hessian_rows,
    request_kind,
    weights,
    layout,
):
    settings = dict(
        curvature=curvature,
        burn_in=burn_in,
        exact_period=exact_period,
        lbfgs_memory=lbfgs_memory,
        hessian_rows=hessian_rows,
    )
    X, Y, model, schedule, change, sample_weight, marks = weighted_request(
        loss, n_outputs, request_kind, weights
    )
    X_in, X = rows_in_layout(X, layout)
    set_learning_rate(schedule, X, model)
    before = old_cache(X_in, Y, sample_weight, model, schedule)
    ids = request_rows(request_kind)
    cache, report = apply_to_rows(
        X_in,
        Y,
        sample_weight,
        ids,
        model,
        change,
        before,
        "deltagrad",
        replay_settings(settings),
    )
    out = reference_replay(
        X,
        Y,
        ids,
        None if weights == "unit" else sample_weight,
        model,
        schedule,
        change.schedule,
        cache_arrays(before),
        settings,
    )
    assert report.method == "deltagrad"
    assert_report_counts(report, out)
    assert not cache.exact.all()  # the curvature model was used
    np.testing.assert_array_equal(cache.exact, out["exact"])
    tol = replay_tolerance(loss, curvature)
    for key in ("weights", "gradients", "final"):
        assert_rel_close(getattr(cache, key), out[key], tol, f"{key} vs NumPy")
    assert rel_diff(cache.final, before.final) > 1e-6  # the request changed the model
    if "emptied" in marks:
        # The batch's remaining rows weigh 0: skipped, as by the retrain.
        t = marks["emptied"]
        assert batch_of(change.schedule, t).size > 0
        np.testing.assert_array_equal(cache.gradients[t], 0.0)
        np.testing.assert_array_equal(cache.weights[t + 1], cache.weights[t])
        assert cache.exact[t]
    if "filled" in marks:
        # The old batch weighed 0 (and was skipped): no model of it, the iteration
        # is exact.
        t = marks["filled"]
        np.testing.assert_array_equal(before.gradients[t], 0.0)
        assert cache.exact[t]
        assert np.abs(cache.gradients[t]).max() > 0
    _, _, retrained = numpy_retrain(X, Y, sample_weight, ids, model, change, schedule)
    if curvature == "gram" and loss == ref.SQUARED:
        # The Gram model is exact for the squared loss: the replay is the retrain.
        assert_rel_close(cache.final, retrained, 1e-9, "gram replay vs retrain")
    else:
        # Far closer to the (weighted) retrain than the old model is.
        distance = np.linalg.norm(cache.final - retrained)
        assert distance < 0.5 * np.linalg.norm(before.final - retrained)


@pytest.mark.parametrize("weights, layout", ROW_VARIANTS)
@pytest.mark.parametrize("request_kind", ["remove", "add"])
@pytest.mark.parametrize("loss, n_outputs", LOSS_KINDS)
def test_weighted_exact_method_is_the_numpy_retrain(
    loss, n_outputs, request_kind, weights, layout
):
    X, Y, model, schedule, change, sample_weight, marks = weighted_request(
        loss, n_outputs, request_kind, weights
    )
    X_in, X = rows_in_layout(X, layout)
    set_learning_rate(schedule, X, model)
    before = old_cache(X_in, Y, sample_weight, model, schedule)
    ids = request_rows(request_kind)
    settings = ReplaySettings(3, 4, CURVATURE_CODES["lbfgs"], 8, 16)
    cache, report = apply_to_rows(
        X_in, Y, sample_weight, ids, model, change, before, "exact", settings
    )
    expected = ref.exact_retrain(
        X[ids],
        Y[ids],
        ids,
        model,
        change.schedule.batch_ptr,
        change.schedule.batch_ids,
        schedule.learning_rates,
        sample_weight=None if weights == "unit" else sample_weight[ids],
    )
    for key, wanted in zip(("weights", "gradients", "final"), expected, strict=True):
        assert_rel_close(getattr(cache, key), wanted, 1e-10, f"{key} vs NumPy")
    assert cache.exact.all()
    assert report.method == "exact"
    assert report.n_approximate_iterations == 0
    assert report.n_exact_iterations == schedule.n_iterations - report.first_iteration
    assert rel_diff(cache.final, before.final) > 1e-6
    # The input cache is not modified.
    np.testing.assert_array_equal(
        before.final, old_cache(X_in, Y, sample_weight, model, schedule).final
    )


@pytest.mark.parametrize("curvature", ["lbfgs", "hessian", "gram"])
@pytest.mark.parametrize("weights, layout", ROW_VARIANTS)
@pytest.mark.parametrize("request_kind", ["remove", "add"])
def test_weighted_replay_with_exact_period_one_is_the_exact_retrain(
    request_kind, weights, layout, curvature
):
    loss, n_outputs = (ref.SQUARED, 2) if curvature == "gram" else (ref.MULTINOMIAL, 3)
    X, Y, model, schedule, change, sample_weight, marks = weighted_request(
        loss, n_outputs, request_kind, weights
    )
    X_in, X = rows_in_layout(X, layout)
    set_learning_rate(schedule, X, model)
    before = old_cache(X_in, Y, sample_weight, model, schedule)
    ids = request_rows(request_kind)
    results = {}
    for method in ("deltagrad", "exact"):
        settings = ReplaySettings(0, 1, CURVATURE_CODES[curvature], 4, 3)
        results[method] = apply_to_rows(
            X_in, Y, sample_weight, ids, model, change, before, method, settings
        )
    (replayed, report), (retrained, exact_report) = results.values()
    assert report.method == "deltagrad"
    assert report.first_iteration == exact_report.first_iteration
    # Every iteration exact (the report's count: see the test below).
    assert replayed.exact.all() and retrained.exact.all()
    assert report.drift == 0.0
    for key in ("weights", "gradients", "final"):
        assert_rel_close(
            getattr(replayed, key), getattr(retrained, key), 1e-12, f"{key}"
        )
    _, _, final = numpy_retrain(X, Y, sample_weight, ids, model, change, schedule)
    assert_rel_close(replayed.final, final, 1e-10, "final vs NumPy retrain")


@pytest.mark.parametrize("layout", ["dense64", "dense32", "csr"])
@pytest.mark.parametrize(
    "loss, n_outputs, curvature, burn_in, exact_period, lbfgs_memory, hessian_rows",
    [
        pytest.param(ref.MULTINOMIAL, 3, "lbfgs", 2, 3, 4, 0, id="lbfgs"),
        pytest.param(ref.BINARY_LOGISTIC, 1, "hessian", 3, 4, 2, 4, id="hessian"),
        pytest.param(ref.SQUARED, 2, "gram", 1, 5, 2, 0, id="gram"),
        pytest.param(ref.BINARY_LOGISTIC, 1, "gram", 1, 5, 2, 0, id="binary-gram"),
    ],
)
def test_weighted_sequence_of_requests_matches_numpy_replay(
    loss,
    n_outputs,
    curvature,
    burn_in,
    exact_period,
    lbfgs_memory,
    hessian_rows,
    layout,
):
    """Removals and additions in turn, each replayed from the cache (and Gram
    matrices) the previous one left; rows of zero weight come and go. Every other
    request updates the Grams in place (an estimator's commit), the others into
    new memory."""
    settings = dict(
        curvature=curvature,
        burn_in=burn_in,
        exact_period=exact_period,
        lbfgs_memory=lbfgs_memory,
        hessian_rows=hessian_rows,
    )
    X, Y, model, rng = weighted_rows(loss, n_outputs, seed=3)
    X_in, X = rows_in_layout(X, layout)
    sample_weight = rng.uniform(0.05, 3.0, X.shape[0])
    sample_weight[[5, 17, N_OLD, N_OLD + 3]] = 0.0
    schedule = make_schedule(N_OLD, BATCH, EPOCHS, 1.0, rng)
    set_learning_rate(schedule, X, model)
    cache = old_cache(X_in, Y, sample_weight, model, schedule)
    live = np.arange(N_OLD)
    chained = cache_arrays(cache)
    # The Gram model weighs its rows at the iterates of the cache it was built on.
    points = cache.weights.copy()
    chained["gram_points"] = points
    requests = [
        ("remove", [1, 5, 30]),  # 5 weighs 0
        ("add", [48, 49, 50]),  # 48 weighs 0
        ("remove", [49, 12, 48]),
        ("add", [51, 52]),  # 51 weighs 0
        ("remove", [44]),
    ]
    for i, (kind, which) in enumerate(requests):
        if kind == "remove":
            change = remove_rows(schedule, np.array(which))
            ids = live
            live = np.setdiff1d(live, which)
        else:
            change = add_rows(schedule, np.array(which))
            live = np.union1d(live, which)
            ids = live
        cache, report = apply_to_rows(
            X_in,
            Y,
            sample_weight,
            ids,
            model,
            change,
            cache,
            "deltagrad",
            replay_settings(settings),
            defer=i % 2 == 1,
        )
        out = reference_replay(
            X,
            Y,
            ids,
            sample_weight,
            model,
            schedule,
            change.schedule,
            chained,
            settings,
        )
        assert_report_counts(report, out)
        assert not cache.exact[out["first_iteration"] :].all()
        np.testing.assert_array_equal(cache.exact, out["exact"])
        tol = replay_tolerance(loss, curvature)
        for key in ("weights", "gradients", "final"):
            assert_rel_close(getattr(cache, key), out[key], tol, f"{key} vs NumPy")
        chained = {**out, "gram_points": points}
        schedule = change.schedule
    assert np.array_equal(np.unique(schedule.batch_ids), live)
    if curvature == "gram":
        # The Gram matrices follow the batches: rebuilt from scratch they agree.
        fresh = np.empty_like(cache.grams)
        positions = np.searchsorted(live, schedule.batch_ids)
        rows_in = X_in[live]
        if sp.issparse(rows_in):
            rows_in = cpu.as_kernel_rows(rows_in)
        batch_grams(
            rows_in,
            sample_weight[live],
            schedule.batch_ptr,
            positions,
            model.offset,
            True,
            loss,
            points,
            fresh,
        )
        # Single precision for the logistic loss: each update rounds to 6e-8.
        tol = 1e-10 if cache.grams.dtype == np.float64 else 1e-6
        assert_rel_close(cache.grams, fresh, tol, "Gram matrices")
        if loss == ref.SQUARED:
            np.testing.assert_equal(cache.gram_points, None)
        else:
            np.testing.assert_array_equal(cache.gram_points, points)
    if curvature == "gram" and loss == ref.SQUARED:
        _, _, final = ref.exact_retrain(
            X[live],
            Y[live],
            live,
            model,
            schedule.batch_ptr,
            schedule.batch_ids,
            schedule.learning_rates,
            sample_weight=sample_weight[live],
        )
        assert_rel_close(cache.final, final, 1e-9, "gram replay vs retrain")


@pytest.mark.parametrize("weights", ["unit", "random"])
def test_skipped_iterations_are_not_reported_as_approximate(weights):
    """``n_approximate_iterations`` counts "iterations whose gradient came from the
    curvature model" (ReplayReport). With ``exact_period=1`` there are none, also
    when the request leaves a batch without weight (all its rows removed, or its
    remaining rows of zero weight), which the replay skips."""
    X, Y, model, schedule, change, sample_weight, _ = weighted_request(
        ref.SQUARED, 1, "remove", weights
    )
    if weights == "unit":
        # Remove every row of batch 8.
        change = remove_rows(schedule, batch_of(schedule, 8))
    set_learning_rate(schedule, X, model)
    before = old_cache(X, Y, sample_weight, model, schedule)
    ids = request_rows("remove")
    settings = ReplaySettings(0, 1, CURVATURE_CODES["lbfgs"], 4, 3)
    cache, report = apply_to_rows(
        X, Y, sample_weight, ids, model, change, before, "deltagrad", settings
    )
    assert cache.exact.all()
    np.testing.assert_array_equal(cache.gradients[8], 0.0)  # skipped
    assert report.n_approximate_iterations == 0
