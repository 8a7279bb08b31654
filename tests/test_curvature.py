"""The curvature models of the replay: the exact Gram model of the squared loss, the
``"auto"`` choice, determinism, the sub-sampled Hessian beating the paper's
L-BFGS (m = 2) on real data, and its secant and reference control variates."""

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression

from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge
from sklearn_deltagrad._curvature import (
    CURVATURE_CODES,
    GRAM,
    HESSIAN,
    LBFGS,
    _sparse_rows_pay,
    add_gram_rows,
    add_reference_correction,
    add_reference_rows,
    batch_grams,
    build_reference,
    fold_centring,
    gram_product,
    gram_shape,
    gram_workspace,
    reference_operator,
    resolve_curvature,
    resolve_hessian_rows,
    secant_control_sums,
    secant_weight,
    update_grams,
    update_grams_in_place,
)

from . import reference as ref
from .test_kernels import (
    LAYOUTS,
    WEIGHTS,
    kernel_rows,
    make_problem,
    make_weights,
    reference_weights,
    rel_err,
)


def parameters(est):
    return np.concatenate([np.ravel(est.coef_), np.ravel(est.intercept_)])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize(
    "loss, n_outputs",
    [(ref.SQUARED, 1), (ref.SQUARED, 3), (ref.BINARY_LOGISTIC, 1)],
    ids=["squared", "squared-multi", "binary"],
)
def test_gram_product_is_the_exact_batch_hessian_product(
    loss, n_outputs, fit_intercept, centred, weights, layout
):
    """Each batch's (weighted) Gram times ``v`` is the batch's loss Hessian at the
    batch's point times ``v``; the squared loss's at any point."""
    X, Y, model, w, rng = make_problem(loss, n_outputs, fit_intercept, centred=centred)
    rows_in, X = kernel_rows(X, layout)
    sample_weight = make_weights(weights, X.shape[0])
    # Two batches: every row (shuffled), and a few rows with a repeat.
    rows = np.concatenate([rng.permutation(X.shape[0]), [5, 4, 12, 5, 17]])
    ptr = np.array([0, X.shape[0], rows.size])
    columns = X.shape[1] + int(fit_intercept)
    grams = np.full(gram_shape(2, columns), np.nan)  # overwritten
    offset = ref.offset_of(model)
    points = np.stack([w, 0.5 * w + rng.standard_normal(w.size)])
    batch_grams(
        rows_in, sample_weight, ptr, rows, offset, fit_intercept, loss, points, grams
    )
    # Built Grams are centred: nothing pending.
    np.testing.assert_array_equal(grams[:, columns], 0.0)
    n_penalized = X.shape[1] * n_outputs
    for t in range(2):
        batch = rows[ptr[t] : ptr[t + 1]]
        s = reference_weights(weights, sample_weight, batch)
        if loss == ref.SQUARED:
            stored = ref.stored_gram(grams[t], model)
            assert rel_err(stored, ref.gram(X[batch], model, s)) < 1e-12
        batch_weight = sample_weight[batch].sum()
        # The squared loss's Hessian is the same anywhere.
        at = points[t] if loss == ref.BINARY_LOGISTIC else rng.standard_normal(w.size)
        for _ in range(2):
            v = rng.standard_normal(w.size)
            out = rng.standard_normal(w.size)  # overwritten
            gram_product(
                grams[t], offset, batch_weight, v, 0.3, n_outputs, n_penalized, out
            )
            expected = ref.hessian_vector_sum(X[batch], Y[batch], at, v, model, s)
            expected = expected / batch_weight + 0.3 * ref.penalty_mask(model) * v
            assert rel_err(out, expected) < 1e-10


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n_rows", [3, 16, 17, 1023, 1024, 1025, 2100])
def test_batch_grams_sum_blocks_of_rows(n_rows, layout):
    """Rows are summed in blocks of 1,024 (one matrix product each, or row by row
    up to 16 rows): batches of several blocks and a partial last one give the
    reference Gram."""
    X, _, model, _, rng = make_problem(
        ref.SQUARED, 1, True, n_samples=800, n_features=7, centred=True
    )
    rows_in, X = kernel_rows(X, layout)
    sample_weight = make_weights("random", X.shape[0])
    rows = rng.integers(0, X.shape[0], n_rows).astype(np.int64)  # with repeats
    grams = np.empty(gram_shape(1, X.shape[1] + 1))
    offset = ref.offset_of(model)
    batch_grams(
        rows_in, sample_weight, np.array([0, n_rows]), rows, offset, True,
        model.loss, np.zeros((1, X.shape[1] + 1)), grams,
    )  # fmt: skip
    expected = ref.gram(X[rows], model, sample_weight[rows])
    assert rel_err(ref.stored_gram(grams[0], model), expected) < 1e-12


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("loss", [ref.SQUARED, ref.BINARY_LOGISTIC])
@pytest.mark.parametrize("in_place", [True, False])
def test_update_grams_adds_and_removes_rows(in_place, loss, weights, layout):
    """Rows leave and join batches' Grams weighted at the batches' own points,
    in place (bitwise as into new matrices, flagging that it ran) or into new
    matrices (the source then stays as it was)."""
    X, Y, model, w, rng = make_problem(loss, 1, True, centred=True)
    rows_in, X = kernel_rows(X, layout)
    sample_weight = make_weights(weights, X.shape[0])
    offset = ref.offset_of(model)
    rows = np.arange(X.shape[0])
    ptr = np.array([0, 12, rows.size])
    grams = np.empty(gram_shape(2, X.shape[1] + 1))
    points = np.stack([w, -w])
    batch_grams(rows_in, sample_weight, ptr, rows, offset, True, loss, points, grams)
    before = grams.copy()
    # Move rows 3, 5 and (zero weight when random) 2 out of batch 0, put row 20
    # into it; row 14 leaves batch 1.
    changed = (
        np.array([0, 3, 4]),
        np.array([3, 5, 2, 14]),
        np.array([0, 1, 1]),
        np.array([20]),
        offset,
        True,
    )
    source = before.copy()
    copied = np.full_like(before, np.nan)  # overwritten
    update_grams(rows_in, sample_weight, changed, loss, points, source, copied)
    np.testing.assert_array_equal(source, before)
    if in_place:
        done = np.zeros(1, dtype=np.bool_)
        update_grams_in_place(
            rows_in, sample_weight, changed, loss, points, grams, done
        )
        assert done[0]
        np.testing.assert_array_equal(grams, copied)
    else:
        grams = copied
    kept = np.array([0, 1, 4, 6, 7, 8, 9, 10, 11, 20])
    kept_1 = np.setdiff1d(np.arange(12, X.shape[0]), [14])
    for t, batch in enumerate([kept, kept_1]):
        s = reference_weights(weights, sample_weight, batch)
        hessian = ref.hessian(X[batch], Y[batch], points[t], model, s)
        stored = ref.stored_gram(grams[t], model)
        assert rel_err(stored.ravel(), hessian.ravel()) < 1e-12
        assert rel_err(stored, ref.stored_gram(before[t], model)) > 1e-3  # changed
    expected = np.empty(gram_shape(1, X.shape[1] + 1))
    batch_grams(
        rows_in, sample_weight, np.array([0, kept.size]), kept, offset, True, loss,
        points, expected,
    )  # fmt: skip
    rebuilt = ref.stored_gram(expected[0], model)
    assert rel_err(ref.stored_gram(grams[0], model), rebuilt) < 1e-12


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("loss", [ref.SQUARED, ref.BINARY_LOGISTIC])
@pytest.mark.parametrize("n_rows", [1, 3, 12, 40, 1500])
def test_gram_rows_with_few_nonzeros(n_rows, loss, fit_intercept, layout):
    """Rows with few nonzeros (one-hot like a9a's) take the sparse path: the outer
    products of their nonzeros go into the matrix, the centring into the pending
    vector. The Gram of the centred rows all the same (read back from the stored
    form, by its product, and folded), removed with ``sign=-1`` as well as added,
    onto a Gram with a pending centring already."""
    rng = np.random.default_rng(0)
    X = (rng.random((300, 40)) < 0.06) * rng.choice([1.0, 2.5], (300, 40))
    X[4] = 0.0  # the layouts' zero row
    rows_in, X = kernel_rows(X, layout)
    sample_weight = rng.uniform(0.5, 2.0, X.shape[0])
    offset = X.mean(axis=0) if fit_intercept else np.zeros(X.shape[1])
    columns = X.shape[1] + int(fit_intercept)
    point = 0.3 * rng.standard_normal(columns)
    rows = rng.integers(0, X.shape[0], n_rows).astype(np.int64)  # with repeats
    A = X[rows] - offset
    if fit_intercept:
        A = np.hstack([A, np.ones((n_rows, 1))])
    scale = sample_weight[rows]
    if loss == ref.BINARY_LOGISTIC:
        p = 1.0 / (1.0 + np.exp(-(A @ point)))
        scale = scale * p * (1.0 - p)
    expected = (A * scale[:, None]).T @ A
    model = SimpleNamespace(n_features=X.shape[1], offset=offset)
    before = rng.standard_normal(gram_shape(1, columns))[0]
    before[:columns] += before[:columns].T  # symmetric
    workspace = gram_workspace(n_rows, columns)
    v = rng.standard_normal(columns)
    for sign in (1.0, -1.0):
        gram = before.copy()
        add_gram_rows(
            rows_in, sample_weight, rows, offset, fit_intercept, loss, point, sign,
            gram, workspace,
        )  # fmt: skip
        # The last block's choice (its counts are still in the workspace).
        size = (n_rows - 1) % workspace[0].shape[0] + 1
        assert _sparse_rows_pay(size, columns, workspace)
        added = ref.stored_gram(gram, model) - ref.stored_gram(before, model)
        assert rel_err(added, sign * expected) < 1e-12
        out = np.empty(columns)
        gram_product(gram, offset, 2.0, v, 0.0, 1, 0, out)
        assert rel_err(out, ref.stored_gram(gram, model) @ v / 2.0) < 1e-12
        folded = gram.copy()
        fold_centring(folded, offset)
        np.testing.assert_array_equal(folded[columns], 0.0)
        assert rel_err(folded[:columns], ref.stored_gram(gram, model)) < 1e-12


def test_gram_precision_follows_the_loss():
    """The logistic loss's Grams are single precision, the squared loss's (an exact
    model) double; a single-precision Gram's product sums in double."""
    X, y = make_regression(200, 5, random_state=0)
    params = dict(curvature="gram", batch_size=32, max_iter=2, random_state=0)
    ridge = DeltaGradRidge(**params).fit(X, y)
    logistic = DeltaGradLogisticRegression(**params).fit(X, y > 0)
    assert ridge._cache.grams.dtype == np.float64
    assert logistic._cache.grams.dtype == np.float32
    gram = logistic._cache.grams[3]
    v = np.random.default_rng(0).standard_normal(gram.shape[1])
    out = np.empty_like(v)
    model = logistic._model
    gram_product(gram, model.offset, 7.0, v, 0.5, 1, v.size - 1, out)
    expected = ref.stored_gram(gram, model) @ v / 7.0
    expected[:-1] += 0.5 * v[:-1]
    assert rel_err(out, expected) < 1e-13


def test_batch_grams_weights_act_as_row_multiplicities():
    X, Y, model, w, rng = make_problem(ref.SQUARED, 1, True, centred=True)
    offset = ref.offset_of(model)
    q = X.shape[1] + 1
    sample_weight = np.zeros(X.shape[0])
    sample_weight[[3, 8, 9]] = [2.0, 1.0, 3.0]
    weighted, repeated = np.empty(gram_shape(1, q)), np.empty(gram_shape(1, q))
    rows = np.array([3, 8, 9, 0, 15])  # 0 and 15 weigh 0
    points = np.zeros((1, q))
    batch_grams(
        X, sample_weight, np.array([0, 5]), rows, offset, True, model.loss, points,
        weighted,
    )  # fmt: skip
    rows = np.array([3, 3, 8, 9, 9, 9])
    batch_grams(
        X, np.ones(X.shape[0]), np.array([0, 6]), rows, offset, True, model.loss,
        points, repeated,
    )  # fmt: skip
    assert np.abs(repeated).max() > 1.0
    assert rel_err(weighted, repeated) < 1e-12


def ridge_problem(seed=0, n_targets=1):
    X, y = make_regression(
        300, 6, n_targets=n_targets, noise=5.0, random_state=seed, bias=3.0
    )
    return X + 2.0, y


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("n_targets", [1, 2])
def test_gram_replay_equals_the_exact_retrain(n_targets, weighted):
    """With exact curvature the replay of the squared loss is exact up to rounding,
    over a sequence of removals and additions (also with sample weights)."""
    X, y = ridge_problem(n_targets=n_targets)
    sample_weight = None
    if weighted:
        sample_weight = np.random.default_rng(2).uniform(0.1, 4.0, X.shape[0])
        sample_weight[[3, 11, 265, 280]] = 0.0

    def weights_of(which):
        return None if sample_weight is None else sample_weight[which]

    params = dict(random_state=0, batch_size=64, max_iter=12, curvature="gram")
    est = DeltaGradRidge(**params).fit(
        X[:260], y[:260], sample_weight=weights_of(slice(0, 260))
    )
    exact = copy.deepcopy(est)
    requests = [
        ("remove", [3, 50, 120]),
        ("add", slice(260, 270)),
        ("remove", [261, 7]),
        ("add", slice(270, 300)),
    ]
    for kind, which in requests:
        if kind == "remove":
            est.partial_unfit(indices=which)
            exact.partial_unfit(indices=which, method="exact")
        else:
            est.partial_fit(X[which], y[which], sample_weight=weights_of(which))
            exact.partial_fit(
                X[which], y[which], sample_weight=weights_of(which), method="exact"
            )
        assert est.last_update_.n_approximate_iterations > 0
        assert rel_err(parameters(est), parameters(exact)) < 1e-9
    if weighted:
        # The weights are kept with the rows, by stable id.
        kept = np.setdiff1d(np.arange(300), [3, 50, 120, 261, 7])
        np.testing.assert_array_equal(est.sample_ids_, kept)
        np.testing.assert_array_equal(est._rows.weights, sample_weight[kept])
    # The Gram matrices follow the batches: rebuilt from scratch they agree.
    rows, schedule, model = est._rows, est._schedule, est._model
    positions = np.searchsorted(rows.ids, schedule.batch_ids)
    fresh = np.empty_like(est._cache.grams)
    batch_grams(
        rows.X,
        rows.weights,
        schedule.batch_ptr,
        positions,
        model.offset,
        True,
        model.loss,
        est._cache.weights,  # unused by the squared loss
        fresh,
    )
    for t in range(fresh.shape[0]):
        kept = ref.stored_gram(est._cache.grams[t], model)
        assert rel_err(kept, ref.stored_gram(fresh[t], model)) < 1e-10


def test_grams_are_kept_up_to_date_by_exact_requests():
    X, y = ridge_problem(seed=1)
    est = DeltaGradRidge(random_state=0, batch_size=64, max_iter=5).fit(X, y)
    est.partial_unfit(indices=[1, 2])  # builds the Gram matrices
    est.partial_unfit(indices=[10, 11], method="exact")
    est.partial_fit(X[:4], y[:4], method="exact")
    twin = DeltaGradRidge(random_state=0, batch_size=64, max_iter=5).fit(X, y)
    twin.partial_unfit(indices=[1, 2], method="exact")
    twin.partial_unfit(indices=[10, 11], method="exact")
    twin.partial_fit(X[:4], y[:4], method="exact")
    est.partial_unfit(indices=[20])
    twin.partial_unfit(indices=[20], method="exact")
    assert rel_err(parameters(est), parameters(twin)) < 1e-9


def test_auto_curvature_choice():
    X, y = make_classification(200, 20, n_informative=5, n_classes=3, random_state=0)
    X40, y40 = make_classification(
        200, 40, n_informative=5, n_classes=3, random_state=0
    )
    Xr, yr = ridge_problem()
    wide = np.hstack([Xr] * 12)  # 72 features: too many for the Gram model
    Xb, yb = make_classification(300, 100, n_informative=5, random_state=0)
    # 140 features: 141 columns, too many for the binary logistic Gram model.
    Xw, yw = make_classification(300, 140, n_informative=5, random_state=0)
    cases = [
        (DeltaGradRidge(), Xr, yr, GRAM),
        (DeltaGradRidge(hessian_rows=200), wide, yr, HESSIAN),
        (DeltaGradRidge(hessian_rows=8), wide, yr, LBFGS),
        # 3 classes x 21 columns = 63 parameters: 128 rows x 3 outputs >= 126.
        (DeltaGradLogisticRegression(), X, y, HESSIAN),
        (DeltaGradLogisticRegression(hessian_rows=16), X, y, LBFGS),
        # 3 classes x 41 columns = 123 parameters: "auto" counts 128 rows (384 >=
        # 246) although the reference correction then samples 64, whereas an
        # explicit 64 (192 < 246) selects L-BFGS, as documented.
        (DeltaGradLogisticRegression(), X40, y40, HESSIAN),
        (DeltaGradLogisticRegression(hessian_rows=64), X40, y40, LBFGS),
        # Two classes, 101 columns: the Gram model, whatever the row sample.
        (DeltaGradLogisticRegression(), Xb, yb, GRAM),
        (DeltaGradLogisticRegression(hessian_rows=128), Xb, yb, GRAM),
        # ... unless its T = 3,300 Grams would take over 128 MiB (135 MB).
        (DeltaGradLogisticRegression(batch_size=1, max_iter=11), Xb, yb, HESSIAN),
        # 141 columns: "auto" samples 512 rows (>= 282), 128 do not.
        (DeltaGradLogisticRegression(), Xw, yw, HESSIAN),
        (DeltaGradLogisticRegression(hessian_rows=128), Xw, yw, LBFGS),
        # Full-batch gradient descent with the secant correction: the Hessian
        # model even with a rank-deficient sample; without it, L-BFGS.
        (
            DeltaGradLogisticRegression(hessian_rows=128, batch_size=None),
            Xw,
            yw,
            HESSIAN,
        ),
        (
            DeltaGradLogisticRegression(
                hessian_rows=128, batch_size=None, secant_correction=False
            ),
            Xw,
            yw,
            LBFGS,
        ),
        (DeltaGradRidge(hessian_rows=8, batch_size=None), wide, yr, HESSIAN),
    ]
    for est, data, target, expected in cases:
        if est.max_iter != 11:  # the byte-cap case keeps its 11 epochs
            est.set_params(max_iter=2)
        est.set_params(random_state=0).fit(data, target)
        assert est._replay_settings().curvature == expected
        assert CURVATURE_CODES[ref.resolved_curvature(est)] == expected
        assert (est._cache.grams is not None) == (expected == GRAM)  # built at fit
        n_iterations = est._schedule.n_iterations
        resolved = resolve_curvature(
            "auto",
            est._model,
            est.hessian_rows,
            corrected_full_batch=est.batch_size is None and est.secant_correction,
            n_iterations=n_iterations,
        )
        assert resolved == expected


def test_gram_curvature_needs_one_gram_per_batch():
    X, y = make_classification(100, 5, n_informative=3, n_classes=3, random_state=0)
    message = "curvature='gram' needs the squared loss .* or the binary logistic"
    with pytest.raises(ValueError, match=message):
        DeltaGradLogisticRegression(curvature="gram").fit(X, y)
    est = DeltaGradLogisticRegression(random_state=0, max_iter=3).fit(X, y)
    coef = est.coef_.copy()
    est.set_params(curvature="gram")
    with pytest.raises(ValueError, match="squared loss"):
        est.partial_unfit(indices=[0])
    np.testing.assert_array_equal(est.coef_, coef)
    assert est.n_samples_seen_ == 100


@pytest.mark.parametrize("curvature", ["lbfgs", "hessian"])
def test_replay_is_deterministic(curvature):
    X, y = make_classification(400, 8, n_classes=3, n_informative=4, random_state=0)
    results = []
    for _ in range(2):
        est = DeltaGradLogisticRegression(
            random_state=3, batch_size=64, max_iter=8, curvature=curvature
        ).fit(X, y)
        est.partial_unfit(indices=[1, 5, 9]).partial_fit(X[:3], y[:3])
        results.append(parameters(est))
    np.testing.assert_array_equal(results[0], results[1])


def test_hessian_model_beats_paper_lbfgs_on_real_data(load_dataset):
    """On covtype (7 classes) the default sub-sampled Hessian forgets far more
    faithfully than the paper's L-BFGS with m = 2 (a fidelity test, not timed)."""
    X_train, _, y_train, _ = load_dataset("covtype")
    base = DeltaGradLogisticRegression(random_state=0, max_iter=10).fit(
        X_train, y_train
    )
    ids = np.random.default_rng(0).choice(len(y_train), 74, replace=False)
    exact = copy.deepcopy(base).partial_unfit(indices=ids, method="exact")
    w, w_u = parameters(base), parameters(exact)
    ratios = {}
    for name, settings in [
        ("hessian", dict(curvature="hessian")),
        ("lbfgs-m2", dict(curvature="lbfgs", lbfgs_memory=2)),
    ]:
        est = copy.deepcopy(base).set_params(**settings)
        est.partial_unfit(indices=ids)
        ratios[name] = np.linalg.norm(parameters(est) - w_u) / np.linalg.norm(w - w_u)
    print(ratios)
    assert ratios["hessian"] < 0.5 * ratios["lbfgs-m2"]
    assert ratios["hessian"] < 0.05


def test_secant_control_sums_and_weight():
    """The least-squares sums of the secant weight, against NumPy, and the weight:
    their ratio clipped to [0, 1], 0 without a usable check."""
    rng = np.random.default_rng(0)
    sums = np.zeros(2)
    expected = np.zeros(2)
    for _ in range(3):
        secant, plain, anchor_secant, anchor_product = rng.normal(size=(4, 37))
        secant_control_sums(secant, plain, anchor_secant, anchor_product, sums)
        control = anchor_secant - anchor_product
        expected += [(secant - plain) @ control, control @ control]
    np.testing.assert_allclose(sums, expected, rtol=1e-13)
    assert secant_weight(sums) == pytest.approx(
        min(1.0, max(0.0, expected[0] / expected[1])), rel=1e-13
    )
    assert secant_weight(np.array([0.3, 0.6])) == 0.5
    assert secant_weight(np.array([-0.3, 0.6])) == 0.0
    assert secant_weight(np.array([0.9, 0.6])) == 1.0
    assert secant_weight(np.zeros(2)) == 0.0


@pytest.mark.parametrize("secant_correction", [False, True])
def test_hessian_model_of_the_whole_batch_is_exact(secant_correction):
    """With every kept row in the sample, the ``"hessian"`` model is the exact
    batch Hessian, and ridge's replay is the exact retrain up to rounding; the
    secant correction's fitted weight then stays at ~0 (the plain product has
    nothing left to correct), so it is exact too."""
    X, y = make_regression(300, 6, noise=1.0, random_state=0)
    est = DeltaGradRidge(
        curvature="hessian",
        hessian_rows=1000,
        batch_size=50,
        max_iter=6,
        burn_in=2,
        exact_period=4,
        secant_correction=secant_correction,
        random_state=0,
    ).fit(X, y)
    exact = copy.deepcopy(est).partial_unfit(indices=[3, 70, 111], method="exact")
    est.partial_unfit(indices=[3, 70, 111])
    assert est.last_update_.n_approximate_iterations > 10
    w, w_u = parameters(est), parameters(exact)
    assert np.linalg.norm(w - w_u) <= 1e-10 * np.linalg.norm(w_u)


def _ratios_with_and_without(base, correction, seed):
    """Fidelity ratios of the removal of 74 random rows (``seed``) from ``base``
    with the boolean parameter ``correction`` off and on."""
    ids = np.random.default_rng(seed).choice(base.n_samples_seen_, 74, replace=False)
    exact = copy.deepcopy(base).partial_unfit(indices=ids, method="exact")
    w, w_u = parameters(base), parameters(exact)
    ratios = {}
    for corrected in (False, True):
        est = copy.deepcopy(base).set_params(**{correction: corrected})
        est.partial_unfit(indices=ids)
        distance = np.linalg.norm(parameters(est) - w_u)
        ratios[corrected] = distance / np.linalg.norm(w - w_u)
    return ratios


def test_secant_correction_beats_plain_hessian_on_real_data(load_dataset):
    """On covtype (7 classes) with batches of 16,384 rows, the secant control
    variate makes the replay markedly closer to the exact retrain than the plain
    sampled Hessian (measured: 0.038 -> 0.021 and 0.033 -> 0.020; a fidelity
    test, not timed; without the reference correction, which would hide most of
    the difference)."""
    X_train, _, y_train, _ = load_dataset("covtype")
    base = DeltaGradLogisticRegression(
        random_state=0, max_iter=20, batch_size=16384, reference_correction=False
    ).fit(X_train, y_train)
    for seed in (0, 1):
        ratios = _ratios_with_and_without(base, "secant_correction", seed)
        print(seed, ratios)
        assert ratios[True] < 0.75 * ratios[False]
        assert ratios[True] < 0.03


def test_auto_hessian_rows():
    """``hessian_rows="auto"``: 128 rows for several outputs; with the reference
    correction one per 256 rows of a full batch, 16 to 64; for one output four per
    parameter, at least 256 and at most 512."""
    X, y = make_classification(200, 6, n_informative=4, n_classes=3, random_state=0)
    multi = DeltaGradLogisticRegression(max_iter=2, random_state=0).fit(X, y)
    binary = DeltaGradLogisticRegression(max_iter=2, random_state=0).fit(X, y > 0)
    ridge = DeltaGradRidge(max_iter=2, random_state=0).fit(X, y.astype(float))
    assert multi._replay_settings().reference_correction
    # Batches of 4,096 rows, but only 200 rows: the lower bound.
    assert multi._replay_settings().hessian_rows == 16
    assert ref.hessian_rows_of(multi, ref.uses_reference_of(multi)) == 16
    # A batch of at most 64 rows is sampled whole.
    for batch_size, rows in [(64, 64), (65, 16)]:
        small = clone(multi).set_params(batch_size=batch_size).fit(X, y)
        assert small._replay_settings().hessian_rows == rows
        assert ref.hessian_rows_of(small, ref.uses_reference_of(small)) == rows
    # The rule follows the rows of a full batch (batch_size, or every row).
    X_large = np.tile(X, (100, 1))
    y_large = np.tile(y, 100)
    for batch_size, rows in [(None, 64), (4096, 16), (8192, 32), (12800, 50)]:
        large = DeltaGradLogisticRegression(
            max_iter=1, batch_size=batch_size, random_state=0, curvature="hessian"
        ).fit(X_large, y_large)
        assert large._replay_settings().hessian_rows == rows
        assert ref.hessian_rows_of(large, ref.uses_reference_of(large)) == rows
    assert resolve_hessian_rows("auto", multi._model, True, 300_000) == 64
    assert resolve_hessian_rows("auto", multi._model, True) == 64
    multi.set_params(reference_correction=False)
    assert multi._replay_settings().hessian_rows == 128
    assert ref.hessian_rows_of(multi, ref.uses_reference_of(multi)) == 128
    # Too many parameters for the reference matrix (3 x 701 > 2,048): 128 rows.
    Xw = np.tile(X, (1, 117))[:, :700]
    large = DeltaGradLogisticRegression(max_iter=2, curvature="hessian").fit(Xw, y)
    assert not large._replay_settings().reference_correction
    assert large._replay_settings().hessian_rows == 128
    assert binary._replay_settings().hessian_rows == 256
    assert ridge._replay_settings().hessian_rows == 256
    assert resolve_hessian_rows(64, binary._model) == 64
    for n_features, rows in [(79, 320), (123, 496), (127, 512), (300, 512)]:
        Xw = np.tile(X, (1, n_features // 6 + 1))[:, :n_features]
        wide = DeltaGradLogisticRegression(max_iter=2, random_state=0).fit(Xw, y > 0)
        assert wide._replay_settings().hessian_rows == rows
        assert ref.hessian_rows_of(wide) == rows


def test_auto_lbfgs_memory():
    """``lbfgs_memory="auto"``: 32 pairs unless an L-BFGS product (about ``4 m d``
    flops) would cost more than a quarter of a batch gradient (``2 K e`` for ``e``
    non-zeros per batch, counted at fit); at least 2."""
    X, y = make_classification(600, 30, n_informative=5, n_classes=3, random_state=0)
    X[:, :10] *= np.arange(600)[:, None] % 2  # 10 columns: half zeros
    dense = DeltaGradLogisticRegression(max_iter=2, batch_size=300, random_state=0)
    dense.fit(X, y)
    # Batches of 300 rows with 25 non-zeros each, K = 3, d = 31 * 3: 30 pairs.
    assert dense._batch_nonzeros == 300 * 25
    assert dense._replay_settings().lbfgs_memory == 30
    # The same rows as a sparse matrix: the same memory.
    sparse = clone(dense).fit(sp.csr_matrix(X), y)
    assert sparse._replay_settings().lbfgs_memory == 30
    dense.set_params(batch_size=100).fit(X, y)
    # 100 * 25 * 3 // (8 * 93) = 10; fixed at fit, not changed by requests.
    assert dense._replay_settings().lbfgs_memory == 10
    dense.partial_unfit(indices=np.arange(0, 600, 2))
    assert dense._replay_settings().lbfgs_memory == 10
    dense.set_params(batch_size=600).fit(X, y)
    assert dense._replay_settings().lbfgs_memory == 32
    dense.set_params(lbfgs_memory=5)
    assert dense._replay_settings().lbfgs_memory == 5
    # Wide sparse rows (like TF-IDF): 2,000 columns, ~20 non-zeros per row,
    # 256-row batches: 256 * 20 // (8 * 2001) = 0 -> the floor of 2 pairs.
    rng = np.random.default_rng(0)
    Xs = sp.random(800, 2000, density=0.01, format="csr", random_state=rng)
    ys = rng.integers(0, 2, 800)
    wide = DeltaGradLogisticRegression(
        max_iter=4, batch_size=256, curvature="lbfgs", burn_in=2, random_state=0
    ).fit(Xs, ys)
    assert wide._replay_settings().lbfgs_memory == 2
    assert ref.lbfgs_memory_of(wide) == 2
    assert ref.lbfgs_memory_of(dense.set_params(lbfgs_memory="auto")) == 32
    wide.partial_unfit(indices=[3, 300])
    assert wide.last_update_.n_approximate_iterations > 0


@pytest.mark.parametrize("name", ["covtype_binary", "a9a"])
def test_gram_model_beats_the_row_sample_on_binary_real_data(load_dataset, name):
    """On two-class real data the Gram model (the "auto" choice) forgets far more
    faithfully than the sub-sampled Hessian of the same replay (measured here, 10
    epochs: covtype class 2 vs rest 0.00036 against 0.042, a9a 0.00076 against
    0.045; with 50 epochs 0.0005-0.0007 against 0.027-0.041 and 0.0012-0.0023
    against 0.029-0.048; a fidelity test, not timed)."""
    X_train, _, y_train, _ = load_dataset(name)
    base = DeltaGradLogisticRegression(random_state=0, max_iter=10).fit(
        X_train, y_train
    )
    assert base._replay_settings().curvature == GRAM
    n_removed = len(y_train) // 1000
    ids = np.random.default_rng(0).choice(len(y_train), n_removed, replace=False)
    exact = copy.deepcopy(base).partial_unfit(indices=ids, method="exact")
    w, w_u = parameters(base), parameters(exact)
    ratios = {}
    for curvature in ("auto", "hessian"):
        est = copy.deepcopy(base).set_params(curvature=curvature)
        est.partial_unfit(indices=ids)
        assert est.last_update_.n_approximate_iterations > 0
        ratios[curvature] = np.linalg.norm(parameters(est) - w_u) / np.linalg.norm(
            w - w_u
        )
    print(name, ratios)
    assert ratios["auto"] < 0.2 * ratios["hessian"]
    assert ratios["auto"] < 0.01


def test_gram_built_at_a_request_is_the_one_built_at_fit():
    """Grams built lazily (``curvature="gram"`` set after fit) at the cached
    iterates give the model that Grams built at fit give, and both keep the same
    Grams up to date."""
    X, y = make_classification(600, 12, n_informative=5, random_state=0)
    at_fit = DeltaGradLogisticRegression(
        random_state=0, batch_size=64, max_iter=6, curvature="gram"
    ).fit(X, y)
    lazy = DeltaGradLogisticRegression(
        random_state=0, batch_size=64, max_iter=6, curvature="hessian"
    ).fit(X, y)
    assert lazy._cache.grams is None and at_fit._cache.grams is not None
    lazy.set_params(curvature="gram")
    for est in (at_fit, lazy):
        est.partial_unfit(indices=[3, 40, 41]).partial_fit(X[:5], y[:5])
    # Single-precision Grams (gram_dtype): built in another order, they round apart.
    assert at_fit._cache.grams.dtype == np.float32
    assert rel_err(parameters(lazy), parameters(at_fit)) < 1e-8
    pairs = zip(lazy._cache.grams, at_fit._cache.grams, strict=True)
    for built_lazily, built_at_fit in pairs:
        stored = ref.stored_gram(built_lazily, lazy._model)
        assert rel_err(stored, ref.stored_gram(built_at_fit, at_fit._model)) < 1e-6
    np.testing.assert_array_equal(lazy._cache.gram_points, at_fit._cache.gram_points)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize(
    "loss, n_outputs",
    [(ref.SQUARED, 2), (ref.BINARY_LOGISTIC, 1), (ref.MULTINOMIAL, 4)],
    ids=["squared", "binary", "multinomial"],
)
@pytest.mark.parametrize("n_rows", [5, 700])
def test_reference_rows_sum_the_loss_hessian(
    n_rows, loss, n_outputs, fit_intercept, weights, layout
):
    """The reference Hessian is the (weighted) loss Hessian of its rows at its
    point, against NumPy, in blocks of rows (several, with repeats) and pairs of
    outputs; removing rows with ``sign=-1`` takes their terms out again."""
    X, Y, model, w, rng = make_problem(
        loss, n_outputs, fit_intercept, n_samples=60, centred=True
    )
    rows_in, X = kernel_rows(X, layout)
    sample_weight = make_weights(weights, X.shape[0])
    rows = rng.integers(0, X.shape[0], n_rows).astype(np.int64)
    hessian = np.zeros((w.size, w.size))
    args = (model.offset, loss, n_outputs, fit_intercept)
    add_reference_rows(rows_in, sample_weight, rows, w, *args, 1.0, hessian)
    expected = ref.hessian(
        X[rows], Y[rows], w, model, reference_weights(weights, sample_weight, rows)
    )
    assert rel_err(hessian, expected) < 1e-12
    assert rel_err(hessian, hessian.T) < 1e-14
    gone = rows[:3]
    add_reference_rows(rows_in, sample_weight, gone, w, *args, -1.0, hessian)
    kept = rows[3:]
    expected = ref.hessian(
        X[kept], Y[kept], w, model, reference_weights(weights, sample_weight, kept)
    )
    assert rel_err(hessian, expected) < 1e-11


def test_reference_correction_adds_the_mean_reference_product():
    rng = np.random.default_rng(0)
    factor = rng.normal(size=(9, 9))
    hessian = factor @ factor.T  # a Hessian is symmetric: one triangle is read
    v, out = rng.normal(size=(2, 9))
    expected = out + 0.7 * hessian @ v / 4.0
    add_reference_correction(hessian, 4.0, v, 0.7, out)
    np.testing.assert_allclose(out, expected, rtol=1e-13)


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("n_outputs", [3, 7])
def test_reduced_reference_product_is_the_whole_matrix_product(
    n_outputs, fit_intercept
):
    """For the multinomial loss the CPU replay multiplies by the reference Hessian
    without its last output (``reference_operator``), in single precision; the
    product is the whole matrix's, against NumPy (to rounding in double, to 1e-6
    in single). Other losses keep the whole matrix, in single precision."""
    X, Y, model, w, rng = make_problem(
        ref.MULTINOMIAL, n_outputs, fit_intercept, n_samples=80, centred=True
    )
    sample_weight = rng.uniform(0.5, 2.0, X.shape[0])
    rows = np.arange(X.shape[0], dtype=np.int64)
    estimator_model = SimpleNamespace(
        loss=ref.MULTINOMIAL, n_outputs=n_outputs, n_params=w.size,
        offset=model.offset, fit_intercept=fit_intercept,
    )  # fmt: skip
    point, hessian, weight = build_reference(X, sample_weight, rows, w, estimator_model)
    reduced = reference_operator(hessian, estimator_model)
    kept = np.arange(w.size) % n_outputs != n_outputs - 1
    assert reduced.dtype == np.float32 and reduced.flags.c_contiguous
    assert np.array_equal(reduced, hessian[np.ix_(kept, kept)].astype(np.float32))
    v, out = rng.normal(size=(2, w.size))
    expected = out + 0.7 * hessian @ v / weight
    in_double = out.copy()
    add_reference_correction(
        np.ascontiguousarray(hessian[np.ix_(kept, kept)]), weight, v, 0.7, in_double
    )
    assert rel_err(in_double, expected) < 1e-13
    add_reference_correction(reduced, weight, v, 0.7, out)
    assert rel_err(out, expected) < 1e-6
    for loss in (ref.SQUARED, ref.BINARY_LOGISTIC):
        other = SimpleNamespace(loss=loss, n_outputs=1, n_params=w.size)
        whole = reference_operator(hessian, other)
        assert np.array_equal(whole, hessian.astype(np.float32))
        assert whole.flags.c_contiguous


def _reference_estimator(**params):
    return DeltaGradLogisticRegression(
        curvature="hessian", reference_correction=True, random_state=0, **params
    )


def test_reference_hessian_is_kept_current_by_requests():
    """Built at fit at the fitted model over every row; after removals, additions
    and an exact request it is the Hessian of the current rows at that same point
    (a fresh build), and its weight their total weight."""
    X, y = make_classification(
        300, 5, n_classes=3, n_informative=4, n_redundant=0, random_state=0
    )
    sample_weight = np.random.default_rng(1).uniform(0.5, 2.0, 300)
    est = _reference_estimator(batch_size=64, max_iter=4).fit(
        X[:250], y[:250], sample_weight=sample_weight[:250]
    )
    point = est._cache.reference_point.copy()
    np.testing.assert_array_equal(point, est._cache.final)
    est.partial_unfit(indices=[3, 70, 111])
    est.partial_fit(X[250:], y[250:], sample_weight=sample_weight[250:])
    est.partial_unfit(indices=[5, 260], method="exact")
    kept = np.setdiff1d(np.arange(300), [3, 70, 111, 5, 260])
    cache = est._cache
    np.testing.assert_array_equal(cache.reference_point, point)
    model = ref.Model(ref.MULTINOMIAL, 3, True, est.alpha, 5, est._model.offset)
    Y = np.searchsorted(est.classes_, y).astype(np.float64)[:, None]
    expected = ref.hessian(X[kept], Y[kept], point, model, sample_weight[kept])
    assert rel_err(cache.reference_hessian, expected) < 1e-11
    assert cache.reference_weight == pytest.approx(sample_weight[kept].sum())


def test_reference_hessian_is_built_at_the_first_request_that_uses_it():
    X, y = make_classification(
        300, 5, n_classes=3, n_informative=4, n_redundant=0, random_state=0
    )
    with_it = _reference_estimator(batch_size=64, max_iter=4).fit(X, y)
    without = clone(with_it).set_params(reference_correction=False).fit(X, y)
    assert without._cache.reference_hessian is None
    np.testing.assert_array_equal(parameters(without), parameters(with_it))
    without.set_params(reference_correction=True).partial_unfit(indices=[3, 70])
    with_it.partial_unfit(indices=[3, 70])
    cache = without._cache
    # Built over the rows after the request, at the model before it.
    model = ref.Model(ref.MULTINOMIAL, 3, True, 1e-4, 5, with_it._model.offset)
    Y = np.searchsorted(with_it.classes_, y).astype(np.float64)[:, None]
    kept = np.setdiff1d(np.arange(300), [3, 70])
    expected = ref.hessian(X[kept], Y[kept], cache.reference_point, model)
    assert rel_err(cache.reference_hessian, expected) < 1e-11
    np.testing.assert_allclose(parameters(without), parameters(with_it), rtol=1e-3)


def test_reference_correction_only_for_the_hessian_model_of_few_parameters():
    X, y = make_classification(
        200, 5, n_classes=3, n_informative=4, n_redundant=0, random_state=0
    )
    for params in (dict(curvature="lbfgs"), dict(reference_correction=False)):
        est = _reference_estimator(batch_size=64, max_iter=2).set_params(**params)
        assert est.fit(X, y)._cache.reference_hessian is None
    wide = np.hstack([X, np.zeros((200, 700))])  # 3 x 706 parameters > 2,048
    est = _reference_estimator(batch_size=64, max_iter=2).fit(wide, y)
    assert est._cache.reference_hessian is None


def test_hessian_model_with_reference_of_the_whole_batch_is_exact():
    """With every kept row in the sample, the correction's weight is 0: the
    product is the exact batch Hessian's, as without it."""
    X, y = make_classification(300, 6, n_classes=3, n_informative=4, random_state=0)
    est = _reference_estimator(
        hessian_rows=1000, batch_size=50, max_iter=6, burn_in=2, exact_period=4,
        secant_correction=False,
    ).fit(X, y)  # fmt: skip
    plain = copy.deepcopy(est).set_params(reference_correction=False)
    est.partial_unfit(indices=[3, 70, 111])
    plain.partial_unfit(indices=[3, 70, 111])
    assert est.last_update_.n_approximate_iterations > 10
    np.testing.assert_array_equal(parameters(est), parameters(plain))


@pytest.mark.parametrize("batch_size", [4096, 16384])
def test_reference_correction_beats_the_sample_alone_on_real_data(
    load_dataset, batch_size
):
    """On covtype (7 classes) the reference control variate brings the replay
    closer to the exact retrain than the sample with the secant correction alone
    (20 epochs, removal of 74 rows; a fidelity test, not timed). Measured, ratio
    without -> with: under the defaults (128 rows without it; with it 16 rows at
    batch 4,096 and 64 at 16,384) 0.041 -> 0.025 and 0.023 -> 0.014 at batch
    4,096, 0.021 -> 0.0087 and 0.020 -> 0.0092 at 16,384; with 16 rows both
    ways at batch 4,096, 0.085 -> 0.025 and 0.064 -> 0.014."""
    X_train, _, y_train, _ = load_dataset("covtype")
    base = _reference_estimator(max_iter=20, batch_size=batch_size).fit(
        X_train, y_train
    )
    for seed in (0, 1):
        ratios = _ratios_with_and_without(base, "reference_correction", seed)
        print(batch_size, seed, ratios)
        if batch_size == 4096:
            # A sample 8x smaller than without the correction, and still closer.
            assert ratios[True] < 0.7 * ratios[False]
            assert ratios[True] < 0.03
            same_rows = copy.deepcopy(base).set_params(hessian_rows=16)
            ratios = _ratios_with_and_without(same_rows, "reference_correction", seed)
            print(batch_size, seed, "16 rows both", ratios)
            assert ratios[True] < 0.4 * ratios[False]
        else:
            assert ratios[True] < 0.5 * ratios[False]
            assert ratios[True] < 0.01


def test_reference_correction_with_batches_of_weightless_original_rows():
    """Batches whose original rows all weigh 0 have no curvature to model (their
    iterations are exact); rows added to them are served with the correction on
    around them."""
    X, y = make_classification(
        200, 5, n_classes=3, n_informative=4, n_redundant=0, random_state=0
    )
    sample_weight = np.where(np.random.default_rng(0).random(200) < 0.9, 0.0, 1.0)
    est = _reference_estimator(batch_size=4, max_iter=3, hessian_rows=2).fit(
        X[:150], y[:150], sample_weight=sample_weight[:150]
    )
    est.partial_fit(X[150:], y[150:])
    assert est.last_update_.n_approximate_iterations > 0
    assert np.isfinite(parameters(est)).all()
