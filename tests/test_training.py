"""Cached SGD (``fit``) against the plain-NumPy SGD of the reference."""

import numpy as np
import pytest

from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge

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
