"""pandas inputs (issue #7): feature names, DataFrame rows in requests, Series
targets, and frames with other columns, which must fail without touching the model.
"""

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression

from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge

# Small runs whose replays mix exact and approximate iterations.
PARAMS = dict(random_state=0, max_iter=5, batch_size=64, burn_in=2, exact_period=3)
COLUMNS = ["age", "height", "income", "score", "visits"]
KINDS = ["logistic", "ridge"]
NAMES_DIFFER = "feature names should match those that were passed during fit"


def problem(kind):
    """``(estimator, X, y)``: a 200-row frame and a Series sharing an index whose
    labels are not the row positions (so that labels and stable ids can't be mixed
    up unnoticed)."""
    if kind == "logistic":
        X, y = make_classification(
            n_samples=200,
            n_features=len(COLUMNS),
            n_informative=3,
            n_redundant=0,
            n_classes=3,
            random_state=0,
        )
        y = np.array(["ant", "bee", "cat"])[y]
        est = DeltaGradLogisticRegression(**PARAMS)
    else:
        X, y = make_regression(
            n_samples=200, n_features=len(COLUMNS), noise=1.0, random_state=0
        )
        y = y / y.std()
        est = DeltaGradRidge(**PARAMS)
    index = pd.Index(np.arange(1000, 1200)[::-1], name="record")
    frame = pd.DataFrame(X, columns=COLUMNS, index=index)
    return est, frame, pd.Series(y, index=index, name="target")


def snapshot(est):
    return {
        "coef_": np.array(est.coef_, copy=True),
        "intercept_": np.array(est.intercept_, copy=True),
        "sample_ids_": est.sample_ids_.copy(),
        "n_samples_seen_": est.n_samples_seen_,
        "n_requests": len(est.update_log_),
        "feature_names_in_": est.feature_names_in_.copy(),
    }


def assert_same_model(a, b):
    """Bitwise equal coefficients and the same live rows."""
    assert_array_equal(a.coef_, b.coef_, strict=True)
    assert_array_equal(a.intercept_, b.intercept_, strict=True)
    assert_array_equal(a.sample_ids_, b.sample_ids_, strict=True)


# ----------------------------------------------------------------- feature names
@pytest.mark.parametrize("kind", KINDS)
def test_fit_on_frame_sets_feature_names(kind):
    est, X, y = problem(kind)
    est.fit(X, y)
    assert_array_equal(est.feature_names_in_, COLUMNS)
    assert est.feature_names_in_.dtype == object
    assert est.n_features_in_ == len(COLUMNS)

    # The same model as from the arrays, up to rounding: a frame's values are
    # column-major, which may change the last bit of the fit-time feature means.
    from_arrays = clone(est).fit(X.to_numpy(), y.to_numpy())
    assert not hasattr(from_arrays, "feature_names_in_")
    assert_allclose(est.coef_, from_arrays.coef_, rtol=1e-10, atol=1e-12)
    assert_allclose(est.intercept_, from_arrays.intercept_, rtol=1e-10, atol=1e-12)

    # Refitting on an array forgets the names, as in scikit-learn.
    est.fit(X.to_numpy(), y.to_numpy())
    assert not hasattr(est, "feature_names_in_")


def test_first_partial_fit_on_frame_sets_feature_names():
    est, X, y = problem("logistic")
    est.partial_fit(X, y, classes=["ant", "bee", "cat"])
    assert_array_equal(est.feature_names_in_, COLUMNS)
    reg, Xr, yr = problem("ridge")
    reg.partial_fit(Xr, yr)
    assert_array_equal(reg.feature_names_in_, COLUMNS)


@pytest.mark.parametrize("kind", KINDS)
def test_requests_accept_frames_with_the_same_columns(kind):
    est, X, y = problem(kind)
    est.fit(X.iloc[:150], y.iloc[:150])
    twin = copy.deepcopy(est)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no feature-name warning for frames
        est.partial_fit(X.iloc[150:], y.iloc[150:])
        assert est.last_update_.n_approximate_iterations > 0
        est.partial_unfit(X.iloc[[3, 160]], y.iloc[[3, 160]])
        prediction = est.predict(X)
        score = est.score(X, y)

    # The frames did what the same rows as arrays do.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        twin.partial_fit(X.iloc[150:].to_numpy(), y.iloc[150:].to_numpy())
        twin.partial_unfit(X.iloc[[3, 160]].to_numpy(), y.iloc[[3, 160]].to_numpy())
        assert_array_equal(prediction, twin.predict(X.to_numpy()))
        assert score == twin.score(X.to_numpy(), y.to_numpy())
    assert_same_model(est, twin)
    assert est.n_samples_seen_ == 198
    assert not np.isin([3, 160], est.sample_ids_).any()
    assert_array_equal(est.feature_names_in_, COLUMNS)


def _other_columns(X, change):
    if change == "reordered":
        return X[COLUMNS[::-1]]
    if change == "renamed":
        return X.rename(columns={"income": "salary"})
    if change == "extra":
        return X.assign(extra=1.0)
    return X.drop(columns="score")  # missing


@pytest.mark.parametrize("call", ["partial_fit", "partial_unfit", "predict"])
@pytest.mark.parametrize("change", ["reordered", "renamed", "extra", "missing"])
@pytest.mark.parametrize("kind", KINDS)
def test_other_columns_raise_and_leave_the_model_unchanged(kind, change, call):
    est, X, y = problem(kind)
    est.fit(X, y)
    est.partial_unfit(indices=[0, 1])  # a model that served a request already
    untouched = copy.deepcopy(est)
    before = snapshot(est)
    # Training rows: without the names check, the removal would succeed.
    rows = _other_columns(X.iloc[[5, 6, 7]], change)
    with pytest.raises(ValueError, match=NAMES_DIFFER) as error:
        if call == "partial_fit":
            est.partial_fit(rows, y.iloc[[5, 6, 7]])
        elif call == "partial_unfit":
            est.partial_unfit(rows, y.iloc[[5, 6, 7]])
        else:
            est.predict(rows)
    if change == "renamed":
        assert "salary" in str(error.value)
    after = snapshot(est)
    for name, value in before.items():
        assert_array_equal(after[name], value, err_msg=name, strict=True)
    # The next request gives what it gives on a model that never saw the bad call.
    for model in (est, untouched):
        model.partial_unfit(X.iloc[[5, 6]], y.iloc[[5, 6]])
    assert_same_model(est, untouched)


# ------------------------------------------------- arrays after a frame, and back
@pytest.mark.parametrize("kind", KINDS)
def test_array_after_frame_fit_warns_and_works(kind):
    est, X, y = problem(kind)
    est.fit(X.iloc[:150], y.iloc[:150])
    twin = copy.deepcopy(est)
    A, b = X.to_numpy(), y.to_numpy()
    no_names = "X does not have valid feature names"
    with pytest.warns(UserWarning, match=no_names):
        prediction = est.predict(A)
    with pytest.warns(UserWarning, match=no_names):
        est.partial_fit(A[150:], b[150:])
    with pytest.warns(UserWarning, match=no_names):
        est.partial_unfit(A[[3, 160]], b[[3, 160]])
    # Same results as with frames; the names stay.
    assert_array_equal(prediction, twin.predict(X))
    twin.partial_fit(X.iloc[150:], y.iloc[150:])
    twin.partial_unfit(X.iloc[[3, 160]], y.iloc[[3, 160]])
    assert_same_model(est, twin)
    assert_array_equal(est.feature_names_in_, COLUMNS)


@pytest.mark.parametrize("kind", KINDS)
def test_frame_after_array_fit_warns(kind):
    est, X, y = problem(kind)
    est.fit(X.to_numpy(), y.to_numpy())
    has_names = "X has feature names, but .* was fitted without feature names"
    with pytest.warns(UserWarning, match=has_names):
        est.partial_fit(X.iloc[:2], y.iloc[:2])
    with pytest.warns(UserWarning, match=has_names):
        est.partial_unfit(X.iloc[[3]], y.iloc[[3]])
    assert est.n_samples_seen_ == 201
    assert not hasattr(est, "feature_names_in_")


# ------------------------------------------------------------ removal by frame
@pytest.mark.parametrize("kind", KINDS)
def test_partial_unfit_by_frame_rows_equals_by_indices(kind):
    est, X, y = problem(kind)
    by_rows = clone(est).fit(X, y)
    by_ids = clone(est).fit(X, y)
    coef = np.array(by_rows.coef_)
    # Stable ids are positions in the fitted frame, not its index labels.
    positions = [3, 77, 150]
    by_rows.partial_unfit(X.iloc[positions], y.iloc[positions])
    by_ids.partial_unfit(indices=positions)
    assert_same_model(by_rows, by_ids)
    assert not np.isin(positions, by_rows.sample_ids_).any()
    assert by_rows.last_update_.n_approximate_iterations > 0
    assert not np.array_equal(coef, by_rows.coef_)

    # Without y, and for rows added later (ids 200, 201, 202).
    by_rows.partial_unfit(X.loc[[1189]])  # label 1189: the row at position 10
    by_ids.partial_unfit(indices=[10])
    assert_same_model(by_rows, by_ids)
    new_X = X.iloc[:3] * 0.5 + 1.0
    new_y = y.iloc[:3] if kind == "logistic" else y.iloc[:3] * 0.5
    for model in (by_rows, by_ids):
        model.partial_fit(new_X, new_y)
    assert_array_equal(by_rows.sample_ids_[-3:], [200, 201, 202])
    by_rows.partial_unfit(new_X.iloc[[0, 2]], new_y.iloc[[0, 2]])
    by_ids.partial_unfit(indices=[200, 202])
    assert_same_model(by_rows, by_ids)
    assert by_rows.n_samples_seen_ == 200 - 4 + 1


# -------------------------------------------------------------- Series targets
TARGETS = {
    "logistic": {
        "str": lambda y: y,  # pandas' default string dtype
        "object": lambda y: y.astype(object),
        "category": lambda y: y.astype("category"),
    },
    "ridge": {
        "float64": lambda y: y,
        "Float64": lambda y: y.astype("Float64"),  # nullable
        "float32": lambda y: y.astype(np.float32),
    },
}
TARGET_CASES = [(kind, dtype) for kind in KINDS for dtype in TARGETS[kind]]


@pytest.mark.parametrize(("kind", "dtype"), TARGET_CASES)
def test_series_targets(kind, dtype):
    est, X, y = problem(kind)
    series = TARGETS[kind][dtype](y)
    array = series.to_numpy(dtype=object if kind == "logistic" else np.float64)
    from_series = clone(est).fit(X.iloc[:150], series.iloc[:150])
    from_array = clone(est).fit(X.iloc[:150], array[:150])
    assert_same_model(from_series, from_array)
    if kind == "logistic":
        assert_array_equal(from_series.classes_, ["ant", "bee", "cat"])
        assert set(from_series.predict(X)) <= {"ant", "bee", "cat"}
        assert from_series.score(X, series) > 0.6
    else:
        assert from_series.predict(X).shape == (200,)
        assert from_series.score(X, series) > 0.9

    from_series.partial_fit(X.iloc[150:], series.iloc[150:])
    from_array.partial_fit(X.iloc[150:], array[150:])
    from_series.partial_unfit(X.iloc[[4, 170]], series.iloc[[4, 170]])
    from_array.partial_unfit(X.iloc[[4, 170]], array[[4, 170]])
    assert_same_model(from_series, from_array)
    assert from_series.n_samples_seen_ == 198


@pytest.mark.parametrize("kind", KINDS)
def test_series_target_with_missing_value_is_refused(kind):
    est, X, y = problem(kind)
    est.fit(X.iloc[:150], y.iloc[:150])
    before = snapshot(est)
    # pandas' default string dtype, or a nullable float: the gap is NaN or pd.NA.
    new_y = y.iloc[150:160].astype("str" if kind == "logistic" else "Float64")
    new_y.iloc[4] = pd.NA
    with pytest.raises(ValueError, match="contains NaN"):
        est.partial_fit(X.iloc[150:160], new_y)
    after = snapshot(est)
    for name, value in before.items():
        assert_array_equal(after[name], value, err_msg=name, strict=True)
