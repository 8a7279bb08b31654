"""The estimators as scikit-learn users meet them.

Meta-estimators, persistence, ``clone``, the equivalence with ``LogisticRegression``
and ``Ridge`` at convergence, label types and shapes, removal by value and the stable
row ids, and pandas feature names.
"""

import pickle
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge

# Small mini-batch runs whose replays mix exact and approximate iterations.
FAST = dict(batch_size=16, max_iter=6, burn_in=2, exact_period=3)


def classification(n_samples=120, n_classes=3, n_features=4, seed=0):
    X, y = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=3,
        n_redundant=0,
        n_classes=n_classes,
        n_clusters_per_class=1,
        class_sep=1.5,
        random_state=seed,
    )
    return X, y


def regression(n_samples=120, n_targets=1, n_features=4, seed=0):
    X, y = make_regression(
        n_samples=n_samples,
        n_features=n_features,
        n_targets=n_targets,
        noise=1.0,
        random_state=seed,
    )
    return X, y / y.std(axis=0)


def problem(kind):
    """``(estimator, X, y)`` for ``kind`` in binary / multiclass / ridge / ridge2."""
    if kind == "binary":
        return DeltaGradLogisticRegression(random_state=0, **FAST), *classification(
            n_classes=2
        )
    if kind == "multiclass":
        return DeltaGradLogisticRegression(random_state=0, **FAST), *classification()
    if kind == "ridge":
        return DeltaGradRidge(random_state=0, **FAST), *regression()
    return DeltaGradRidge(random_state=0, **FAST), *regression(n_targets=2)


KINDS = ["binary", "multiclass", "ridge", "ridge2"]


def state_arrays(est):
    """Every array of the fitted state, public and internal, by name."""
    return {
        "coef_": np.asarray(est.coef_),
        "intercept_": np.asarray(est.intercept_),
        "sample_ids_": est.sample_ids_,
        "weights": est._cache.weights,
        "gradients": est._cache.gradients,
        "exact": est._cache.exact,
        "final": est._cache.final,
        "batch_ids": est._schedule.batch_ids,
        "batch_ptr": est._schedule.batch_ptr,
        "rows_X": est._rows.X,
        "rows_Y": est._rows.Y,
        "rows_ids": est._rows.ids,
    }


def assert_same_state(a, b):
    """Bitwise equality of two estimators' fitted states."""
    assert a.n_samples_seen_ == b.n_samples_seen_
    left, right = state_arrays(a), state_arrays(b)
    for name in left:
        assert left[name].dtype == right[name].dtype, name
        assert_array_equal(left[name], right[name], err_msg=name, strict=True)


# --------------------------------------------------------------- meta-estimators
@pytest.mark.parametrize("kind", ["binary", "multiclass", "ridge"])
def test_pipeline_fit_predict_score(kind):
    est, X, y = problem(kind)
    pipe = make_pipeline(StandardScaler(), est).fit(X, y)
    prediction = pipe.predict(X)
    assert prediction.shape == y.shape
    # The data are easy: a working fit must beat these bars by far.
    assert pipe.score(X, y) > (0.8 if kind != "ridge" else 0.9)
    if kind != "ridge":
        assert set(np.unique(prediction)) <= set(np.unique(y))
        assert pipe.predict_proba(X).shape == (X.shape[0], np.unique(y).size)
    # The last step was fitted on the scaled data.
    scaled = StandardScaler().fit_transform(X)
    assert_array_equal(pipe[-1]._rows.X, scaled)


@pytest.mark.parametrize("kind", ["multiclass", "ridge"])
def test_grid_search_and_partial_unfit_of_best_estimator(kind):
    est, X, y = problem(kind)
    pipe = make_pipeline(StandardScaler(), est)
    step = pipe.steps[-1][0]
    grid = [1e-4, 1e-2, 10.0]
    search = GridSearchCV(pipe, {f"{step}__alpha": grid}, cv=3).fit(X, y)
    assert search.best_params_[f"{step}__alpha"] in grid
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all()
    # A huge penalty underfits: it must not win, and must score worst.
    assert search.best_params_[f"{step}__alpha"] != 10.0
    assert scores[2] == scores.min()

    best = search.best_estimator_[-1]
    assert best.n_samples_seen_ == X.shape[0]
    coef = np.array(best.coef_)
    best.partial_unfit(indices=[0, 5, 7])
    assert best.n_samples_seen_ == X.shape[0] - 3
    assert not np.isin([0, 5, 7], best.sample_ids_).any()
    assert not np.array_equal(coef, best.coef_)
    assert search.best_estimator_.score(X, y) > 0.8


def test_cross_validate_with_joblib_workers():
    est, X, y = problem("binary")
    result = cross_validate(est, X, y, cv=2, n_jobs=2)
    assert result["test_score"].shape == (2,)
    assert (result["test_score"] > 0.8).all()


# ------------------------------------------------------------------ persistence
def _pickle(est, tmp_path):
    return pickle.loads(pickle.dumps(est))


def _joblib(est, tmp_path):
    path = tmp_path / "model.joblib"
    joblib.dump(est, path)
    return joblib.load(path)


@pytest.mark.parametrize("roundtrip", [_pickle, _joblib], ids=["pickle", "joblib"])
@pytest.mark.parametrize("kind", KINDS)
def test_persistence_roundtrip(kind, roundtrip, tmp_path):
    est, X, y = problem(kind)
    est.fit(X[:100], y[:100])
    est.partial_unfit(indices=[3, 50])  # a state that served a request already
    loaded = roundtrip(est, tmp_path)
    assert loaded is not est
    assert_same_state(est, loaded)
    methods = ["predict"]
    if kind in ("binary", "multiclass"):
        methods += ["predict_proba", "predict_log_proba", "decision_function"]
        assert_array_equal(loaded.classes_, est.classes_)
    for method in methods:
        assert_array_equal(getattr(loaded, method)(X), getattr(est, method)(X))

    # The same requests on both give bitwise the same results.
    before = np.array(est.coef_)
    for target in (est, loaded):
        target.partial_unfit(indices=[7, 8, 90])
        target.partial_unfit(X[[20, 21]], y[[20, 21]])
        target.partial_fit(X[100:], y[100:])
        target.partial_unfit(indices=[101])
        target.partial_fit(X[100:103], y[100:103], method="exact")
    assert not np.array_equal(before, est.coef_)
    assert_same_state(est, loaded)
    assert_array_equal(loaded.predict(X), est.predict(X))


@pytest.mark.parametrize("kind", ["multiclass", "ridge"])
def test_clone_is_unfitted_with_same_params(kind):
    est, X, y = problem(kind)
    est.set_params(alpha=0.05, curvature="hessian", hessian_rows=8)
    est.fit(X, y)
    copy = clone(est)
    assert copy.get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(copy)
    for name in ("coef_", "intercept_", "sample_ids_", "_cache", "_rows", "_schedule"):
        assert not hasattr(copy, name)
    # Fitting the clone reproduces the original exactly (same random_state).
    assert_same_state(copy.fit(X, y), est)


# ------------------------------------------------- equivalence at convergence
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_logistic_matches_sklearn_at_convergence(n_classes, fit_intercept):
    X, y = classification(n_samples=200, n_classes=n_classes)
    alpha = 0.01
    n = X.shape[0]
    est = DeltaGradLogisticRegression(
        alpha=alpha,
        batch_size=None,
        max_iter=2000,
        fit_intercept=fit_intercept,
        random_state=0,
    ).fit(X, y)
    ref = LogisticRegression(
        C=1.0 / (alpha * n), fit_intercept=fit_intercept, tol=1e-12, max_iter=10_000
    ).fit(X, y)
    assert est.coef_.shape == ref.coef_.shape
    assert est.intercept_.shape == ref.intercept_.shape
    params = np.column_stack([est.coef_, est.intercept_])
    expected = np.column_stack([ref.coef_, ref.intercept_])
    scale = np.abs(expected).max()
    assert_allclose(params, expected, rtol=0, atol=1e-4 * scale)
    assert_allclose(est.predict_proba(X), ref.predict_proba(X), atol=1e-5)
    assert_array_equal(est.predict(X), ref.predict(X))


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("n_targets", [1, 2])
def test_ridge_matches_sklearn_at_convergence(n_targets, fit_intercept):
    X, y = regression(n_samples=200, n_targets=n_targets)
    y = y + 3.0  # a non-zero intercept
    alpha = 0.01
    est = DeltaGradRidge(
        alpha=alpha,
        batch_size=None,
        max_iter=500,
        fit_intercept=fit_intercept,
        random_state=0,
    ).fit(X, y)
    ref = Ridge(alpha=alpha * X.shape[0], fit_intercept=fit_intercept).fit(X, y)
    assert np.shape(est.coef_) == np.shape(ref.coef_)
    if fit_intercept:
        assert np.shape(est.intercept_) == np.shape(ref.intercept_)
    else:  # Ridge has a scalar 0.0 here; we keep one zero per target
        assert_array_equal(est.intercept_, np.zeros(n_targets).squeeze())
    scale = np.abs(ref.coef_).max()
    assert_allclose(est.coef_, ref.coef_, rtol=0, atol=1e-4 * scale)
    assert_allclose(est.intercept_, ref.intercept_, rtol=1e-4, atol=1e-4 * scale)
    assert_allclose(est.predict(X), ref.predict(X), rtol=1e-4, atol=1e-4 * scale)


# ------------------------------------------------------------ outputs and shapes
@pytest.mark.parametrize("n_classes", [2, 3, 4])
def test_classifier_outputs_are_consistent(n_classes):
    X, y = classification(n_classes=n_classes)
    est = DeltaGradLogisticRegression(random_state=0, **FAST).fit(X, y)
    proba = est.predict_proba(X)
    assert proba.shape == (X.shape[0], n_classes)
    assert (proba >= 0).all()
    assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert_allclose(np.exp(est.predict_log_proba(X)), proba, rtol=1e-12)
    assert_array_equal(est.predict(X), est.classes_[proba.argmax(axis=1)])
    scores = est.decision_function(X)
    if n_classes == 2:
        assert est.coef_.shape == (1, X.shape[1])
        assert est.intercept_.shape == (1,)
        assert scores.shape == (X.shape[0],)
        assert_allclose(proba[:, 1], 1 / (1 + np.exp(-scores)))
        assert_array_equal(est.predict(X), est.classes_[(scores > 0).astype(int)])
    else:
        assert est.coef_.shape == (n_classes, X.shape[1])
        assert est.intercept_.shape == (n_classes,)
        assert scores.shape == (X.shape[0], n_classes)
        assert_array_equal(scores.argmax(axis=1), proba.argmax(axis=1))
    assert_allclose(scores, X @ est.coef_.T.squeeze() + est.intercept_.squeeze())


def _labels(kind, codes):
    if kind == "str":
        return np.array(["ant", "bee", "cat"])[codes]
    if kind == "str-object":
        return np.array(["ant", "bee", "cat"], dtype=object)[codes]
    if kind == "int":
        return np.array([-4, 7, 12])[codes]
    return codes.astype(bool)


@pytest.mark.parametrize("label_kind", ["str", "str-object", "int", "bool"])
def test_label_types(label_kind):
    n_classes = 2 if label_kind == "bool" else 3
    X, codes = classification(n_classes=n_classes)
    y = _labels(label_kind, codes)
    est = DeltaGradLogisticRegression(random_state=0, **FAST).fit(X[:100], y[:100])
    assert_array_equal(est.classes_, np.unique(y))
    prediction = est.predict(X)
    assert prediction.dtype == est.classes_.dtype
    assert set(prediction) <= set(est.classes_)
    assert (prediction == y).mean() > 0.8

    # The same model as integer codes gives: labels only name the classes.
    coded = DeltaGradLogisticRegression(random_state=0, **FAST)
    coded.fit(X[:100], codes[:100])
    assert_array_equal(est.coef_, coded.coef_)

    for model, labels in ((est, y), (coded, codes)):
        model.partial_fit(X[100:], labels[100:])
        model.partial_unfit(X[[1, 2]], labels[[1, 2]])
    assert_array_equal(est.coef_, coded.coef_)
    assert_array_equal(est.sample_ids_, coded.sample_ids_)
    assert_array_equal(est.classes_[coded.predict(X)], est.predict(X))


def test_partial_fit_first_call_is_fit():
    X, y = classification()
    fitted = DeltaGradLogisticRegression(random_state=0, **FAST).fit(X, y)
    first = DeltaGradLogisticRegression(random_state=0, **FAST)
    first.partial_fit(X, y, classes=[2, 0, 1])
    assert_same_state(first, fitted)
    # classes may name a class that has no rows yet.
    wider = DeltaGradLogisticRegression(random_state=0, **FAST)
    wider.partial_fit(X, y, classes=[0, 1, 2, 3])
    assert_array_equal(wider.classes_, [0, 1, 2, 3])
    assert wider.coef_.shape == (4, X.shape[1])
    wider.partial_fit(X[:2], [3, 3])
    assert wider.n_samples_seen_ == X.shape[0] + 2

    Xr, yr = regression()
    reg = DeltaGradRidge(random_state=0, **FAST)
    assert_same_state(reg.partial_fit(Xr, yr), clone(reg).fit(Xr, yr))


def test_ridge_target_shapes():
    X, y = regression(n_targets=3)
    est = DeltaGradRidge(random_state=0, **FAST).fit(X, y)
    assert est.coef_.shape == (3, X.shape[1])
    assert est.intercept_.shape == (3,)
    assert est.predict(X).shape == (X.shape[0], 3)
    est.partial_fit(X[:4], y[:4]).partial_unfit(X[[5]], y[[5]])
    assert est.coef_.shape == (3, X.shape[1])

    column = DeltaGradRidge(random_state=0, **FAST).fit(X, y[:, :1])
    assert column.coef_.shape == (1, X.shape[1])
    assert column.predict(X).shape == (X.shape[0], 1)

    single = DeltaGradRidge(random_state=0, **FAST).fit(X, y[:, 0])
    assert single.coef_.shape == (X.shape[1],)
    assert isinstance(single.intercept_, float)
    assert single.predict(X).shape == (X.shape[0],)
    assert_array_equal(single.coef_, column.coef_[0])
    single.partial_unfit(indices=[0]).partial_fit(X[:2], y[:2, 0])
    assert single.coef_.shape == (X.shape[1],)
    assert isinstance(single.intercept_, float)


# ----------------------------------------------------------- removal by value
@pytest.mark.parametrize("kind", ["multiclass", "ridge"])
def test_partial_unfit_by_value_equals_by_index(kind):
    est, X, y = problem(kind)
    by_value = clone(est).fit(X, y)
    by_index = clone(est).fit(X, y)
    rows = [40, 3, 77]
    by_value.partial_unfit(X[rows])
    by_index.partial_unfit(indices=rows)
    assert_same_state(by_value, by_index)
    rows = [10, 11]
    by_value.partial_unfit(X[rows], y[rows])
    by_index.partial_unfit(indices=rows)
    assert_same_state(by_value, by_index)


@pytest.mark.parametrize("kind", ["multiclass", "ridge"])
def test_partial_unfit_by_value_with_duplicate_rows(kind):
    est, X, y = problem(kind)
    n = X.shape[0]
    # Rows n, n + 1, n + 2 repeat rows 0, 1, 2 exactly.
    Xd, yd = np.concatenate([X, X[:3]]), np.concatenate([y, y[:3]])
    est.fit(Xd, yd)

    est.partial_unfit(X[[0]], y[[0]])  # one of the two copies goes
    assert est.n_samples_seen_ == n + 2
    gone = np.setdiff1d(np.arange(n + 3), est.sample_ids_)
    assert gone.size == 1 and gone[0] in (0, n)
    est.partial_unfit(X[[0]])  # then the other
    assert not np.isin([0, n], est.sample_ids_).any()

    est.partial_unfit(X[[1, 1]])  # a row given twice removes both copies
    assert est.n_samples_seen_ == n - 1
    assert not np.isin([1, n + 1], est.sample_ids_).any()

    before = est.sample_ids_.copy()
    with pytest.raises(ValueError, match=r"not in the training set.*\[2\]"):
        est.partial_unfit(X[[2, 2, 2]])  # only two copies exist
    assert_array_equal(est.sample_ids_, before)


def test_partial_unfit_by_value_y_tells_equal_rows_apart():
    X, y = classification()
    X[1] = X[0]
    y[0], y[1] = 0, 1
    for label, removed, kept in ((1, 1, 0), (0, 0, 1)):
        est = DeltaGradLogisticRegression(random_state=0, **FAST).fit(X, y)
        est.partial_unfit(X[[0]], [label])
        assert removed not in est.sample_ids_
        assert kept in est.sample_ids_
        assert est.n_samples_seen_ == X.shape[0] - 1
    # Without y, exactly one of the two goes.
    est = DeltaGradLogisticRegression(random_state=0, **FAST).fit(X, y)
    est.partial_unfit(X[[0]])
    assert np.isin([0, 1], est.sample_ids_).sum() == 1
    # With a label that no copy has, nothing matches.
    with pytest.raises(ValueError, match="not in the training set"):
        est.partial_unfit(X[[0]], [2])

    Xr, yr = regression()
    Xr[1] = Xr[0]
    yr[1] = yr[0] + 1.0
    reg = DeltaGradRidge(random_state=0, **FAST).fit(Xr, yr)
    reg.partial_unfit(Xr[[0]], yr[[1]])
    assert 1 not in reg.sample_ids_ and 0 in reg.sample_ids_


def test_sample_ids_are_stable_and_never_reused():
    X, y = classification(n_samples=130)
    n = 100
    est = DeltaGradLogisticRegression(random_state=0, **FAST).fit(X[:n], y[:n])
    assert_array_equal(est.sample_ids_, np.arange(n))
    assert est.sample_ids_.dtype == np.int64
    assert est.n_samples_seen_ == n

    est.partial_unfit(indices=[n - 1, 5])  # the highest id goes
    assert_array_equal(est.sample_ids_, np.setdiff1d(np.arange(n), [5, n - 1]))
    assert est.n_samples_seen_ == n - 2

    est.partial_fit(X[n : n + 3], y[n : n + 3])
    assert_array_equal(est.sample_ids_[-3:], [n, n + 1, n + 2])
    assert est.n_samples_seen_ == n + 1

    est.partial_unfit(indices=[n + 1, n + 2])  # remove the newest rows
    est.partial_fit(X[n + 3 : n + 5], y[n + 3 : n + 5])
    assert_array_equal(est.sample_ids_[-3:], [n, n + 3, n + 4])
    assert est.n_samples_seen_ == n + 1

    est.partial_unfit(X[[n + 3]], y[[n + 3]])  # an added row, by value
    assert n + 3 not in est.sample_ids_
    assert np.all(np.diff(est.sample_ids_) > 0)
    assert est.n_samples_seen_ == est.sample_ids_.size == n

    # The live rows are exactly the rows with those ids.
    X_all = X[: n + 5]
    assert_array_equal(est._rows.X, X_all[est.sample_ids_])
    with pytest.raises(ValueError, match=rf"not live training rows: \[{n + 1}\]"):
        est.partial_unfit(indices=[n + 1])


def test_fitted_attributes_are_not_the_internal_state():
    X, y = classification()
    est = DeltaGradLogisticRegression(random_state=0, **FAST).fit(X, y)
    twin = clone(est).fit(X, y)
    # A user editing the fitted attributes in place must not corrupt the model.
    est.sample_ids_[:] = est.sample_ids_[::-1]
    est.coef_[:] = 0.0
    est.intercept_[:] = 0.0
    for model in (est, twin):
        model.partial_unfit(indices=[3, 4])
    assert_same_state(est, twin)


def test_successful_requests_do_not_mutate_caller_arrays():
    X, y = classification()
    X_in, y_in = X.copy(), y.copy()
    ids = np.array([4, 2])
    est = DeltaGradLogisticRegression(random_state=0, **FAST).fit(X_in, y_in)
    est.partial_unfit(indices=ids)
    est.partial_unfit(X_in[:2], y_in[:2])
    est.partial_fit(X_in[:5], y_in[:5])
    assert_array_equal(X_in, X)
    assert_array_equal(y_in, y)
    assert_array_equal(ids, [4, 2])
    # The training rows are the estimator's own copy.
    X_in[:] = 0.0
    assert not np.array_equal(est._rows.X, X_in[: est.n_samples_seen_])


# ------------------------------------------------- requests stay near the retrain
def _serve(est, ref, X, y, seed):
    """The same removals and additions, DeltaGrad on ``est``, exact on ``ref``."""
    rng = np.random.default_rng(seed)
    for step in range(4):
        if step % 2 == 0:
            ids = rng.choice(est.sample_ids_, 2, replace=False)
            est.partial_unfit(indices=ids)
            ref.partial_unfit(indices=ids, method="exact")
        else:
            rows = 100 + rng.choice(20, 2, replace=False)
            est.partial_fit(X[rows], y[rows])
            ref.partial_fit(X[rows], y[rows], method="exact")
    return np.linalg.norm(np.ravel(est.coef_) - np.ravel(ref.coef_)) / np.linalg.norm(
        np.ravel(ref.coef_)
    )


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kind", ["multiclass", "ridge"])
def test_requests_stay_close_to_exact_retrain(kind, seed):
    """A coarse guard against a diverging replay (fidelity is tested elsewhere)."""
    est, X, y = problem(kind)
    est.set_params(random_state=seed)
    est.fit(X[:100], y[:100])
    ref = clone(est).fit(X[:100], y[:100])
    assert _serve(est, ref, X, y, seed) < 0.1
    assert est.last_update_.method == "deltagrad"
    assert est.last_update_.n_approximate_iterations > 0


def test_short_lbfgs_memory_does_not_diverge():
    X, y = regression(seed=20)
    params = dict(random_state=20, batch_size=16, max_iter=6, lbfgs_memory=4)
    est = DeltaGradRidge(**params).fit(X[:100], y[:100])
    ref = DeltaGradRidge(**params).fit(X[:100], y[:100])
    est.partial_unfit(indices=[0])
    ref.partial_unfit(indices=[0], method="exact")
    assert np.isfinite(est.coef_).all()
    assert_allclose(est.coef_, ref.coef_, rtol=0.1)


# ---------------------------------------------------------------------- pandas
@pytest.mark.parametrize("kind", ["multiclass", "ridge"])
def test_feature_names_from_dataframe(kind):
    est, X, y = problem(kind)
    columns = ["alpha", "beta", "gamma", "delta"]
    frame = pd.DataFrame(X, columns=columns)
    est.fit(frame.iloc[:100], pd.Series(y[:100]))
    assert_array_equal(est.feature_names_in_, columns)
    assert est.n_features_in_ == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no feature-name warnings with frames
        est.partial_fit(frame.iloc[100:], y[100:])
        est.partial_unfit(frame.iloc[[3, 4]], y[[3, 4]])
        prediction = est.predict(frame)
    assert est.n_samples_seen_ == X.shape[0] - 2
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        from_array = est.predict(X)
    assert_allclose(prediction, from_array, rtol=1e-12)
    with pytest.raises(ValueError, match="feature names"):
        est.partial_fit(frame.iloc[:2, ::-1], y[:2])
    with pytest.raises(ValueError, match="feature names"):
        est.partial_unfit(frame.iloc[:2].rename(columns={"alpha": "a"}))
    # Fitted on an array, there are no names.
    assert not hasattr(clone(est).fit(X, y), "feature_names_in_")
