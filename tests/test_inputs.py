"""Real-world inputs: sparse rows, float32 rows, sample and class weights.

Each feature is checked against a reference: sparse against dense, float32 against
the same values in float64, weights against repeated rows (full batches) or against
the equivalent ``sample_weight``.
"""

import copy
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.utils.class_weight import compute_class_weight

from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge
from sklearn_deltagrad._rows import TrainingRows

from .test_bad_input import call_and_check

PARAMS = dict(batch_size=32, max_iter=6, burn_in=2, exact_period=3, random_state=0)


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def parameters(est):
    return np.concatenate([np.ravel(est.coef_), np.ravel(est.intercept_)])


def sparse_data(kind, n_samples=200, n_features=30, seed=0):
    """Rows with about 80% zeros (stored sparsely) and their targets."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    X[rng.random(X.shape) < 0.8] = 0.0
    X[:, 0] += 1.0  # one dense column far from zero mean
    w = rng.standard_normal(n_features)
    if kind == "ridge":
        return X, X @ w + 0.1 * rng.standard_normal(n_samples)
    scores = X @ w
    if kind == "binary":
        return X, (scores > np.median(scores)).astype(int)
    return X, np.digitize(scores, np.quantile(scores, [0.33, 0.66]))


def estimator(kind, **params):
    cls = DeltaGradRidge if kind == "ridge" else DeltaGradLogisticRegression
    return cls(**{**PARAMS, **params})


KINDS_AND_CURVATURES = [
    ("binary", "auto"),
    ("binary", "lbfgs"),
    ("multinomial", "hessian"),
    ("multinomial", "lbfgs"),
    ("ridge", "auto"),  # the Gram model
    ("ridge", "hessian"),
]


# ------------------------------------------------------------------ sparse rows
@pytest.mark.parametrize("kind, curvature", KINDS_AND_CURVATURES)
def test_sparse_rows_give_the_dense_results(kind, curvature):
    X, y = sparse_data(kind)
    Xs = sp.csr_matrix(X)
    dense = estimator(kind, curvature=curvature).fit(X[:180], y[:180])
    sparse = estimator(kind, curvature=curvature).fit(Xs[:180], y[:180])
    assert sp.issparse(sparse._rows.X) and sparse._rows.X.format == "csr"
    assert rel_err(parameters(sparse), parameters(dense)) < 1e-10
    requests = [
        ("partial_unfit", (), {"indices": [3, 50, 77]}),
        ("partial_fit", ("rows", slice(180, 190)), {}),
        ("partial_unfit", ("rows", slice(10, 13)), {}),
        ("partial_unfit", (), {"indices": [181, 5], "method": "exact"}),
        ("partial_fit", ("rows", slice(190, 200)), {"method": "exact"}),
    ]
    for method, args, kwargs in requests:
        for est, rows in ((dense, X), (sparse, Xs)):
            call_args = (rows[args[1]], y[args[1]]) if args else ()
            getattr(est, method)(*call_args, **kwargs)
        assert rel_err(parameters(sparse), parameters(dense)) < 1e-10, method
        np.testing.assert_array_equal(sparse.sample_ids_, dense.sample_ids_)
    assert sparse.update_log_[0].n_approximate_iterations > 0
    np.testing.assert_allclose(
        sparse.predict(Xs), dense.predict(X), rtol=1e-9, atol=1e-9
    )


@pytest.mark.parametrize("fmt", ["csc", "coo", "lil"])
def test_other_sparse_formats_are_converted_to_csr(fmt):
    X, y = sparse_data("binary")
    reference = estimator("binary").fit(sp.csr_matrix(X), y)
    est = estimator("binary").fit(sp.csr_matrix(X).asformat(fmt), y)
    assert est._rows.X.format == "csr"
    np.testing.assert_array_equal(parameters(est), parameters(reference))
    est.partial_unfit(sp.csr_matrix(X[:2]).asformat(fmt), y[:2])
    reference.partial_unfit(indices=[0, 1])
    np.testing.assert_array_equal(parameters(est), parameters(reference))


def test_sparse_input_is_never_densified():
    """A matrix whose dense form takes 8 GB is fit, edited and predicted with a few
    tens of MB of Python allocations (the cache, its copy, the L-BFGS pairs)."""
    rng = np.random.default_rng(0)
    X = sp.random(20_000, 50_000, density=1e-4, format="csr", random_state=rng)
    sums = np.asarray(X.sum(axis=1)).ravel()
    y = (sums > np.median(sums)).astype(int)
    est = DeltaGradLogisticRegression(
        batch_size=5000,
        max_iter=2,
        burn_in=1,
        exact_period=2,
        lbfgs_memory=4,
        random_state=0,
    )

    def fit_edit_predict(est, X, y):
        est.fit(X, y)
        est.partial_unfit(indices=[1, 2, 3])
        est.partial_unfit(X[10:12], y[10:12])
        est.partial_fit(X[:4], y[:4])
        est.predict_proba(X)

    # Load (or compile) the kernels first: Numba's own allocations would count
    # only when this test runs first in its process.
    fit_edit_predict(clone(est), X[:2000], y[:2000])
    tracemalloc.start()
    try:
        fit_edit_predict(est, X, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    sparse_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    # A request copies the cache (so that a failure changes nothing) and the
    # replay holds its L-BFGS pairs; nothing of the size of the dense matrix.
    lbfgs_bytes = 2 * est._replay_settings().lbfgs_memory * est._model.n_params * 8
    assert peak < 2 * sparse_bytes + 3 * est.cache_nbytes_ + lbfgs_bytes + 2**24
    assert peak < 0.01 * X.shape[0] * X.shape[1] * 8


@pytest.mark.parametrize("copy_cache", [True, False])
def test_reuters_memory_stays_within_the_rows_and_the_cache(load_dataset, copy_cache):
    """Reuters-21578 (7,770 x 8,315 sparse TF-IDF): ``fit`` peaks below twice the
    CSR rows plus the cache. A request that writes its trajectory in place
    (``copy_cache=False``) too; the default one adds the new cache that it builds
    aside (all or nothing) and the L-BFGS pairs."""
    X, _, y, _ = load_dataset("reuters")
    assert sp.issparse(X)
    sparse_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    # Load (or compile) the kernels first: Numba's own allocations are not the
    # estimator's, and would count only when this test runs first in its process.
    warm = DeltaGradLogisticRegression(random_state=0, copy_cache=copy_cache)
    warm.fit(X[:600], y[:600]).partial_unfit(indices=[0, 1])
    est = DeltaGradLogisticRegression(random_state=0, copy_cache=copy_cache)
    tracemalloc.start()
    try:
        est.fit(X, y)
        _, fit_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        est.partial_unfit(indices=np.arange(0, X.shape[0], 1000))
        _, request_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    cache = est.cache_nbytes_
    print(
        f"reuters: rows {sparse_bytes} B, cache {cache} B, peaks {fit_peak} B "
        f"(fit) and {request_peak} B (request)"
    )
    assert fit_peak <= 2 * sparse_bytes + cache
    if copy_cache:
        lbfgs_bytes = 2 * est._replay_settings().lbfgs_memory * est._model.n_params
        assert request_peak <= sparse_bytes + 2 * cache + 8 * lbfgs_bytes + 2**22
    else:
        assert request_peak <= 2 * sparse_bytes + cache


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sparse_rows_are_compacted_in_place_and_restored(dtype):
    """A removal moves the kept CSR entries over the removed rows (no copy of ``X``)
    and zeroes the freed ones; its undo restores every array bitwise."""
    rng = np.random.default_rng(0)
    for trial in range(60):
        n, p = rng.integers(2, 40), rng.integers(1, 10)
        X = sp.random(n, p, density=rng.uniform(0, 0.8), format="csr", rng=rng)
        X = X.astype(dtype)
        rows = TrainingRows.from_fit(X.copy(), rng.normal(size=(n, 1)), rng.random(n))
        arrays = (rows.X.data, rows.X.indices, rows.X.indptr, rows.Y, rows.weights)
        before = [a.copy() for a in arrays]
        removed = np.sort(rng.choice(n, rng.integers(1, n), replace=False))
        kept = np.setdiff1d(np.arange(n), removed)
        pending = rows.removal(removed)
        assert pending.in_place
        compacted = pending.apply()
        assert compacted.X.dtype == dtype and compacted.X.shape == (kept.size, p)
        assert (compacted.X != X[kept]).nnz == 0
        np.testing.assert_array_equal(compacted.ids, kept)
        np.testing.assert_array_equal(compacted.Y, before[3][kept])
        assert not rows.X.data[compacted.X.nnz :].any()
        if 2 * compacted.X.nnz > X.nnz:  # scipy copies views of under half
            assert np.shares_memory(compacted.X.data, rows.X.data)
        if trial % 2:
            pending.apply()  # a second call changes nothing
            pending.undo()
            for array, old in zip(arrays, before, strict=True):
                np.testing.assert_array_equal(array, old)
            np.testing.assert_array_equal(rows.ids, np.arange(n))


def test_sparse_rows_are_matched_by_value_with_explicit_zeros_and_order():
    X, y = sparse_data("ridge", n_samples=60)
    est = estimator("ridge").fit(sp.csr_matrix(X), y)
    # The same rows with unsorted column indices and an explicit zero each.
    rows = sp.csr_matrix(X[[5, 9]])
    data, indices, indptr = [], [], [0]
    for i in range(2):
        lo, hi = rows.indptr[i], rows.indptr[i + 1]
        unused = np.setdiff1d(np.arange(X.shape[1]), rows.indices[lo:hi])[0]
        data += [*rows.data[lo:hi][::-1], 0.0]
        indices += [*rows.indices[lo:hi][::-1], unused]
        indptr.append(len(data))
    query = sp.csr_matrix((data, indices, indptr), shape=(2, X.shape[1]))
    assert not query.has_sorted_indices and query.nnz == rows.nnz + 2
    twin = copy.deepcopy(est)
    est.partial_unfit(query, y[[5, 9]])
    twin.partial_unfit(indices=[5, 9])
    np.testing.assert_array_equal(parameters(est), parameters(twin))


# ------------------------------------------------------------------ float32 rows
@pytest.mark.parametrize("kind", ["binary", "multinomial", "ridge"])
def test_float32_rows_are_kept_and_read_without_a_float64_copy(kind):
    X, y = sparse_data(kind)
    X32 = X.astype(np.float32)
    X32_before = X32.copy()
    est = estimator(kind).fit(X32[:180], y[:180])
    assert est._rows.X.dtype == np.float32
    assert not np.shares_memory(est._rows.X, X32)
    widened = estimator(kind).fit(X32[:180].astype(np.float64), y[:180])
    # The kernels read the same values: the same model up to rounding.
    assert rel_err(parameters(est), parameters(widened)) < 1e-10
    # And the float64 data's model to float32 precision.
    original = estimator(kind).fit(X[:180], y[:180])
    assert rel_err(parameters(est), parameters(original)) < 1e-5
    for model, rows in ((est, X32), (widened, X32.astype(np.float64))):
        model.partial_unfit(indices=[4, 8])
        model.partial_unfit(rows[20:22], y[20:22])
    est.partial_fit(X[180:190], y[180:190])  # float64 rows join as float32
    widened.partial_fit(X32[180:190].astype(np.float64), y[180:190])
    assert est._rows.X.dtype == np.float32
    assert rel_err(parameters(est), parameters(widened)) < 1e-9
    np.testing.assert_array_equal(X32, X32_before)
    assert est._rows.X.nbytes * 2 == widened._rows.X.nbytes


# ---------------------------------------------------------------- sample weights
def _weights_and_repeats(n_samples, seed=0):
    rng = np.random.default_rng(seed)
    weights = rng.integers(0, 4, size=n_samples).astype(np.float64)
    weights[:3] = [0.0, 1.0, 3.0]
    return weights, np.repeat(np.arange(n_samples), weights.astype(int))


@pytest.mark.parametrize("kind", ["binary", "multinomial", "ridge"])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_integer_weights_equal_repeated_rows_with_full_batches(
    kind, fit_intercept, layout
):
    X, y = sparse_data(kind, n_samples=80)
    rows = sp.csr_matrix(X) if layout == "sparse" else X
    weights, repeats = _weights_and_repeats(X.shape[0])
    params = dict(batch_size=None, max_iter=30, fit_intercept=fit_intercept)
    weighted = estimator(kind, **params).fit(rows, y, sample_weight=weights)
    repeated = estimator(kind, **params).fit(rows[repeats], y[repeats])
    assert weighted.learning_rate_ == pytest.approx(repeated.learning_rate_)
    assert rel_err(parameters(weighted), parameters(repeated)) < 1e-10


@pytest.mark.parametrize("kind", ["binary", "ridge"])
def test_removing_a_weighted_row_removes_its_weight(kind):
    """Full batches, fixed centring and step: removing a row of weight 3 (exactly)
    gives the model fit without it; adding it back with weight 3 restores it."""
    X, y = sparse_data(kind, n_samples=80)
    weights, _ = _weights_and_repeats(X.shape[0])
    weights_before = weights.copy()
    params = dict(batch_size=None, max_iter=20, fit_intercept=False, learning_rate=0.1)
    est = estimator(kind, **params).fit(X, y, sample_weight=weights)
    est.partial_unfit(indices=[2], method="exact")
    np.testing.assert_array_equal(weights, weights_before)  # the caller's array
    keep = np.arange(1, X.shape[0]) != 2
    without = estimator(kind, **params).fit(
        X[1:][keep], y[1:][keep], sample_weight=weights[1:][keep]
    )
    # Row 0 weighs 0: fitting without it is the same objective.
    assert rel_err(parameters(est), parameters(without)) < 1e-10
    est.partial_fit(X[2:3], y[2:3], sample_weight=[3.0], method="exact")
    full = estimator(kind, **params).fit(X, y, sample_weight=weights)
    assert rel_err(parameters(est), parameters(full)) < 1e-10
    np.testing.assert_array_equal(est._rows.weights[-1], 3.0)


@pytest.mark.parametrize("kind, curvature", KINDS_AND_CURVATURES)
def test_weighted_replay(kind, curvature):
    """With weights the replay is the exact retrain when every iteration is exact,
    and close to it with the default period."""
    X, y = sparse_data(kind)
    weights = np.random.default_rng(1).uniform(0.0, 3.0, size=X.shape[0])
    fits = {}
    for period in (1, 3):
        est = estimator(kind, curvature=curvature, exact_period=period, max_iter=10)
        est.fit(X[:180], y[:180], sample_weight=weights[:180])
        exact = copy.deepcopy(est)
        before = parameters(est)
        est.partial_unfit(indices=[3, 50, 77, 120])
        est.partial_fit(X[180:190], y[180:190], sample_weight=weights[180:190])
        exact.partial_unfit(indices=[3, 50, 77, 120], method="exact")
        exact.partial_fit(
            X[180:190], y[180:190], sample_weight=weights[180:190], method="exact"
        )
        fits[period] = (est, exact, before)
    est, exact, _ = fits[1]
    assert rel_err(parameters(est), parameters(exact)) < 1e-9
    est, exact, before = fits[3]
    assert est.update_log_[0].n_approximate_iterations > 0
    change = np.linalg.norm(parameters(exact) - before)
    # L-BFGS on batches of 32 rows: about 0.2 without weights too.
    bar = 0.3 if curvature == "lbfgs" else 0.1
    assert np.linalg.norm(parameters(est) - parameters(exact)) < bar * change


def test_zero_weight_rows_do_not_count():
    X, y = sparse_data("binary", n_samples=80)
    weights = np.ones(X.shape[0])
    weights[[4, 9, 30]] = 0.0
    params = dict(batch_size=None, max_iter=10, fit_intercept=False, learning_rate=0.1)
    est = estimator("binary", **params).fit(X, y, sample_weight=weights)
    keep = weights > 0
    without = estimator("binary", **params).fit(X[keep], y[keep])
    assert rel_err(parameters(est), parameters(without)) < 1e-12
    assert est.n_samples_seen_ == X.shape[0]  # the rows are kept (removable)


# ----------------------------------------------------------------- class weights
@pytest.mark.parametrize("kind", ["binary", "multinomial"])
@pytest.mark.parametrize("class_weight", ["dict", "balanced"])
def test_class_weight_equals_the_equivalent_sample_weight(kind, class_weight):
    X, y = sparse_data(kind)
    classes = np.unique(y)
    base = np.random.default_rng(2).uniform(0.5, 2.0, size=X.shape[0])
    if class_weight == "dict":
        class_weight = {label: 0.5 + label for label in classes}
    per_class = compute_class_weight(
        class_weight, classes=classes, y=y[:180], sample_weight=base[:180]
    )
    by_class = estimator(kind, class_weight=class_weight)
    by_class.fit(X[:180], y[:180], sample_weight=base[:180])
    by_sample = estimator(kind).fit(
        X[:180], y[:180], sample_weight=base[:180] * per_class[y[:180]]
    )
    np.testing.assert_allclose(
        parameters(by_class), parameters(by_sample), rtol=1e-12, atol=1e-14
    )
    # "balanced" is fixed at fit: added and removed rows keep the fit's weights.
    by_class.partial_fit(X[180:], y[180:])
    by_sample.partial_fit(X[180:], y[180:], sample_weight=per_class[y[180:]])
    by_class.partial_unfit(indices=[0, 1, 2])
    by_sample.partial_unfit(indices=[0, 1, 2])
    np.testing.assert_allclose(
        parameters(by_class), parameters(by_sample), rtol=1e-12, atol=1e-14
    )


def test_class_weight_is_a_parameter():
    est = DeltaGradLogisticRegression(class_weight="balanced")
    assert est.get_params()["class_weight"] == "balanced"
    assert clone(est).class_weight == "balanced"
    assert "class_weight" not in DeltaGradRidge().get_params()


# ------------------------------------------------------------------- bad weights
BAD_WEIGHTS = [
    ("negative", [1.0, -1.0], ValueError, "Negative values"),
    ("wrong-length", [1.0, 1.0, 1.0], ValueError, r"sample_weight.shape == \(3,\)"),
    ("nan", [1.0, np.nan], ValueError, "NaN"),
    ("2-d", [[1.0, 1.0]], ValueError, "1D"),
]


@pytest.mark.parametrize("kind", ["binary", "ridge"])
@pytest.mark.parametrize("name, weights, error, match", BAD_WEIGHTS)
def test_bad_sample_weight_in_partial_fit_changes_nothing(
    kind, name, weights, error, match
):
    X, y = sparse_data(kind, n_samples=60)
    est = estimator(kind).fit(X[:50], y[:50])
    call_and_check(
        est,
        "partial_fit",
        (X[50:52], y[50:52]),
        {"sample_weight": weights},
        error,
        match,
    )


@pytest.mark.parametrize("kind", ["binary", "ridge"])
def test_bad_sample_weight_in_fit_changes_nothing(kind):
    X, y = sparse_data(kind, n_samples=60)
    est = estimator(kind).fit(X[:50], y[:50])
    call_and_check(
        est, "fit", (X, y), {"sample_weight": -np.ones(60)}, ValueError, "Negative"
    )
    call_and_check(
        est, "fit", (X, y), {"sample_weight": np.zeros(60)}, ValueError, "non-zero"
    )


def test_removal_that_leaves_only_zero_weights_is_refused():
    X, y = sparse_data("ridge", n_samples=40)
    weights = np.zeros(40)
    weights[:3] = 1.0
    est = estimator("ridge").fit(X, y, sample_weight=weights)
    call_and_check(
        est,
        "partial_unfit",
        (),
        {"indices": [0, 1, 2]},
        ValueError,
        "only rows of zero sample_weight",
    )


def test_unknown_class_in_class_weight_is_an_error():
    X, y = sparse_data("binary", n_samples=60)
    est = estimator("binary", class_weight={0: 1.0, 7: 2.0})
    with pytest.raises(ValueError, match="not in class_weight"):
        est.fit(X, y)
    assert not hasattr(est, "coef_")


def test_sparse_regression_data_is_not_modified():
    X, y = make_regression(50, 8, random_state=0)
    Xs = sp.csr_matrix(np.where(np.abs(X) > 0.5, X, 0.0))
    before = Xs.copy()
    est = DeltaGradRidge(random_state=0).fit(Xs, y)
    est.partial_unfit(indices=[0, 1])
    assert (Xs != before).nnz == 0
    assert not np.shares_memory(est._rows.X.data, Xs.data)


def test_classification_targets_with_sparse_rows():
    X, y = make_classification(120, 10, random_state=0)
    est = DeltaGradLogisticRegression(random_state=0).fit(sp.csr_matrix(X), y)
    dense = DeltaGradLogisticRegression(random_state=0).fit(X, y)
    np.testing.assert_allclose(est.predict_proba(X), dense.predict_proba(X), 1e-10)
