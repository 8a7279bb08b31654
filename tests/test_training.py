"""Cached SGD (``fit``) against the plain-NumPy SGD of the reference."""

import numpy as np
import pytest
import scipy.sparse as sp

from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge
from sklearn_deltagrad._schedule import make_schedule
from sklearn_deltagrad._training import LinearModel, TrainingCache, run_sgd

from . import reference as ref

N_SAMPLES, N_FEATURES, MAX_ITER = 50, 4, 6


def make_data(kind, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_SAMPLES, N_FEATURES)) * [1.0, 2.0, 0.5, 1.0]
    X += [0.3, 0.0, -1.0, 0.0]
    X[rng.random(X.shape) < 0.2] = 0.0
    score = X @ rng.standard_normal(N_FEATURES) + 0.3 * rng.standard_normal(N_SAMPLES)
    if kind == "binary":
        return X, np.where(score > 0, "yes", "no")
    if kind == "multiclass":
        return X, np.digitize(score, np.quantile(score, [0.3, 0.6])) * 10 + 1
    if kind == "ridge":
        return X, score + 2.0
    return X, np.column_stack([score, -score + 1.0, X[:, 0] * 3.0])


KINDS = ["binary", "multiclass", "ridge", "ridge-multi"]


def estimator_for(kind, **params):
    Est = DeltaGradRidge if kind.startswith("ridge") else DeltaGradLogisticRegression
    return Est(alpha=0.02, max_iter=MAX_ITER, random_state=3, **params)


def expected_model(kind, fit_intercept):
    loss, k = {
        "binary": (ref.BINARY_LOGISTIC, 1),
        "multiclass": (ref.MULTINOMIAL, 3),
        "ridge": (ref.SQUARED, 1),
        "ridge-multi": (ref.SQUARED, 3),
    }[kind]
    return ref.Model(loss, k, fit_intercept, 0.02, N_FEATURES)


def assert_close(actual, expected, tol=1e-10):
    scale = max(np.abs(expected).max(), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def rel_diff(actual, expected):
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("learning_rate", ["auto", 0.05])
@pytest.mark.parametrize("batch_size", [16, None], ids=["minibatch", "fullbatch"])
@pytest.mark.parametrize("kind", KINDS)
def test_cache_matches_numpy_sgd(kind, batch_size, learning_rate, fit_intercept):
    X, y = make_data(kind)
    est = estimator_for(
        kind,
        batch_size=batch_size,
        learning_rate=learning_rate,
        fit_intercept=fit_intercept,
    ).fit(X, y)
    model = est._model
    assert (model.loss, model.n_outputs, model.fit_intercept, model.alpha) == (
        expected_model(kind, fit_intercept).loss,
        expected_model(kind, fit_intercept).n_outputs,
        fit_intercept,
        0.02,
    )
    schedule, cache, rows = est._schedule, est._cache, est._rows

    # The schedule: one permutation of the rows per epoch, cut into batches.
    per_epoch = 1 if batch_size is None else -(-N_SAMPLES // batch_size)
    n_iterations = per_epoch * MAX_ITER
    sizes = np.diff(schedule.batch_ptr)
    expected_sizes = [N_SAMPLES] if batch_size is None else [16, 16, 16, 2]
    np.testing.assert_array_equal(sizes, np.tile(expected_sizes, MAX_ITER))
    for epoch in np.split(schedule.batch_ids, MAX_ITER):
        np.testing.assert_array_equal(np.sort(epoch), np.arange(N_SAMPLES))
    assert schedule.learning_rates.shape == (n_iterations,)
    np.testing.assert_array_equal(schedule.learning_rates, est.learning_rate_)
    if learning_rate != "auto":
        assert est.learning_rate_ == learning_rate
    np.testing.assert_array_equal(rows.ids, np.arange(N_SAMPLES))
    np.testing.assert_array_equal(rows.X, X)

    # The cache: every iterate and batch gradient of the NumPy run.
    d = ref.n_params(model)
    assert cache.weights.shape == cache.gradients.shape == (n_iterations, d)
    assert cache.weights.dtype == cache.gradients.dtype == np.float64
    assert cache.exact.all()
    weights, gradients, final = ref.sgd_run(
        rows.X,
        rows.Y,
        model,
        schedule.batch_ptr,
        ref.positions_of(rows.ids, schedule.batch_ids),
        schedule.learning_rates,
        np.zeros(d),
    )
    np.testing.assert_array_equal(cache.weights[0], 0.0)
    assert_close(cache.weights, weights)
    assert_close(cache.gradients, gradients)
    assert_close(cache.final, final)
    assert np.abs(final).max() > 1e-3  # a model that moved

    # Fitted attributes are the final iterate in sklearn's layout.
    coef, intercept = ref.sklearn_coefficients(cache.final, model)
    if kind == "ridge":
        assert est.coef_.shape == (N_FEATURES,)
        assert_close(est.coef_, coef[0])
        assert isinstance(est.intercept_, float)
        assert_close(est.intercept_, intercept[0])
    else:
        assert est.coef_.shape == (model.n_outputs, N_FEATURES)
        assert_close(est.coef_, coef)
        assert_close(est.intercept_, intercept)
    if not fit_intercept:
        np.testing.assert_array_equal(est.intercept_, 0.0)
    scores = ref.outputs(X, cache.final, model)
    assert_close(scores, X @ np.atleast_2d(est.coef_).T + est.intercept_)
    if kind.startswith("ridge"):
        assert_close(est.predict(X), scores[:, 0] if kind == "ridge" else scores)
    else:
        decision = est.decision_function(X)
        assert_close(decision, scores[:, 0] if kind == "binary" else scores)


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_targets_are_encoded_for_the_kernels(kind, fit_intercept):
    X, y = make_data(kind)
    est = estimator_for(kind, batch_size=16, fit_intercept=fit_intercept).fit(X, y)
    Y = est._rows.Y
    if kind == "binary":
        np.testing.assert_array_equal(Y[:, 0], (y == "yes").astype(float))
    elif kind == "multiclass":
        np.testing.assert_array_equal(est.classes_, [1, 11, 21])
        np.testing.assert_array_equal(Y[:, 0], (y - 1) // 10)
    else:
        np.testing.assert_array_equal(Y, np.reshape(y, (N_SAMPLES, -1)))


@pytest.mark.parametrize("batch_size", [16, None], ids=["minibatch", "fullbatch"])
@pytest.mark.parametrize("kind", KINDS)
def test_auto_learning_rate_is_one_over_smoothness(kind, batch_size):
    """``1 / (c (lambda_max(Xa'Xa / n) + max ||xa||^2 / b) + alpha)``."""
    X, y = make_data(kind)
    est = estimator_for(kind, batch_size=batch_size).fit(X, y)
    Xa = ref.augmented(X, est._model)
    curvature = {ref.SQUARED: 1.0, ref.BINARY_LOGISTIC: 0.25, ref.MULTINOMIAL: 0.5}
    b = N_SAMPLES if batch_size is None else batch_size
    smoothness = curvature[est._model.loss] * (
        np.linalg.eigvalsh(Xa.T @ Xa / N_SAMPLES).max() + (Xa**2).sum(1).max() / b
    )
    assert est.learning_rate_ == pytest.approx(1 / (smoothness + 0.02), rel=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_full_batch_auto_rate_descends_the_objective(kind):
    """Gradient descent with step 1/L never increases the objective."""
    X, y = make_data(kind)
    est = estimator_for(kind, batch_size=None).fit(X, y)
    rows, model = est._rows, est._model
    values = [
        ref.objective(rows.X, rows.Y, w, model)
        for w in [*est._cache.weights, est._cache.final]
    ]
    assert np.all(np.diff(values) <= 1e-12)
    assert values[-1] < values[0] - 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_fit_is_deterministic_and_seeded(kind):
    X, y = make_data(kind)
    a = estimator_for(kind, batch_size=16).fit(X, y)
    b = estimator_for(kind, batch_size=16).fit(X, y)
    np.testing.assert_array_equal(a._cache.weights, b._cache.weights)
    np.testing.assert_array_equal(a._schedule.batch_ids, b._schedule.batch_ids)
    c = estimator_for(kind, batch_size=16).set_params(random_state=4).fit(X, y)
    assert not np.array_equal(a._schedule.batch_ids, c._schedule.batch_ids)


# --------------------------------------- run_sgd: weights, float32 and CSR rows
ROW_WEIGHTS = ["unit", "random"]
ROW_LAYOUTS = ["dense64", "dense32", "csr"]
LOSS_KINDS = [
    pytest.param(ref.SQUARED, 1, id="squared"),
    pytest.param(ref.SQUARED, 3, id="squared-multi"),
    pytest.param(ref.BINARY_LOGISTIC, 1, id="binary"),
    pytest.param(ref.MULTINOMIAL, 3, id="multinomial"),
]


def sgd_problem(loss, n_outputs, fit_intercept=True, n_samples=40, seed=0):
    """Rows (with zeros and a zero row), encoded targets and a centred model."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, N_FEATURES)) * [1.0, 2.0, 0.5, 1.0]
    X += [0.3, 0.0, -1.0, 0.0]
    X[rng.random(X.shape) < 0.25] = 0.0
    X[7] = 0.0
    if loss == ref.SQUARED:
        Y = X @ rng.standard_normal((N_FEATURES, n_outputs)) + 1.0
        Y += 0.3 * rng.standard_normal(Y.shape)
    elif loss == ref.BINARY_LOGISTIC:
        Y = rng.integers(2, size=(n_samples, 1)).astype(np.float64)
    else:
        Y = rng.integers(n_outputs, size=(n_samples, 1)).astype(np.float64)
    offset = X.mean(axis=0) if fit_intercept else np.zeros(N_FEATURES)
    model = LinearModel(loss, n_outputs, fit_intercept, 0.02, offset)
    return X, Y, model, rng


def rows_in_layout(X, layout):
    """``(rows for run_sgd, the float64 matrix they stand for)``."""
    if layout == "dense64":
        return X, X
    if layout == "dense32":
        X32 = X.astype(np.float32)
        return X32, X32.astype(np.float64)
    matrix = sp.csr_matrix(X)
    assert matrix.nnz < X.size
    return matrix, matrix.toarray()


def schedule_weights(kind, schedule, n_samples, seed=1):
    """Ones, or random weights with zeros; then every row of batch 2 weighs 0."""
    if kind == "unit":
        return np.ones(n_samples)
    weights = np.random.default_rng(seed).uniform(0.05, 3.0, n_samples)
    weights[[0, 11, 23]] = 0.0
    ptr = schedule.batch_ptr
    weights[schedule.batch_ids[ptr[2] : ptr[3]]] = 0.0
    return weights


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("layout", ROW_LAYOUTS)
@pytest.mark.parametrize("weights", ROW_WEIGHTS)
@pytest.mark.parametrize("loss, n_outputs", LOSS_KINDS)
def test_run_sgd_matches_numpy_sgd(loss, n_outputs, weights, layout, fit_intercept):
    X, Y, model, rng = sgd_problem(loss, n_outputs, fit_intercept)
    schedule = make_schedule(X.shape[0], 6, 4, 1.0, rng)
    rows_in, X = rows_in_layout(X, layout)
    learning_rates = np.full(schedule.n_iterations, 0.5 / ref.curvature_bound(X, model))
    sample_weight = schedule_weights(weights, schedule, X.shape[0])
    T, d = schedule.n_iterations, model.n_params
    cache = run_sgd(
        rows_in,
        Y,
        sample_weight,
        model,
        schedule.batch_ptr,
        schedule.batch_ids,
        learning_rates,
        0,
        TrainingCache.empty(T, d),
    )
    expected = ref.sgd_run(
        X,
        Y,
        model,
        schedule.batch_ptr,
        schedule.batch_ids,
        learning_rates,
        np.zeros(d),
        sample_weight=None if weights == "unit" else sample_weight,
    )
    for actual, wanted in zip(
        (cache.weights, cache.gradients, cache.final), expected, strict=True
    ):
        assert_close(actual, wanted)
    assert cache.exact.all()
    assert np.abs(cache.final).max() > 1e-2  # a model that moved
    if weights == "random":
        # The batch of zero weight is skipped: no gradient, no penalty step.
        np.testing.assert_array_equal(cache.gradients[2], 0.0)
        np.testing.assert_array_equal(cache.weights[3], cache.weights[2])
        assert np.abs(cache.weights[2]).max() > 0
        # The weights matter.
        unweighted = ref.sgd_run(
            X,
            Y,
            model,
            schedule.batch_ptr,
            schedule.batch_ids,
            learning_rates,
            np.zeros(d),
        )
        assert rel_diff(cache.final, unweighted[2]) > 1e-3

    # A retrain from a later iteration continues the cached trajectory.
    t_start = 9
    partial = cache.copy()
    partial.weights[t_start + 1 :] = 0.0
    partial.gradients[t_start:] = 0.0
    partial.final[:] = 0.0
    run_sgd(
        rows_in,
        Y,
        sample_weight,
        model,
        schedule.batch_ptr,
        schedule.batch_ids,
        learning_rates,
        t_start,
        partial,
    )
    np.testing.assert_array_equal(partial.weights, cache.weights)
    np.testing.assert_array_equal(partial.gradients, cache.gradients)
    np.testing.assert_array_equal(partial.final, cache.final)


@pytest.mark.parametrize("layout", ROW_LAYOUTS)
@pytest.mark.parametrize("loss, n_outputs", LOSS_KINDS)
def test_integer_weights_are_repeated_rows(loss, n_outputs, layout):
    """A row of weight k counts as k copies of it in its batch (0: absent), so a
    batch whose rows all weigh 0 is skipped like an empty one (no reference)."""
    X, Y, model, rng = sgd_problem(loss, n_outputs)
    rows_in, X = rows_in_layout(X, layout)
    schedule = make_schedule(X.shape[0], 5, 3, 1.0, rng)
    sample_weight = rng.integers(0, 4, X.shape[0]).astype(np.float64)
    ptr = schedule.batch_ptr
    sample_weight[schedule.batch_ids[ptr[4] : ptr[5]]] = 0.0
    sample_weight[schedule.batch_ids[ptr[1]]] = 2.0
    learning_rates = np.full(schedule.n_iterations, 0.5 / ref.curvature_bound(X, model))
    repeated = [
        np.repeat(batch, sample_weight[batch].astype(np.int64))
        for batch in np.split(schedule.batch_ids, ptr[1:-1])
    ]
    repeated_ptr = np.concatenate([[0], np.cumsum([b.size for b in repeated])])
    assert repeated_ptr[5] == repeated_ptr[4]  # an empty batch
    T, d = schedule.n_iterations, model.n_params
    runs = []
    for batch_ptr, batch_rows, weights in [
        (ptr, schedule.batch_ids, sample_weight),
        (repeated_ptr, np.concatenate(repeated), np.ones(X.shape[0])),
    ]:
        cache = run_sgd(
            rows_in,
            Y,
            weights,
            model,
            batch_ptr,
            batch_rows,
            learning_rates,
            0,
            TrainingCache.empty(T, d),
        )
        runs.append(cache)
    assert np.abs(runs[1].final).max() > 1e-2
    assert_close(runs[0].weights, runs[1].weights, 1e-12)
    assert_close(runs[0].gradients, runs[1].gradients, 1e-12)
    assert_close(runs[0].final, runs[1].final, 1e-12)
    np.testing.assert_array_equal(runs[0].gradients[4], 0.0)


@pytest.mark.parametrize("layout", ROW_LAYOUTS)
@pytest.mark.parametrize("kind", KINDS)
def test_fit_with_sample_weight_matches_numpy_sgd(kind, layout):
    """``fit(X, y, sample_weight)`` keeps the rows' weights and layout, centres the
    model on the weighted means and caches the weighted NumPy SGD."""
    X, y = make_data(kind)
    sample_weight = np.random.default_rng(7).uniform(0.0, 2.0, N_SAMPLES)
    sample_weight[[4, 9]] = 0.0
    X_in, X = rows_in_layout(X, layout)
    est = estimator_for(kind, batch_size=16).fit(X_in, y, sample_weight=sample_weight)
    rows, schedule, cache, model = est._rows, est._schedule, est._cache, est._model
    np.testing.assert_array_equal(rows.weights, sample_weight)
    assert sp.issparse(rows.X) == (layout == "csr")
    if layout == "dense32":
        assert rows.X.dtype == np.float32
    np.testing.assert_array_equal(ref.dense(rows.X), X)
    np.testing.assert_allclose(
        model.offset, np.average(X, axis=0, weights=sample_weight), rtol=1e-12
    )
    weights, gradients, final = ref.sgd_run(
        X,
        rows.Y,
        model,
        schedule.batch_ptr,
        ref.positions_of(rows.ids, schedule.batch_ids),
        schedule.learning_rates,
        np.zeros(model.n_params),
        sample_weight=sample_weight,
    )
    assert_close(cache.weights, weights)
    assert_close(cache.gradients, gradients)
    assert_close(cache.final, final)
    coef, intercept = ref.sklearn_coefficients(final, model)
    assert_close(np.atleast_2d(est.coef_), coef)
    assert_close(np.atleast_1d(est.intercept_), intercept)


@pytest.mark.parametrize("kind", KINDS)
def test_full_batch_weighted_fit_descends_the_weighted_objective(kind):
    """Full-batch GD on weighted rows is GD on the weighted mean loss: with the
    automatic step it never increases that objective, and rows of weight 0 do not
    count (appending copies of rows with weight 0 changes nothing)."""
    X, y = make_data(kind)
    sample_weight = np.random.default_rng(3).uniform(0.0, 3.0, N_SAMPLES)
    sample_weight[[2, 5]] = 0.0
    est = estimator_for(kind, batch_size=None).fit(X, y, sample_weight=sample_weight)
    rows, model = est._rows, est._model
    values = [
        ref.objective(rows.X, rows.Y, w, model, sample_weight)
        for w in [*est._cache.weights, est._cache.final]
    ]
    assert np.all(np.diff(values) <= 1e-12)
    assert values[-1] < values[0] - 1e-3
    # Zero-weight extra rows: the same model (the step size and centring use the
    # weights; the full batch's weighted mean is unchanged).
    X_more = np.vstack([X, X[:10] * 3.0 + 1.0])
    y_more = np.concatenate([y, y[:10]])
    w_more = np.concatenate([sample_weight, np.zeros(10)])
    fixed = dict(learning_rate=0.05)
    a = estimator_for(kind, batch_size=None, **fixed).fit(X, y, sample_weight)
    b = estimator_for(kind, batch_size=None, **fixed).fit(X_more, y_more, w_more)
    assert_close(b.coef_, a.coef_, 1e-10)
    assert_close(b.intercept_, a.intercept_, 1e-10)
