"""The Numba kernels against the plain-NumPy reference (and the reference itself
against finite differences)."""

import inspect

import numpy as np
import pytest
import scipy.sparse as sp

from sklearn_deltagrad._curvature import (
    lbfgs_factorize,
    lbfgs_product,
    lbfgs_push_pair,
    referenced_hessian_product,
    subsampled_hessian_product,
)
from sklearn_deltagrad._kernels import cpu

from . import reference as ref

# (loss, n_outputs): squared single and multi-target, binary logistic, multinomial.
LOSSES = [
    pytest.param(ref.SQUARED, 1, id="squared"),
    pytest.param(ref.SQUARED, 3, id="squared-multi"),
    pytest.param(ref.BINARY_LOGISTIC, 1, id="binary"),
    pytest.param(ref.MULTINOMIAL, 4, id="multinomial"),
]
INTERCEPT = [pytest.param(True, id="intercept"), pytest.param(False, id="no-intercept")]
# The parametrisation may be centred on fixed feature means (model.offset).
CENTRED = [pytest.param(False, id="uncentred"), pytest.param(True, id="centred")]
# Row weights: all ones, or random non-negative ones with zeros (see make_weights).
WEIGHTS = ["unit", "random"]
# How the kernels read the rows (see kernel_rows).
LAYOUTS = ["dense64", "dense32", "csr", "csr32", "csr-unsorted"]
# Rows that weigh 0 under the random weights (row 4 is also the zero row).
ZERO_WEIGHT_ROWS = [2, 4, 12]


def call(kernel, **named):
    """Call a Numba function by its parameter names (robust to argument order)."""
    names = list(inspect.signature(kernel.py_func).parameters)
    missing = [name for name in names if name not in named]
    assert not missing, f"{kernel.py_func.__name__} takes unexpected {missing}"
    return kernel(*(named[name] for name in names))


def takes_offset(kernel):
    return "offset" in inspect.signature(kernel.py_func).parameters


def make_problem(
    loss, n_outputs, fit_intercept, n_samples=23, n_features=6, seed=0, centred=False
):
    """Rows with scattered zeros and one all-zero row; targets in the kernel encoding.

    ``centred``: the model's parametrisation is centred on a non-zero ``offset``.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    X[rng.random(X.shape) < 0.3] = 0.0
    if loss == ref.SQUARED:
        Y = rng.standard_normal((n_samples, n_outputs)) * 2.0
    elif loss == ref.BINARY_LOGISTIC:
        Y = rng.integers(2, size=(n_samples, 1)).astype(np.float64)
    else:
        Y = rng.integers(n_outputs, size=(n_samples, 1)).astype(np.float64)
    X[:, 0] += 1.5  # a feature far from zero mean
    X[4] = 0.0  # (after the shift: a CSR matrix stores nothing for this row)
    offset = X.mean(axis=0) if centred else np.zeros(n_features)
    model = ref.Model(loss, n_outputs, fit_intercept, 0.3, n_features, offset)
    w = rng.standard_normal(ref.n_params(model)) * 0.7
    return X, Y, model, w, rng


def make_weights(kind, n_samples, seed=1):
    """Row weights: ones, or random in [0.05, 3) with ``ZERO_WEIGHT_ROWS`` at 0."""
    if kind == "unit":
        return np.ones(n_samples)
    weights = np.random.default_rng(seed).uniform(0.05, 3.0, n_samples)
    weights[ZERO_WEIGHT_ROWS] = 0.0
    return weights


def reference_weights(kind, weights, rows):
    """The weights the reference gets for ``X[rows]``: None (ones) or the slice."""
    return None if kind == "unit" else weights[rows]


def kernel_rows(X, layout):
    """``(rows as the kernels read them, the float64 matrix they stand for)``.

    ``dense32`` rounds the rows to float32; ``csr32`` keeps float32 values in a CSR
    matrix; ``csr-unsorted`` is built by hand, with 64-bit indices in reverse order
    within each row and an explicitly stored zero in the zero row 4.
    """
    if layout == "dense64":
        return X, X
    if layout == "dense32":
        X32 = X.astype(np.float32)
        return X32, X32.astype(np.float64)
    if layout == "csr":
        matrix = sp.csr_matrix(X)
        assert matrix.nnz < X.size  # really sparse: some zeros are not stored
        return cpu.as_kernel_rows(matrix), matrix.toarray()
    if layout == "csr32":
        matrix = sp.csr_matrix(X.astype(np.float32))
        assert matrix.dtype == np.float32
        return cpu.as_kernel_rows(matrix), matrix.toarray().astype(np.float64)
    assert layout == "csr-unsorted"
    data, indices, indptr = [], [], [0]
    for i, row in enumerate(X):
        columns = np.flatnonzero(row)[::-1]
        if i == 4:
            columns = np.array([2])  # the zero row stores one zero
        data.extend(row[columns])
        indices.extend(columns)
        indptr.append(len(data))
    csr = cpu.CSRRows(
        np.array(data), np.array(indices, dtype=np.int64), np.array(indptr)
    )
    matrix = sp.csr_matrix(csr, shape=X.shape)
    assert not matrix.has_sorted_indices
    np.testing.assert_array_equal(matrix.toarray(), X)
    return csr, X


def rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


# --------------------------------------------------------- the reference is right
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("centred", CENTRED)
@pytest.mark.parametrize("fit_intercept", INTERCEPT)
@pytest.mark.parametrize("loss, n_outputs", LOSSES)
def test_reference_gradient_and_hessian_match_finite_differences(
    loss, n_outputs, fit_intercept, centred, weights
):
    X, Y, model, w, _ = make_problem(loss, n_outputs, fit_intercept, centred=centred)
    s = reference_weights(weights, make_weights(weights, X.shape[0]), slice(None))
    d = w.size
    h = 1e-6
    eye = np.eye(d)
    numeric_grad = np.array(
        [
            (
                ref.loss_sum(X, Y, w + h * e, model, s)
                - ref.loss_sum(X, Y, w - h * e, model, s)
            )
            / (2 * h)
            for e in eye
        ]
    )
    np.testing.assert_allclose(
        ref.gradient_sum(X, Y, w, model, s), numeric_grad, rtol=1e-6, atol=1e-6
    )
    numeric_hess = np.array(
        [
            (
                ref.gradient_sum(X, Y, w + h * e, model, s)
                - ref.gradient_sum(X, Y, w - h * e, model, s)
            )
            / (2 * h)
            for e in eye
        ]
    )
    H = ref.hessian(X, Y, w, model, s)
    np.testing.assert_allclose(H, H.T, atol=1e-12)
    np.testing.assert_allclose(H, numeric_hess, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------- per-row kernels
@pytest.mark.parametrize("loss, n_outputs", LOSSES)
def test_row_kernels_match_reference(loss, n_outputs):
    X, Y, model, w, rng = make_problem(loss, n_outputs, True)
    Z = ref.outputs(X, w, model) * 3.0
    R = ref.residuals(Z, Y, model)
    A = ref.output_curvatures(Z, model)
    U = rng.standard_normal(Z.shape)
    r = np.empty(n_outputs)
    hu = np.empty(n_outputs)
    for i in range(X.shape[0]):
        cpu.loss_residual(loss, Z[i], Y, i, r)
        np.testing.assert_allclose(r, R[i], rtol=1e-10, atol=1e-12)
        cpu.loss_curvature_product(loss, Z[i], U[i], hu)
        np.testing.assert_allclose(hu, A[i] @ U[i], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss, n_outputs", LOSSES[2:])
def test_logistic_residual_and_curvature_are_stable_for_large_outputs(loss, n_outputs):
    model = ref.Model(loss, n_outputs, True, 0.0, 1)
    for scale in (-800.0, -40.0, 40.0, 800.0):
        z = np.linspace(-1.0, 1.0, n_outputs) * scale
        if n_outputs == 1:
            z = np.array([scale])
        for label in range(max(n_outputs, 2) if loss == ref.MULTINOMIAL else 2):
            y_row = np.array([float(label)])
            r = np.empty(n_outputs)
            cpu.loss_residual(loss, z, y_row[None, :], 0, r)
            expected = ref.residuals(z[None, :], y_row[None, :], model)[0]
            assert np.isfinite(r).all()
            np.testing.assert_allclose(r, expected, rtol=1e-10, atol=1e-15)
            u = np.ones(n_outputs)
            hu = np.empty(n_outputs)
            cpu.loss_curvature_product(loss, z, u, hu)
            curv = ref.output_curvatures(z[None, :], model)[0]
            assert np.isfinite(hu).all()
            np.testing.assert_allclose(hu, curv @ u, rtol=1e-10, atol=1e-15)


# ------------------------------------------------------------------ batch sums
def kernel_args(X, Y, model, w, **more):
    named = {
        "X": X,
        "Y": Y,
        "w": w,
        "offset": ref.offset_of(model),
        "loss": model.loss,
        "n_outputs": model.n_outputs,
        "fit_intercept": model.fit_intercept,
        "alpha": model.alpha,
    }
    named.update(more)
    return named


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("centred", CENTRED)
@pytest.mark.parametrize("fit_intercept", INTERCEPT)
@pytest.mark.parametrize("loss, n_outputs", LOSSES)
def test_gradient_sum_matches_reference(
    loss, n_outputs, fit_intercept, centred, weights, layout
):
    X, Y, model, w, rng = make_problem(loss, n_outputs, fit_intercept, centred=centred)
    assert takes_offset(cpu.gradient_sum) or not centred
    rows_in, X = kernel_rows(X, layout)
    sample_weight = make_weights(weights, X.shape[0])
    # A subset with the zero row, a repeated row and (random weights) zero-weight
    # rows, in an arbitrary order.
    rows = np.array([7, 4, 0, 19, 7, 12, 3, 22], dtype=np.int64)
    start = rng.standard_normal(w.size)
    out = start.copy()
    call(
        cpu.gradient_sum,
        **kernel_args(rows_in, Y, model, w, rows=rows, out=out),
        sample_weight=sample_weight,
    )
    expected = ref.gradient_sum(
        X[rows], Y[rows], w, model, reference_weights(weights, sample_weight, rows)
    )
    assert rel_err(out - start, expected) < 1e-10
    # Adds into out; an empty row set adds nothing.
    before = out.copy()
    empty = np.zeros(0, dtype=np.int64)
    call(
        cpu.gradient_sum,
        **kernel_args(rows_in, Y, model, w, rows=empty, out=out),
        sample_weight=sample_weight,
    )
    np.testing.assert_array_equal(out, before)
    # All rows.
    full = np.zeros(w.size)
    every = np.arange(X.shape[0], dtype=np.int64)
    call(
        cpu.gradient_sum,
        **kernel_args(rows_in, Y, model, w, rows=every, out=full),
        sample_weight=sample_weight,
    )
    expected = ref.gradient_sum(
        X, Y, w, model, reference_weights(weights, sample_weight, every)
    )
    assert rel_err(full, expected) < 1e-10


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("centred", CENTRED)
@pytest.mark.parametrize("fit_intercept", INTERCEPT)
@pytest.mark.parametrize("loss, n_outputs", LOSSES)
def test_hessian_vector_sum_matches_reference(
    loss, n_outputs, fit_intercept, centred, weights, layout
):
    X, Y, model, w, rng = make_problem(loss, n_outputs, fit_intercept, centred=centred)
    assert takes_offset(cpu.hessian_vector_sum) or not centred
    rows_in, X = kernel_rows(X, layout)
    sample_weight = make_weights(weights, X.shape[0])
    rows = np.array([1, 4, 9, 9, 15, 21, 0, 2], dtype=np.int64)
    H = ref.hessian(
        X[rows], Y[rows], w, model, reference_weights(weights, sample_weight, rows)
    )
    for _ in range(3):
        v = rng.standard_normal(w.size)
        start = rng.standard_normal(w.size)
        out = start.copy()
        call(
            cpu.hessian_vector_sum,
            **kernel_args(rows_in, Y, model, w, rows=rows, v=v, out=out),
            sample_weight=sample_weight,
        )
        assert rel_err(out - start, H @ v) < 1e-10


@pytest.mark.parametrize("loss, n_outputs", LOSSES)
def test_weights_act_as_row_multiplicities(loss, n_outputs):
    """Integer weights are repeated rows; zero-weight rows add nothing; scaling
    every weight scales the sums (independent of the reference)."""
    X, Y, model, w, rng = make_problem(loss, n_outputs, True, centred=True)
    v = rng.standard_normal(w.size)
    sample_weight = np.zeros(X.shape[0])
    sample_weight[[1, 5, 8, 13]] = [1.0, 2.0, 3.0, 1.0]
    weighted_rows = np.array([0, 1, 5, 8, 13, 17], dtype=np.int64)  # 0, 17 weigh 0
    repeated_rows = np.array([1, 5, 5, 8, 8, 8, 13], dtype=np.int64)
    ones = np.ones(X.shape[0])

    def sums(rows, weights):
        named = kernel_args(X, Y, model, w, rows=rows, sample_weight=weights)
        g = np.zeros(w.size)
        call(cpu.gradient_sum, **named, out=g)
        hv = np.zeros(w.size)
        call(cpu.hessian_vector_sum, **named, v=v, out=hv)
        return g, hv, cpu.weight_sum(weights, rows)

    g_w, hv_w, total_w = sums(weighted_rows, sample_weight)
    g_r, hv_r, total_r = sums(repeated_rows, ones)
    assert total_w == total_r == 7.0
    assert np.abs(g_r).max() > 1e-3 and np.abs(hv_r).max() > 1e-3
    assert rel_err(g_w, g_r) < 1e-12
    assert rel_err(hv_w, hv_r) < 1e-12
    g_s, hv_s, total_s = sums(weighted_rows, 0.25 * sample_weight)
    assert total_s == 0.25 * total_w
    assert rel_err(g_s, 0.25 * g_w) < 1e-12
    assert rel_err(hv_s, 0.25 * hv_w) < 1e-12
    # Only zero-weight rows: nothing is added.
    g_0, hv_0, total_0 = sums(np.array([0, 17, 0], dtype=np.int64), sample_weight)
    assert total_0 == 0.0
    np.testing.assert_array_equal(g_0, 0.0)
    np.testing.assert_array_equal(hv_0, 0.0)


def test_weight_sum_adds_the_rows_weights_in_order():
    sample_weight = np.random.default_rng(0).uniform(0.0, 1.0, 30)
    sample_weight[[3, 11]] = 0.0
    rows = np.array([29, 3, 0, 7, 7, 11, 15, 2, 28], dtype=np.int64)
    total = 0.0
    for i in rows:
        total += sample_weight[i]
    assert cpu.weight_sum(sample_weight, rows) == total  # bitwise: summed in order
    assert cpu.weight_sum(sample_weight, np.zeros(0, dtype=np.int64)) == 0.0
    assert cpu.weight_sum(sample_weight, np.array([3, 11, 3])) == 0.0
    assert cpu.weight_sum(np.ones(30), rows) == float(rows.size)


@pytest.mark.parametrize("n", [1, 7, 330])
def test_symmetric_product_matches_numpy(n):
    rng = np.random.default_rng(n)
    factor = rng.standard_normal((n, n))
    matrix = factor @ factor.T
    v = rng.standard_normal(n)
    out = np.full(n, np.nan)
    cpu.symmetric_product(matrix, v, out)
    np.testing.assert_allclose(out, matrix @ v, rtol=1e-12, atol=1e-12 * n)
    # BLAS reads the lower triangle only: the upper one does not matter.
    lower_only = np.full(n, np.nan)
    cpu.symmetric_product(np.tril(matrix), v, lower_only)
    assert np.array_equal(lower_only, out)
    # A view that is not C-contiguous is copied, with the same product.
    strided = np.asfortranarray(matrix)
    strided_out = np.full(n, np.nan)
    cpu.symmetric_product(strided, v, strided_out)
    np.testing.assert_allclose(strided_out, matrix @ v, rtol=1e-12, atol=1e-12 * n)
    empty = np.zeros(0)
    cpu.symmetric_product(np.zeros((0, 0)), empty, empty)
    cpu.symmetric_product(np.zeros((0, 0), dtype=np.float32), empty, empty)


@pytest.mark.parametrize("n", [1, 7, 330])
def test_single_precision_symmetric_product(n):
    """A float32 matrix: the product of the single-precision matrix and vector
    to single-precision rounding, from the lower triangle only, into float64."""
    rng = np.random.default_rng(n)
    factor = rng.standard_normal((n, n))
    matrix = (factor @ factor.T).astype(np.float32)
    v = rng.standard_normal(n)
    out = np.full(n, np.nan)
    cpu.symmetric_product(matrix, v, out)
    expected = matrix.astype(np.float64) @ v.astype(np.float32).astype(np.float64)
    scale = np.abs(matrix).astype(np.float64) @ np.abs(v)
    assert np.all(np.abs(out - expected) <= 1e-6 * scale)
    assert not np.array_equal(out, matrix.astype(np.float64) @ v) or n == 1
    lower_only = np.full(n, np.nan)
    cpu.symmetric_product(np.tril(matrix), v, lower_only)
    assert np.array_equal(lower_only, out)
    strided_out = np.full(n, np.nan)
    cpu.symmetric_product(np.asfortranarray(matrix), v, strided_out)
    assert np.array_equal(strided_out, out)


@pytest.mark.parametrize("fit_intercept", INTERCEPT)
def test_add_penalty_skips_intercepts(fit_intercept):
    model = ref.Model(ref.MULTINOMIAL, 3, fit_intercept, 0.25, 4)
    rng = np.random.default_rng(1)
    w = rng.standard_normal(ref.n_params(model))
    out = rng.standard_normal(w.size)
    expected = out + model.alpha * ref.penalty_mask(model) * w
    cpu.add_penalty(w, model.alpha, model.n_features * model.n_outputs, out)
    np.testing.assert_allclose(out, expected, rtol=1e-15, atol=0)
    if fit_intercept:
        np.testing.assert_array_equal(out[-3:], expected[-3:])


# ---------------------------------------------------------------------- L-BFGS
def curvature_pairs(d, n_pairs, seed=0):
    """Pairs ``(s, A s)`` of a random SPD matrix ``A``."""
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((d, d))
    A = M @ M.T / d + 0.5 * np.eye(d)
    pairs = []
    for _ in range(n_pairs):
        s = rng.standard_normal(d)
        pairs.append((s, A @ s))
    return pairs, rng


def empty_memory(memory, d):
    """The L-BFGS state: pairs ``S``, ``Y``, their inner products and the ring of
    their rows (oldest first)."""
    return (
        np.zeros((memory, d)),
        np.zeros((memory, d)),
        np.zeros((memory, memory)),
        np.zeros((memory, memory)),
        np.arange(memory),
    )


def push_all(pairs, memory, d):
    S, Yp, SY, SS, slots = empty_memory(memory, d)
    n = 0
    for s, y in pairs:
        n, _ = lbfgs_push_pair(S, Yp, SY, SS, slots, n, s, y)
    return S, Yp, SY, SS, slots, n


def test_lbfgs_push_pair_keeps_the_newest_usable_pairs():
    d, memory = 7, 3
    pairs, rng = curvature_pairs(d, 5)
    S, Yp, SY, SS, slots, n = push_all(pairs, memory, d)
    assert n == memory
    # Five pairs through a ring of three rows: the oldest kept one is in row 2.
    np.testing.assert_array_equal(slots, [2, 0, 1])
    np.testing.assert_array_equal(S[slots], np.array([s for s, _ in pairs[-3:]]))
    np.testing.assert_array_equal(Yp[slots], np.array([y for _, y in pairs[-3:]]))
    # The inner products (in age order) follow the pairs through the drops.
    np.testing.assert_allclose(SY, S[slots] @ Yp[slots].T, rtol=1e-13)
    np.testing.assert_allclose(SS, S[slots] @ S[slots].T, rtol=1e-13)
    # Rejected: a tiny step, and a pair of non-positive curvature.
    tiny = np.full(d, 1e-17)
    for s, y in [(tiny, tiny), (pairs[0][0], -pairs[0][1]), (pairs[0][0], 0 * tiny)]:
        state = tuple(a.copy() for a in (S, Yp, SY, SS, slots))
        assert lbfgs_push_pair(*state, n, s, y) == (n, False)
        for after, before in zip(state, (S, Yp, SY, SS, slots), strict=True):
            np.testing.assert_array_equal(after, before)
    # Not full: appended.
    S3, Y3, SY3, SS3, slots3 = empty_memory(memory, d)
    assert lbfgs_push_pair(S3, Y3, SY3, SS3, slots3, 0, *pairs[0]) == (1, True)
    np.testing.assert_array_equal(S3[0], pairs[0][0])
    assert SY3[0, 0] == pytest.approx(pairs[0][0] @ pairs[0][1], rel=1e-14)
    # Full: the oldest is dropped, the count stays, and the pair is accepted.
    state = tuple(a.copy() for a in (S, Yp, SY, SS, slots))
    assert lbfgs_push_pair(*state, n, *pairs[0]) == (n, True)
    ring = state[4]
    np.testing.assert_array_equal(ring, [0, 1, 2])
    np.testing.assert_array_equal(state[0][ring[-1]], pairs[0][0])
    np.testing.assert_allclose(state[2], state[0][ring] @ state[1][ring].T, rtol=1e-13)


@pytest.mark.parametrize("n_pairs", [1, 2, 4, 7])
@pytest.mark.parametrize("alpha", [0.0, 0.05])
def test_lbfgs_product_matches_dense_bfgs_matrix(n_pairs, alpha):
    d, memory = 9, 4
    pairs, rng = curvature_pairs(d, n_pairs, seed=n_pairs)
    S, Yp, SY, SS, slots, n = push_all(pairs, memory, d)
    middle_inv = np.zeros((2 * memory, 2 * memory))
    first, sigma = lbfgs_factorize(SY, SS, n, alpha, middle_inv)
    # With more pairs than memory, the ring keeps the newest ones.
    pairs = pairs[-memory:]
    ref_first, ref_sigma, B = ref.lbfgs_model(pairs, alpha)
    k = min(n_pairs, memory)
    assert (first, n) == (ref_first, k) == (0, k)
    assert sigma == pytest.approx(ref_sigma, rel=1e-14)
    np.testing.assert_allclose(
        middle_inv[: 2 * k, : 2 * k],
        np.linalg.inv(ref.lbfgs_middle(pairs, sigma)),
        rtol=1e-9,
        atol=1e-12,
    )
    # The recursive BFGS update and the compact form are the same matrix ...
    assert rel_err(ref.lbfgs_matrix_compact(pairs, sigma), B) < 1e-10
    # ... which satisfies the newest secant equation ...
    s_new, y_new = pairs[-1]
    assert rel_err(B @ s_new, y_new) < 1e-10
    # ... and is what the kernel multiplies by.
    out = np.empty(d)
    for _ in range(3):
        v = rng.standard_normal(d)
        lbfgs_product(S, Yp, slots, first, n, sigma, middle_inv, v, out)
        assert rel_err(out, B @ v) < 1e-10


def test_lbfgs_factorize_floors_sigma():
    d = 5
    pairs, _ = curvature_pairs(d, 2)
    _, _, SY, SS, _, n = push_all(pairs, 2, d)
    middle_inv = np.zeros((4, 4))
    newest = pairs[-1][1] @ pairs[-1][0] / (pairs[-1][0] @ pairs[-1][0])
    big_alpha = 10 * newest
    _, sigma = lbfgs_factorize(SY, SS, n, big_alpha, middle_inv)
    assert sigma == big_alpha
    # A pair of tiny curvature: sigma floored at 1e-8 even without alpha.
    s = pairs[0][0]
    _, _, SY1, SS1, _, n1 = push_all([(s, 1e-9 * s / (s @ s))], 1, d)
    _, sigma = lbfgs_factorize(SY1, SS1, n1, 0.0, middle_inv)
    assert sigma == pytest.approx(1e-8)
    assert ref.lbfgs_model([(s, 1e-9 * s / (s @ s))], 0.0)[1] == pytest.approx(1e-8)
    # No pairs at all.
    assert lbfgs_factorize(np.zeros((2, 2)), np.zeros((2, 2)), 0, 0.0, middle_inv) == (
        0,
        1.0,
    )


def test_lbfgs_factorize_drops_oldest_pairs_when_ill_conditioned():
    d = 6
    pairs, rng = curvature_pairs(d, 3, seed=3)
    # The oldest pair is 1e-7 times shorter than the others: sigma S S' has a
    # condition number near 1e14, above the 1e12 limit. The older half (rounded
    # up: two of three pairs) is dropped, leaving the newest pair.
    s0, y0 = pairs[0]
    pairs[0] = (1e-7 * s0, 1e-7 * y0)
    S, Yp, SY, SS, slots, n = push_all(pairs, 3, d)
    assert n == 3
    sigma = ref.lbfgs_sigma(pairs, 0.0)
    assert np.linalg.cond(ref.lbfgs_middle(pairs, sigma)) > 1e12
    middle_inv = np.zeros((6, 6))
    first, sigma = lbfgs_factorize(SY, SS, n, 0.0, middle_inv)
    ref_first, ref_sigma, B = ref.lbfgs_model(pairs, 0.0)
    assert first == ref_first == 2
    out = np.empty(d)
    v = rng.standard_normal(d)
    lbfgs_product(S, Yp, slots, first, n, sigma, middle_inv, v, out)
    assert rel_err(out, B @ v) < 1e-10


# -------------------------------------------------------- sub-sampled Hessian
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("centred", CENTRED)
@pytest.mark.parametrize("fit_intercept", INTERCEPT)
@pytest.mark.parametrize("loss, n_outputs", LOSSES)
def test_subsampled_hessian_product(
    loss, n_outputs, fit_intercept, centred, weights, layout
):
    X, Y, model, w, rng = make_problem(loss, n_outputs, fit_intercept, centred=centred)
    assert takes_offset(subsampled_hessian_product) or not centred
    rows_in, X = kernel_rows(X, layout)
    sample_weight = make_weights(weights, X.shape[0])
    # Under the random weights kept rows 2 and 4 weigh 0.
    kept = np.array([2, 4, 5, 8, 11, 13, 17, 20], dtype=np.int64)
    removed = np.array([0, 9, 14], dtype=np.int64)
    mask = ref.penalty_mask(model)
    v = rng.standard_normal(w.size)
    out = rng.standard_normal(w.size)  # overwritten, not added to

    def product(
        sample, kept_weight, removed, kernel=subsampled_hessian_product, **more
    ):
        named = kernel_args(rows_in, Y, model, w, v=v, out=out, **more)
        call(
            kernel,
            **named,
            sample_weight=sample_weight,
            sample=sample,
            kept_weight=kept_weight,
            removed=removed,
        )
        return out.copy()

    def hess(rows):
        s = reference_weights(weights, sample_weight, rows)
        return ref.hessian(X[rows], Y[rows], w, model, s)

    kept_weight = sample_weight[kept].sum()
    removed_weight = sample_weight[removed].sum()
    old_weight = kept_weight + removed_weight
    if weights == "unit":
        assert (kept_weight, old_weight) == (kept.size, kept.size + removed.size)
    # Every kept row sampled: the exact Hessian of the original batch, plus alpha P.
    batch = np.concatenate([kept, removed])
    exact = hess(batch) @ v / old_weight + model.alpha * mask * v
    assert rel_err(product(kept, kept_weight, removed), exact) < 1e-10
    # A sample of three kept rows, scaled up to the kept weight.
    sample = kept[1:4]
    sample_weight_sum = sample_weight[sample].sum()
    estimate = (
        hess(sample) * (kept_weight / sample_weight_sum) + hess(removed)
    ) @ v / old_weight + model.alpha * mask * v
    assert rel_err(product(sample, kept_weight, removed), estimate) < 1e-10
    if weights == "random":
        # The weights matter: the unweighted estimate is far off.
        unweighted = (
            ref.hessian(X[sample], Y[sample], w, model) * (kept.size / sample.size)
            + ref.hessian(X[removed], Y[removed], w, model)
        ) @ v / batch.size + model.alpha * mask * v
        assert rel_err(unweighted, estimate) > 1e-3
        # A sample of zero weight carries no information: only the removed rows'
        # Hessian remains (still divided by the original batch's weight).
        zero_sample = kept[:2]
        assert sample_weight[zero_sample].sum() == 0.0
        only_removed = hess(removed) @ v / old_weight + model.alpha * mask * v
        assert np.isfinite(product(zero_sample, kept_weight, removed)).all()
        assert rel_err(product(zero_sample, kept_weight, removed), only_removed) < 1e-10
        # Nothing of positive weight at all: the penalty alone.
        nothing = np.zeros(0, dtype=np.int64)
        np.testing.assert_allclose(
            product(zero_sample, 0.0, nothing), model.alpha * mask * v, rtol=1e-15
        )
    # Nothing removed (an addition).
    exact = hess(kept) @ v / kept_weight + model.alpha * mask * v
    nothing = np.zeros(0, dtype=np.int64)
    assert rel_err(product(kept, kept_weight, nothing), exact) < 1e-10
    # With the reference correction's sample: each sampled row's Hessian less beta
    # times its Hessian at the reference point (the removed rows' at w only).
    reference = w + 0.5 * rng.standard_normal(w.size)
    referenced = product(
        sample, kept_weight, removed, referenced_hessian_product,
        reference=reference, beta=0.4, old_weight=old_weight,
    )  # fmt: skip
    at_reference = ref.hessian(
        X[sample], Y[sample], reference, model,
        reference_weights(weights, sample_weight, sample),
    )  # fmt: skip
    correction = (kept_weight / sample_weight_sum) * (at_reference @ v) / old_weight
    assert rel_err(referenced, estimate - 0.4 * correction) < 1e-10
    # The replay's product: no removed rows, but their weight in the original
    # batch's, so the kept rows' share of the product.
    kept_share = product(
        sample, kept_weight, nothing, referenced_hessian_product,
        reference=reference, beta=0.4, old_weight=old_weight,
    )  # fmt: skip
    removed_share = hess(removed) @ v / old_weight
    expected = estimate - removed_share - 0.4 * correction
    assert rel_err(kept_share, expected) < 1e-10


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_centered_square_norms(layout, fit_intercept):
    """``||(x_i - offset, 1)||^2`` of every row (the bound on batch Hessians and the
    step size rest on it), float32 rows squared in float64."""
    X = make_problem(ref.SQUARED, 1, fit_intercept, n_samples=15)[0]
    X = X * 1e3 + 0.1  # large values: float32 products would lose digits
    X[4] = 0.0
    rows, X64 = kernel_rows(X, layout)
    offset = np.random.default_rng(1).standard_normal(X.shape[1])
    out = np.empty(X.shape[0])
    cpu.centered_square_norms(rows, offset, fit_intercept, out)
    expected = ((X64 - offset) ** 2).sum(axis=1) + float(fit_intercept)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


@pytest.mark.parametrize("layout", ["dense64", "dense32", "csr"])
@pytest.mark.parametrize("n_rows", [7, 8, 31, 256, 600])
@pytest.mark.parametrize(
    "loss, n_outputs",
    [
        pytest.param(ref.SQUARED, 1, id="squared"),
        pytest.param(ref.BINARY_LOGISTIC, 1, id="binary"),
        pytest.param(ref.SQUARED, 3, id="squared-multi"),
        pytest.param(ref.MULTINOMIAL, 4, id="multinomial"),
    ],
)
def test_blocked_batch_sums_match_reference(loss, n_outputs, n_rows, layout):
    """Dense rows are summed through BLAS in blocks of 256 rows from 8 rows on
    (``_MIN_BLOCK_ROWS``; row by row below, and for CSR rows): the same sums."""
    assert cpu._MIN_BLOCK_ROWS == 8  # the cases sit on both sides of it
    X, Y, model, w, rng = make_problem(
        loss, n_outputs, True, n_samples=700, n_features=9, centred=True
    )
    rows_in, X = kernel_rows(X, layout)
    sample_weight = make_weights("random", X.shape[0])
    rows = rng.integers(0, X.shape[0], n_rows).astype(np.int64)  # with repeats
    row_weights = sample_weight[rows]
    v = rng.standard_normal(w.size)
    gradient = np.zeros(w.size)
    product = np.zeros(w.size)
    named = kernel_args(rows_in, Y, model, w, rows=rows, v=v)
    call(cpu.gradient_sum, **named, out=gradient, sample_weight=sample_weight)
    call(cpu.hessian_vector_sum, **named, out=product, sample_weight=sample_weight)
    expected = ref.gradient_sum(X[rows], Y[rows], w, model, row_weights)
    assert rel_err(gradient, expected) < 1e-10
    hessian = ref.hessian(X[rows], Y[rows], w, model, row_weights)
    assert rel_err(product, hessian @ v) < 1e-10
    # The reference correction's sample: Hessians at w less 0.3 times those at a
    # reference point, in one pass.
    reference = w + 0.5 * rng.standard_normal(w.size)
    difference = np.zeros(w.size)
    call(
        cpu.hessian_difference_sum,
        **named,
        reference=reference,
        beta=0.3,
        out=difference,
        sample_weight=sample_weight,
    )
    at_reference = ref.hessian(X[rows], Y[rows], reference, model, row_weights)
    assert rel_err(difference, (hessian - 0.3 * at_reference) @ v) < 1e-10
