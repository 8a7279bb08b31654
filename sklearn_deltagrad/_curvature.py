"""Curvature models for the replay's approximate iterations.

An approximate iteration estimates the regularised gradient of the *original* batch at
the new iterate ``w'`` from the cached one at ``w``: ``g(w) + alpha P w + B (w' - w)``.
``B`` is the curvature model:

- ``LBFGS``: the direct L-BFGS matrix of the last ``m`` pairs ``(s, y)`` in its compact
  (Byrd-Nocedal-Schnabel) form ``B = sigma I - [sigma S, Y] M^-1 [sigma S; Y]^T``,
  with ``M = [[sigma S S^T, L], [L^T, -D]]`` factorised once per new pair, so each
  product costs ``O(m d)``;
- ``HESSIAN``: the loss Hessian at the midpoint ``(w + w') / 2`` (exact to third
  order for the gradient difference; at ``w`` the second-order error made
  long request sequences drift) of the first rows of the batch (batches are
  random permutations, so these are a random subset fixed by ``random_state``) plus
  ``alpha P``, costing ``O(rows * d)`` per product. It models the batch's kept rows
  only (their weight scaled to the original batch's): the replay takes the removed
  rows' gradients at the cached iterate, one pass over them instead of a gradient
  at ``w'`` and a product at the midpoint;
  With ``secant_correction`` the product becomes ``H (v - c s_e) + c y_e``: the
  exact regularised secant ``y_e`` of the last exact iteration's original batch
  (its step ``s_e``, see :func:`pair_difference`) stands in for the sample's
  product along ``s_e``, so the sample's noise hits only ``v - c s_e`` (small late
  in a replay, where the two trajectories move in parallel). ``y_e`` comes from
  another batch, so it carries that batch's deviation; the weight ``c`` in
  ``[0, 1]`` is the least-squares coefficient of this control variate, fitted at
  the scheduled exact iterations (:func:`secant_control_sums`,
  :func:`secant_weight`);
  With ``reference_correction`` (at most ``MAX_REFERENCE_PARAMS`` parameters) the
  sample's rows carry only how their curvature moved since a fixed reference
  point ``r`` (the model at ``fit``): ``H v ~ beta (b / n) H_r v + (sample of
  H(w) v - beta H(r) v)``, with ``H_r`` the whole training set's Hessian at ``r``
  (one ``d x d`` matrix, built at ``fit`` and kept current by every request, see
  :func:`add_reference_rows`; the CPU multiplies by one triangle of its
  multinomial part without the last class, in single precision,
  :func:`reference_operator`) and
  ``beta = 1 - sample / batch`` (0 when the sample is the whole batch, so that the
  product stays exact). A batch's Hessian differs from ``b / n`` times the whole
  set's by its batch noise, which cancels over the batches of an epoch; a sample
  of the rows in ``H_r`` would not cancel (measured worse than no correction);
- ``GRAM`` (squared and binary logistic losses): each batch's Hessian kept as a
  weighted Gram matrix ``sum_i c_i a_i a_i^T`` of its centred rows ``a_i = (x_i -
  offset, 1)``, costing ``O(q^2 K)`` per product for ``q`` columns. Built at
  ``fit`` (or at the first request that needs it) and then updated by the changed
  rows only. For the squared loss ``c_i = 1``: the Hessian does not depend on
  ``w`` and the replay is exact up to rounding. For the logistic loss ``c_i = p_i
  (1 - p_i)`` at the cached iterate ``w_t`` of the trajectory the Grams were built
  on (``points``): exact at that iterate, and after requests at iterates that moved
  by the earlier changes only (a first-order error in that move, where the row
  sample's error is its sampling noise). Its Grams are stored in single precision
  (:func:`gram_dtype`), the squared loss's in double. Rows with few nonzeros enter
  a Gram through their nonzeros (:func:`add_gram_rows`), uncentred: each Gram is
  stored as ``q + 1`` rows of ``q`` (:func:`gram_shape`), a matrix ``G`` and a
  pending centring vector ``r``, and the batch's Gram is ``G - r m^T - m r^T``
  (``m = (offset, 0)``), which :func:`gram_product` applies in ``O(q K)``.
"""

import numpy as np
from numba import njit

from ._kernels.cpu import (
    BINARY_LOGISTIC,
    MULTINOMIAL,
    SQUARED,
    add_penalty,
    as_kernel_rows,
    hessian_difference_sum,
    hessian_vector_sum,
    loss_curvature_product,
    row_into,
    symmetric_product,
    weight_sum,
)


def resolve_hessian_rows(hessian_rows, model, referenced=False, batch_size=None):
    """Rows of the ``"hessian"`` model's sample for the ``hessian_rows`` parameter.

    ``"auto"``: 128 rows for models of several outputs; with the reference
    correction (``referenced``), whose sample carries only how the rows' curvature
    moved since ``fit``, one row per 256 of a batch of ``batch_size`` rows, at
    least 16 and at most 64 (a batch of at most 64 rows is sampled whole, so
    its product is exact). The sample then costs about the same share of an
    exact iteration at every batch size. Measured on covtype (7 classes,
    deletion and addition of 0.1%, two draws each, ``python -m
    benchmarks.sample_rows``), share of the ceiling and fidelity ratio: batches
    of 4,096 rows, 16 rows 73-75% at 0.008-0.017 against 63-64% at 0.006-0.012
    with 64 rows; batches of 16,384, 64 rows 77-79% at 0.006-0.009 (16 rows:
    0.008-0.013); batches of 1,024, 16 rows 46-47% at 0.012-0.025 against 33-34%
    at 0.007-0.012 with 64. Without the correction, 128 rows gave 0.022 at batch
    4,096 (removal of 0.1%). Single-output models (binary logistic, single-target
    ridge), whose rows each carry one output's curvature instead of
    ``n_outputs``, get four rows per parameter, at least 256 and at most 512.
    Measured (fidelity ratio after removing 0.1% of the rows): on covtype class 2
    vs rest (56 parameters) 0.066 with 128 rows, 0.042 with 256; on a9a (124
    parameters) 0.073, 0.048 and 0.034 with 128, 256 and 512 rows (mean of three
    removals), the last for about 15% more replay time than 256. ``batch_size``
    ``None`` counts as a large batch (64 rows).
    """
    if hessian_rows == "auto":
        if model.n_outputs > 1:
            if not referenced:
                return 128
            if batch_size is None or batch_size <= _MAX_AUTO_REFERENCED_ROWS:
                # A small batch is sampled whole (an exact product): it costs
                # microseconds.
                return _MAX_AUTO_REFERENCED_ROWS
            share = batch_size // _ROWS_PER_REFERENCED_SAMPLE_ROW
            return min(_MAX_AUTO_REFERENCED_ROWS, max(_MIN_AUTO_REFERENCED_ROWS, share))
        return min(_MAX_AUTO_ROWS, max(256, 4 * model.n_params))
    return int(hessian_rows)


def resolve_lbfgs_memory(lbfgs_memory, model, batch_nonzeros):
    """Pairs ``m`` of the ``"lbfgs"`` model for the ``lbfgs_memory`` parameter.

    ``"auto"``: 32 pairs, fewer where the pairs' work would weigh next to an exact
    batch gradient. A product with the L-BFGS matrix costs about ``4 m d`` flops
    (``d`` parameters); a batch gradient about ``2 K e`` (``K`` outputs, ``e``
    non-zeros in a batch's rows, ``batch_nonzeros``: counted at fit). ``"auto"``
    keeps the former within a quarter of the latter (``m <= K e / (8 d)``), with
    at least 2 pairs. Dense rows with few zeros get 32 whenever batches have 256
    rows or more; sparse, high-dimensional rows few (Reuters-21578: 8,316
    parameters, 180,000 non-zeros per batch: 2 pairs, measured faster and more
    faithful there than 32).
    """
    if lbfgs_memory != "auto":
        return int(lbfgs_memory)
    pairs = batch_nonzeros * model.n_outputs // (8 * model.n_params)
    return int(min(_MAX_AUTO_PAIRS, max(2, pairs)))


def uses_reference(reference_correction, curvature, model):
    """Whether the ``"hessian"`` model (code ``curvature``) of ``model`` has the
    reference-point control variate (see ``reference_correction``)."""
    return (
        bool(reference_correction)
        and curvature == HESSIAN
        and model.n_params <= MAX_REFERENCE_PARAMS
    )


def resolve_curvature(
    name, model, hessian_rows, *, corrected_full_batch=False, n_iterations=None
):
    """The curvature model code for the ``curvature`` parameter.

    ``"auto"`` picks the per-batch ``"gram"`` model for the squared loss with at most
    ``_MAX_GRAM_COLUMNS`` columns, and for the binary logistic loss with at most
    ``_MAX_LOGISTIC_GRAM_COLUMNS`` columns whose ``n_iterations`` Grams take at most
    ``_MAX_AUTO_GRAM_BYTES`` (stored as :func:`gram_dtype`; covtype class 2 vs rest and
    a9a, removal of 0.1%: fidelity ratio 0.0005-0.002 against 0.027-0.048 for the row
    sample); otherwise ``"hessian"`` when its row sample can have full rank (``rows *
    n_outputs >= 2 * n_params``, ``rows`` resolved by :func:`resolve_hessian_rows`
    without the reference correction) or for full-batch gradient descent with the secant
    correction (``corrected_full_batch``: every iteration sees the same batch, so the
    secant of the last exact iteration carries what a small sample misses; on MNIST
    t10k, 7,850 parameters, 128 rows gave 0.008-0.009 against 0.016-0.017 for 32 L-BFGS
    pairs), else ``"lbfgs"``. ``n_iterations=None`` does not bound the Grams' bytes.
    """
    hessian_rows = resolve_hessian_rows(hessian_rows, model)
    columns = model.n_columns
    if name == "gram" and model.loss not in (SQUARED, BINARY_LOGISTIC):
        raise ValueError(
            "curvature='gram' needs the squared loss (DeltaGradRidge) or the binary "
            "logistic loss (two classes): the multinomial Hessian is not one "
            "weighted Gram matrix per batch."
        )
    if name != "auto":
        return CURVATURE_CODES[name]
    if model.loss == SQUARED and columns <= _MAX_GRAM_COLUMNS:
        return GRAM
    if (
        model.loss == BINARY_LOGISTIC
        and columns <= _MAX_LOGISTIC_GRAM_COLUMNS
        and (
            n_iterations is None
            or gram_nbytes(n_iterations, columns, model.loss) <= _MAX_AUTO_GRAM_BYTES
        )
    ):
        return GRAM
    if hessian_rows * model.n_outputs >= 2 * model.n_params or corrected_full_batch:
        return HESSIAN
    return LBFGS


LBFGS = 0
HESSIAN = 1
GRAM = 2

CURVATURE_CODES = {"lbfgs": LBFGS, "hessian": HESSIAN, "gram": GRAM}
CURVATURE_NAMES = {"auto", *CURVATURE_CODES}

# The most rows hessian_rows="auto" samples.
_MAX_AUTO_ROWS = 512

# hessian_rows="auto" with the reference correction: one sampled row per this many
# rows of a batch, within these bounds (see resolve_hessian_rows).
_ROWS_PER_REFERENCED_SAMPLE_ROW = 256
_MIN_AUTO_REFERENCED_ROWS = 16
_MAX_AUTO_REFERENCED_ROWS = 64

# The most L-BFGS pairs lbfgs_memory="auto" keeps.
_MAX_AUTO_PAIRS = 32

# "auto" keeps per-batch Gram matrices only up to this many columns (with the
# intercept): T * q^2 floats, at most 32 KiB per iteration.
_MAX_GRAM_COLUMNS = 64

# For the binary logistic loss the Grams replace a row sample of 256-512 rows per
# approximate iteration: "auto" takes them up to this many columns (a9a's 124: 61
# KiB per iteration) while all of them fit in _MAX_AUTO_GRAM_BYTES.
_MAX_LOGISTIC_GRAM_COLUMNS = 128
_MAX_AUTO_GRAM_BYTES = 128 * 2**20

# The binary logistic loss's Grams are stored in single precision. They only model
# the curvature (a9a, removal of 0.1%: the same fidelity ratio to 5 digits), and
# half the bytes halve the memory traffic of a request's products and in-place
# update, which stream every matrix (a9a's request 27.4-29.4 -> 25.3-25.9 ms). The
# squared loss's Gram model is exact to rounding: its Grams stay double.
_LOGISTIC_GRAM_DTYPE = np.float32


def gram_dtype(loss):
    """The dtype of the ``GRAM`` model's matrices for ``loss``."""
    return np.dtype(np.float64 if loss == SQUARED else _LOGISTIC_GRAM_DTYPE)


def gram_shape(n_iterations, n_columns):
    """The shape of the ``GRAM`` model's array: per iteration a ``q x q`` matrix
    and, in row ``q``, its pending centring vector (see :func:`add_gram_rows`)."""
    return (n_iterations, n_columns + 1, n_columns)


def gram_nbytes(n_iterations, n_columns, loss):
    """The bytes of the ``GRAM`` model's array."""
    return int(np.prod(gram_shape(n_iterations, n_columns))) * gram_dtype(loss).itemsize


# reference_correction keeps one n_params x n_params matrix: up to 2,048
# parameters (32 MiB), not for MNIST's 7,850 or Reuters-21578's 8,316.
MAX_REFERENCE_PARAMS = 2048

# Rows per BLAS product when the reference Hessian sums rows.
_REFERENCE_BLOCK_ROWS = 512

# Steps with s's at or below this are rounding noise: no L-BFGS pair, no secant
# anchor is made of them.
MIN_STEP_SQUARE = 1e-30

# A pair is kept only if s'y > _MIN_CURVATURE * s's; the middle matrix is used only
# while its condition number stays below _MAX_CONDITION.
_MIN_CURVATURE = 1e-10
_MAX_CONDITION = 1e12
_MIN_SIGMA = 1e-8


@njit(cache=True)
def lbfgs_push_pair(S, Yp, SY, SS, slots, n_pairs, s, y):
    """Append a pair if it is usable; drop the oldest when full.

    The pairs live in the rows of ``S``/``Yp`` as a ring: the ``i``-th oldest is row
    ``slots[i]``, so dropping the oldest moves ``m`` indices instead of ``2 m d``
    floats. ``SY[i, j] = s_i' y_j`` and ``SS[i, j] = s_i' s_j`` (in age order) are
    kept up to date here, at ``O(m d)`` per new pair, so that a factorisation costs
    ``O(m^3)`` instead of ``O(m^2 d)``. Returns ``(n_pairs, accepted)``; the middle
    matrix must be refactorised whenever a pair was accepted (also when the memory
    was full and ``n_pairs`` is unchanged).
    """
    ss = np.dot(s, s)
    if ss <= MIN_STEP_SQUARE or np.dot(s, y) <= _MIN_CURVATURE * ss:
        return n_pairs, False
    memory = S.shape[0]
    if n_pairs == memory:
        freed = slots[0]
        for i in range(memory - 1):
            slots[i] = slots[i + 1]
            for j in range(memory - 1):
                SY[i, j] = SY[i + 1, j + 1]
                SS[i, j] = SS[i + 1, j + 1]
        slots[memory - 1] = freed
        n_pairs -= 1
    newest = slots[n_pairs]
    S[newest] = s
    Yp[newest] = y
    for j in range(n_pairs + 1):
        row = slots[j]
        SY[n_pairs, j] = np.dot(s, Yp[row])
        SY[j, n_pairs] = np.dot(S[row], y)
        SS[n_pairs, j] = np.dot(s, S[row])
        SS[j, n_pairs] = SS[n_pairs, j]
    return n_pairs + 1, True


@njit(cache=True)
def lbfgs_factorize(SY, SS, n_pairs, alpha, middle_inv):
    """Invert the compact form's middle matrix into ``middle_inv``.

    ``SY``/``SS`` are the pairs' inner products kept by :func:`lbfgs_push_pair`.
    While the matrix is ill-conditioned, drops the older half of the pairs in use
    (halving keeps the cost at O(log m) factorisations). Returns
    ``(first, sigma)``: the pairs ``first..n_pairs-1`` are in use; ``first ==
    n_pairs`` means no usable pair (the caller must take an exact iteration).
    """
    newest = n_pairs - 1
    if n_pairs == 0:
        return 0, 1.0
    sigma = max(SY[newest, newest] / SS[newest, newest], max(alpha, _MIN_SIGMA))
    first = 0
    while first < n_pairs:
        k = n_pairs - first
        middle = np.zeros((2 * k, 2 * k))
        for i in range(k):
            for j in range(k):
                middle[i, j] = sigma * SS[first + i, first + j]
            middle[k + i, k + i] = -SY[first + i, first + i]
            for j in range(i):
                middle[i, k + j] = SY[first + i, first + j]
                middle[k + j, i] = SY[first + i, first + j]
        if np.linalg.cond(middle) < _MAX_CONDITION:
            middle_inv[: 2 * k, : 2 * k] = np.linalg.inv(middle)
            return first, sigma
        first += (k + 1) // 2
    return n_pairs, sigma


@njit(cache=True)
def lbfgs_product(S, Yp, slots, first, n_pairs, sigma, middle_inv, v, out):
    """``out = B v`` for the compact L-BFGS matrix of pairs ``first..n_pairs-1``
    (in age order; stored in rows ``slots``, see :func:`lbfgs_push_pair`)."""
    k = n_pairs - first
    projections = np.empty(2 * k)
    for i in range(k):
        row = slots[first + i]
        projections[i] = sigma * np.dot(S[row], v)
        projections[k + i] = np.dot(Yp[row], v)
    coefficients = np.zeros(2 * k)
    for i in range(2 * k):
        for j in range(2 * k):
            coefficients[i] += middle_inv[i, j] * projections[j]
    for i in range(k):
        coefficients[i] *= sigma
    # One contiguous pass per pair, which the compiler vectorises (with the pairs in
    # the inner loop it cannot: 37 against 13 us at d = 8,316, m = 2). The terms
    # are subtracted in the same order either way.
    if k == 2:
        # The two pairs of the sparse high-dimensional default (lbfgs_memory
        # "auto" on Reuters-21578) in one pass, subtracted in the same order.
        s0, y0 = S[slots[first]], Yp[slots[first]]
        s1, y1 = S[slots[first + 1]], Yp[slots[first + 1]]
        a0, a1, b0, b1 = coefficients
        for j in range(v.shape[0]):
            value = sigma * v[j] - (a0 * s0[j] + b0 * y0[j])
            out[j] = value - (a1 * s1[j] + b1 * y1[j])
        return
    for j in range(v.shape[0]):
        out[j] = sigma * v[j]
    for i in range(k):
        row = slots[first + i]
        s_coefficient = coefficients[i]
        y_coefficient = coefficients[k + i]
        s_row = S[row]
        y_row = Yp[row]
        for j in range(v.shape[0]):
            out[j] -= s_coefficient * s_row[j] + y_coefficient * y_row[j]


@njit(cache=True)
def subsampled_hessian_product(
    X,
    Y,
    sample_weight,
    sample,
    kept_weight,
    removed,
    w,
    v,
    alpha,
    offset,
    loss,
    n_outputs,
    fit_intercept,
    out,
):
    """``out = (H + alpha P) v`` for the Hessian ``H`` of the original batch at ``w``.

    The original batch is its rows still in use (of total weight ``kept_weight``)
    plus the ``removed`` ones; the kept rows' Hessian is estimated from ``sample`` (a
    subset of them), the removed rows' exactly. With every kept row in ``sample``
    the product is exact.
    """
    old_weight = kept_weight + weight_sum(sample_weight, removed)
    referenced_hessian_product(
        X, Y, sample_weight, sample, kept_weight, removed, old_weight, w, w, 0.0, v,
        alpha, offset, loss, n_outputs, fit_intercept, out,
    )  # fmt: skip


@njit(cache=True)
def referenced_hessian_product(
    X, Y, sample_weight, sample, kept_weight, removed, old_weight, w, reference,
    beta, v, alpha, offset, loss, n_outputs, fit_intercept, out,
):  # fmt: skip
    """As :func:`subsampled_hessian_product`, each sampled row's Hessian at ``w``
    less ``beta`` times its Hessian at ``reference`` (the reference correction's
    sample; :func:`add_reference_correction` adds the reference Hessian's share).

    ``out = ((b / s) sum_sample (H_i(w) - beta H_i(reference)) v + sum_removed
    H_i(w) v) / b_old + alpha P v``, ``b`` the kept weight, ``s`` the sample's and
    ``b_old = old_weight`` the original batch's; one pass over the sample for both
    points. The replay passes no ``removed`` rows but their weight in
    ``old_weight``: the kept rows' share of the original batch's product.
    """
    out[:] = 0.0
    sample_weight_sum = weight_sum(sample_weight, sample)
    if sample_weight_sum > 0.0:
        hessian_difference_sum(
            X, Y, sample_weight, sample, w, reference, beta, v, offset, loss,
            n_outputs, fit_intercept, out,
        )  # fmt: skip
        out *= kept_weight / sample_weight_sum
    if removed.shape[0] > 0:
        hessian_vector_sum(
            X, Y, sample_weight, removed, w, v, offset, loss, n_outputs,
            fit_intercept, out,
        )  # fmt: skip
    if old_weight > 0.0:
        out /= old_weight
    add_penalty(v, alpha, offset.shape[0] * n_outputs, out)


# Rows are centred and gathered into blocks whose Gram sum is one matrix product
# (BLAS): a batch of 4,096 rows 1.4x (9 columns) and 1.2x (49 columns) faster than
# adding the rows' outer products one by one; blocks of 1,024 rather than 256 rows
# build the Grams of a fit 1.1x (a9a, 124 columns) and 1.4x (covtype class 2 vs
# rest, 56 columns) faster.
_GRAM_BLOCK_ROWS = 1024

# Up to this many rows, add_gram_rows adds the outer products one by one.
_GRAM_LOOP_ROWS = 16


@njit(cache=True)
def gram_workspace(n_rows, n_columns):
    """Buffers for :func:`add_gram_rows` adding up to ``n_rows`` rows at a time,
    allocated once per pass over the Grams (an in-place update then allocates
    nothing after its first change)."""
    block_rows = max(1, min(_GRAM_BLOCK_ROWS, n_rows))
    return (
        np.empty((block_rows, n_columns)),
        np.empty((block_rows, n_columns)),
        np.empty((n_columns, n_columns)),
        np.empty(3),
        # The block's rows uncentred, as (column, value) lists of their nonzeros
        # with their counts (see _add_sparse_rows), and their scales s_i c_i.
        np.empty((block_rows, n_columns), dtype=np.int64),
        np.empty((block_rows, n_columns)),
        np.empty(block_rows, dtype=np.int64),
        np.empty(block_rows),
    )


@njit(cache=True)
def add_gram_rows(
    X, sample_weight, rows, offset, fit_intercept, loss, point, sign, gram, workspace
):  # fmt: skip
    """Adds ``sign * sum_i s_i c_i a_i a_i^T`` over ``rows`` to the Gram ``gram``
    (``q + 1`` rows of ``q``, see :func:`gram_shape`), ``a_i = (x_i - offset, 1)``,
    ``s_i`` the rows' weights and ``c_i`` the loss curvature at the parameters
    ``point`` (1 for the squared loss, ``p (1 - p)`` of ``a_i . point`` for the
    binary logistic loss, whose Hessian is then this sum). ``workspace`` comes from
    :func:`gram_workspace`.

    Rows are gathered in blocks; a block is added to the matrix by a dense loop (a
    few rows), a BLAS product (more), or, where :func:`_sparse_rows_pay`, from its
    rows' nonzeros uncentred, its centring left pending in the Gram's last row
    (:func:`_add_sparse_rows`)."""
    n_rows = rows.shape[0]
    if n_rows == 0:
        return
    block, weighted, product, scalars = workspace[:4]
    counts, scales = workspace[6], workspace[7]
    n_features = offset.shape[0]
    n_columns = gram.shape[1]
    weighted_by_point = loss != SQUARED
    output, unit, curvature = scalars[0:1], scalars[1:2], scalars[2:3]
    unit[0] = 1.0
    shift = 0.0
    if weighted_by_point:
        # a_i . point from the uncentred row: x_i . point + shift.
        shift = point[n_features] if fit_intercept else 0.0
        shift -= np.dot(offset, point[:n_features])
    centred = np.any(offset != 0.0)
    block_rows = block.shape[0]
    for start in range(0, n_rows, block_rows):
        size = min(block_rows, n_rows - start)
        # The rows uncentred first: the sparse path needs no more of them.
        for idx in range(size):
            i = rows[start + idx]
            x = block[idx, :n_features]
            row_into(X, i, x)
            counts[idx] = _count_nonzeros(x, n_features, fit_intercept)
            scale = sign * sample_weight[i]
            if weighted_by_point:
                output[0] = np.dot(x, point[:n_features]) + shift
                loss_curvature_product(loss, output, unit, curvature)
                scale *= curvature[0]
            scales[idx] = scale
        if _sparse_rows_pay(size, n_columns, workspace):
            for idx in range(size):
                _record_nonzeros(block[idx], n_features, fit_intercept, idx, workspace)
            _add_sparse_rows(gram, offset, centred, size, workspace)
            continue
        for idx in range(size):
            a = block[idx]
            for j in range(n_features):
                a[j] -= offset[j]
            if fit_intercept:
                a[n_features] = 1.0
            for j in range(n_columns):
                weighted[idx, j] = scales[idx] * a[j]
        if size <= _GRAM_LOOP_ROWS:
            # A request's few changed rows per batch: added to each row of the
            # Gram while it is in the CPU cache (one pass over the matrix; the
            # rows' terms in the same order as one pass per row).
            for j in range(n_columns):
                for idx in range(size):
                    factor = weighted[idx, j]
                    for col in range(n_columns):
                        gram[j, col] += factor * block[idx, col]
        else:
            np.dot(weighted[:size].T, block[:size], product)
            gram[:n_columns] += product


# The sparse path's cost of one scattered term of an outer product, next to one
# term of the dense loop (whose pass streams the Gram through memory) and of a
# BLAS block product (three times as fast per term).
_SCATTERED_TERM_COST = 4
_SCATTERED_TERM_COST_BLAS = 12


@njit(cache=True)
def _count_nonzeros(x, n_features, fit_intercept):
    """The nonzeros of the uncentred row ``z = (x, 1)`` (the ``1`` with an
    intercept), counted without a branch (the compiler vectorises it)."""
    count = 1 if fit_intercept else 0
    for j in range(n_features):
        count += x[j] != 0.0
    return count


@njit(cache=True)
def _record_nonzeros(x, n_features, fit_intercept, idx, workspace):
    """The uncentred row ``z = (x, 1)`` as the (column, value) list of its
    nonzeros in row ``idx`` of the workspace's sparse rows."""
    nonzero, values = workspace[4:6]
    count = 0
    for j in range(n_features):
        value = x[j]
        if value != 0.0:
            nonzero[idx, count] = j
            values[idx, count] = value
            count += 1
    if fit_intercept:
        nonzero[idx, count] = n_features
        values[idx, count] = 1.0


@njit(cache=True)
def _sparse_rows_pay(size, n_columns, workspace):
    """Whether :func:`_add_sparse_rows` costs at most half of the dense paths'
    ``size`` terms per Gram entry: rows with few nonzeros (a9a's one-hot rows, 14
    of 123 features)."""
    counts = workspace[6]
    scattered = 0
    for idx in range(size):
        scattered += counts[idx] * counts[idx]
    if size <= _GRAM_LOOP_ROWS:
        cost = _SCATTERED_TERM_COST * scattered
    else:
        cost = _SCATTERED_TERM_COST_BLAS * scattered
    return 2 * cost <= size * n_columns * n_columns


@njit(cache=True)
def _add_sparse_rows(gram, offset, centred, size, workspace):
    """Adds ``sum_i s_i a_i a_i^T`` for the workspace's rows ``a_i = z_i - m``
    (``z_i`` uncentred, ``m = (offset, 0)``) to the Gram ``gram`` from the nonzeros
    of the ``z_i``. That sum is ``sum_i s_i z_i z_i^T - u m^T - m u^T + S m m^T``
    with ``u = sum_i s_i z_i`` and ``S = sum_i s_i``: the outer products go into
    the matrix, and (where ``centred``: ``offset`` not all zero) the rest into the
    pending centring vector ``r``, as ``r += u - S m / 2`` (then ``-r m^T - m r^T``
    is the rest), instead of a rank-2 pass over the whole matrix, which cost more
    than the rows' nonzeros (a9a, batches of 1,024 rows, removal of 1%: the update
    13 ms of a request with the vector, 28 ms with the pass)."""
    nonzero, values, counts, scales = workspace[4:8]
    n_columns = gram.shape[1]
    for idx in range(size):
        count = counts[idx]
        scale = scales[idx]
        for p in range(count):
            j = nonzero[idx, p]
            factor = scale * values[idx, p]
            for q in range(count):
                gram[j, nonzero[idx, q]] += factor * values[idx, q]
    if not centred:
        return
    pending = gram[n_columns]
    half_scale_sum = 0.0
    for idx in range(size):
        half_scale_sum += 0.5 * scales[idx]
        for p in range(counts[idx]):
            pending[nonzero[idx, p]] += scales[idx] * values[idx, p]
    for j in range(offset.shape[0]):
        pending[j] -= half_scale_sum * offset[j]


@njit(cache=True)
def fold_centring(gram, offset):
    """Moves a Gram's pending centring vector ``r`` into its matrix (``G -= r m^T
    + m r^T``, ``m = (offset, 0)``) and zeroes it: the same Gram, in the form that
    a fit builds."""
    n_columns = gram.shape[1]
    n_features = offset.shape[0]
    pending = gram[n_columns]
    for j in range(n_columns):
        m_j = offset[j] if j < n_features else 0.0
        r_j = pending[j]
        for col in range(n_features):
            gram[j, col] -= r_j * offset[col] + m_j * pending[col]
        for col in range(n_features, n_columns):
            gram[j, col] -= m_j * pending[col]
    pending[:] = 0.0


@njit(cache=True, nogil=True)
def batch_grams(
    X, sample_weight, batch_ptr, batch_rows, offset, fit_intercept, loss, points,
    grams,
):  # fmt: skip
    """The Gram matrix of every batch of a schedule, into ``grams`` (see
    :func:`gram_shape`; its centring folded in); batch ``t``'s rows are weighted by
    the loss curvature at ``points[t]`` (see :func:`add_gram_rows`)."""
    workspace = gram_workspace(_most_rows(batch_ptr), grams.shape[2])
    for t in range(grams.shape[0]):
        grams[t] = 0.0
        rows = batch_rows[batch_ptr[t] : batch_ptr[t + 1]]
        add_gram_rows(
            X, sample_weight, rows, offset, fit_intercept, loss, points[t], 1.0,
            grams[t], workspace,
        )  # fmt: skip
        # The whole batch uncentred would lose digits to the centring's
        # cancellation: a built Gram starts centred.
        fold_centring(grams[t], offset)


def build_grams(X, sample_weight, model, batch_ptr, batch_rows, points):
    """The ``GRAM`` model's state for the batches ``batch_rows[batch_ptr[t]:
    batch_ptr[t + 1]]`` (row positions of ``X``, an array or a CSR matrix or
    its kernel arrays): ``(grams, gram_points)``.

    ``points`` are the cached iterates ``w_t``; the logistic loss weights each
    batch's rows at its own and keeps a copy of them (``gram_points``), the squared
    loss keeps none.
    """
    n_columns = model.n_columns
    grams = np.empty(
        gram_shape(batch_ptr.shape[0] - 1, n_columns), dtype=gram_dtype(model.loss)
    )
    batch_grams(
        as_kernel_rows(X),
        sample_weight,
        batch_ptr,
        batch_rows,
        model.offset,
        model.fit_intercept,
        model.loss,
        points,
        grams,
    )
    return grams, (None if model.loss == SQUARED else points.copy())


@njit(cache=True, nogil=True)
def update_grams(X, sample_weight, changed, loss, points, source, grams):
    """``grams[t]`` = ``source[t]`` with the removed rows taken out of and the
    added rows put into its batch, weighted at the points the Grams were built at.

    ``changed`` is ``(removed_ptr, removed_rows, added_ptr, added_rows, offset,
    fit_intercept)``: per batch, the positions in ``X`` of the rows it loses and
    gains, and how rows are centred. ``grams`` is new memory (see
    :func:`update_grams_in_place` for the other case): each matrix is copied just
    before its update, while it is in the CPU cache."""
    workspace = _change_workspace(changed, grams.shape[2])
    for t in range(grams.shape[0]):
        grams[t, :, :] = source[t]
        _change_gram(X, sample_weight, changed, loss, points, t, grams[t], workspace)


@njit(cache=True, nogil=True)
def update_grams_in_place(X, sample_weight, changed, loss, points, grams, done):
    """:func:`update_grams` into ``grams`` itself: only the matrices of changed
    batches are touched (no copy, no new memory). ``done[0]`` is set by this
    function when it has finished, so a caller interrupted right after the call
    still knows that the matrices have changed. All memory it needs is allocated
    before the first matrix changes: it cannot stop half-way."""
    workspace = _change_workspace(changed, grams.shape[2])
    for t in range(grams.shape[0]):
        _change_gram(X, sample_weight, changed, loss, points, t, grams[t], workspace)
    done[0] = True


@njit(cache=True)
def _change_workspace(changed, n_columns):
    """:func:`gram_workspace` for the most rows one batch loses or gains."""
    most = max(_most_rows(changed[0]), _most_rows(changed[2]))
    return gram_workspace(most, n_columns)


@njit(cache=True)
def _most_rows(ptr):
    """The most rows of one batch in a ``ptr`` array of batch boundaries."""
    most = 0
    for t in range(ptr.shape[0] - 1):
        most = max(most, ptr[t + 1] - ptr[t])
    return most


@njit(cache=True, nogil=True)
def _change_gram(X, sample_weight, changed, loss, points, t, gram, workspace):
    """Batch ``t``'s removed rows out of ``gram``, its added rows into it."""
    removed_ptr, removed_rows, added_ptr, added_rows, offset, fit_intercept = changed
    removed = removed_rows[removed_ptr[t] : removed_ptr[t + 1]]
    added = added_rows[added_ptr[t] : added_ptr[t + 1]]
    point = points[t]
    add_gram_rows(
        X, sample_weight, removed, offset, fit_intercept, loss, point, -1.0, gram,
        workspace,
    )  # fmt: skip
    add_gram_rows(
        X, sample_weight, added, offset, fit_intercept, loss, point, 1.0, gram,
        workspace,
    )  # fmt: skip


@njit(cache=True)
def gram_product(gram, offset, batch_weight, v, alpha, n_outputs, n_penalized, out):
    """``out = (G_b / batch_weight) (x) I_K v + alpha P v``: a batch Hessian
    product, ``G_b = G - r m^T - m r^T`` the batch's Gram from the matrix ``G``
    (symmetric, in single or double precision; the sums in double) and the pending
    centring ``r`` that ``gram`` holds (see :func:`add_gram_rows`)."""
    n_columns = gram.shape[1]
    if n_outputs == 1:
        # The Gram's rows serve as its columns: out += gram[c] * v[c] row by row,
        # a loop over contiguous memory that the compiler vectorises (per a9a
        # matrix of 124 columns 2.7-3.0 us against 3.9 us for BLAS's gemv in
        # double precision, 1.0-1.7 us in single).
        out[:] = 0.0
        for col in range(n_columns):
            row = gram[col]
            factor = v[col]
            for j in range(n_columns):
                out[j] += row[j] * factor
    else:
        # v holds a (q, K) matrix row by row (parameter j * K + k), so (x) I_K is
        # one matrix product with that view of v (only ridge with several targets:
        # double-precision Grams).
        values = v.astype(gram.dtype).reshape((n_columns, n_outputs))
        product = np.dot(gram[:n_columns], values).reshape(-1)
        out[:] = product
    _subtract_pending_centring(gram[n_columns], offset, v, n_outputs, out)
    for i in range(out.shape[0]):
        out[i] /= batch_weight
    add_penalty(v, alpha, n_penalized, out)


@njit(cache=True)
def _subtract_pending_centring(pending, offset, v, n_outputs, out):
    """``out -= (r m^T + m r^T) (x) I_K v``, ``m = (offset, 0)``."""
    n_features = offset.shape[0]
    for k in range(n_outputs):
        m_v = 0.0
        r_v = 0.0
        for j in range(pending.shape[0]):
            r_v += pending[j] * v[j * n_outputs + k]
        for j in range(n_features):
            m_v += offset[j] * v[j * n_outputs + k]
        for j in range(pending.shape[0]):
            out[j * n_outputs + k] -= pending[j] * m_v
        for j in range(n_features):
            out[j * n_outputs + k] -= offset[j] * r_v


@njit(cache=True)
def pair_difference(
    new_sum, added_sum, removed_sum, b_old, cached_gradient, step, alpha,
    n_penalized, y,
):  # fmt: skip
    """``y = g_old(w') - g_t + alpha P s``: the original batch's regularised
    gradient change over the step ``s = w' - w_t`` (an L-BFGS pair's ``y``, the
    Hessian model's secant), from the new batch's sum and the changed rows'."""
    for i in range(y.shape[0]):
        value = (new_sum[i] - added_sum[i] + removed_sum[i]) / b_old
        value -= cached_gradient[i]
        if i < n_penalized:
            value += alpha * step[i]
        y[i] = value


@njit(cache=True)
def secant_control_sums(secant, plain, anchor_secant, anchor_product, sums):
    """Add one check's terms to the least-squares sums of the secant weight.

    At a scheduled exact iteration the exact secant ``secant`` (``y`` of this
    step) is known; ``plain`` is the sampled product along the step, and
    ``anchor_product`` the same sample's product along the last anchor's step
    ``s_e``, whose exact secant is ``anchor_secant``. The control variate is
    ``c = anchor_secant - anchor_product``; ``sums[0] += (secant - plain) . c`` and
    ``sums[1] += c . c``.
    """
    cross = 0.0
    square = 0.0
    for i in range(secant.shape[0]):
        control = anchor_secant[i] - anchor_product[i]
        cross += (secant[i] - plain[i]) * control
        square += control * control
    sums[0] += cross
    sums[1] += square


@njit(cache=True)
def secant_weight(sums):
    """The control variate's weight from :func:`secant_control_sums`: the
    least-squares coefficient clipped to ``[0, 1]`` (0 before any check)."""
    if sums[1] <= 0.0:
        return 0.0
    return min(1.0, max(0.0, sums[0] / sums[1]))


@njit(cache=True, nogil=True)
def add_reference_rows(
    X, sample_weight, rows, point, offset, loss, n_outputs, fit_intercept, sign,
    hessian,
):  # fmt: skip
    """``hessian += sign * sum_i s_i (a_i a_i^T) (kron) C_i`` over ``rows``: the
    loss Hessian at the parameters ``point`` in the flat parameter layout (index
    ``j K + k`` for column ``j`` of ``a_i = (x_i - offset, 1)`` and output ``k``),
    ``C_i`` the loss's output Hessian at ``a_i W``, ``s_i`` the rows' weights.

    One BLAS product per block of rows and pair of outputs ``k <= m`` (the
    Hessian is symmetric), weighted by ``C_i[k, m]``.
    """
    n_rows = rows.shape[0]
    if n_rows == 0:
        return
    n_features = offset.shape[0]
    n_columns = n_features + (1 if fit_intercept else 0)
    block_rows = min(_REFERENCE_BLOCK_ROWS, n_rows)
    block = np.empty((block_rows, n_columns))
    weighted = np.empty((block_rows, n_columns))
    curvatures = np.empty((block_rows, n_outputs, n_outputs))
    coefficients = np.empty((n_columns, n_outputs))
    for j in range(n_columns):
        for k in range(n_outputs):
            coefficients[j, k] = point[j * n_outputs + k]
    unit = np.zeros(n_outputs)
    column = np.empty(n_outputs)
    for start in range(0, n_rows, block_rows):
        size = min(block_rows, n_rows - start)
        for idx in range(size):
            a = block[idx]
            row_into(X, rows[start + idx], a[:n_features])
            for j in range(n_features):
                a[j] -= offset[j]
            if fit_intercept:
                a[n_features] = 1.0
        outputs = np.dot(block[:size], coefficients)
        for idx in range(size):
            scale = sign * sample_weight[rows[start + idx]]
            for m in range(n_outputs):
                unit[:] = 0.0
                unit[m] = 1.0
                loss_curvature_product(loss, outputs[idx], unit, column)
                for k in range(n_outputs):
                    curvatures[idx, k, m] = scale * column[k]
        for k in range(n_outputs):
            for m in range(k, n_outputs):
                for idx in range(size):
                    c = curvatures[idx, k, m]
                    for j in range(n_columns):
                        weighted[idx, j] = c * block[idx, j]
                product = np.dot(weighted[:size].T, block[:size])
                for j in range(n_columns):
                    for col in range(n_columns):
                        value = product[j, col]
                        hessian[j * n_outputs + k, col * n_outputs + m] += value
                        if m != k:
                            hessian[col * n_outputs + m, j * n_outputs + k] += value


def build_reference(X, sample_weight, rows, point, model):
    """The reference point, Hessian and weight of ``rows`` (positions in ``X``)
    for the ``"hessian"`` model's reference correction."""
    hessian = np.zeros((model.n_params, model.n_params))
    add_reference_rows(
        as_kernel_rows(X), sample_weight, rows, point, model.offset, model.loss,
        model.n_outputs, model.fit_intercept, 1.0, hessian,
    )  # fmt: skip
    return point.copy(), hessian, float(weight_sum(sample_weight, rows))


def reference_operator(reference_hessian, model):
    """The matrix that :func:`add_reference_correction` multiplies by on the CPU,
    in single precision.

    The multinomial loss's output Hessian ``diag(p) - p p^T`` has rows that sum to
    zero, so for every pair of columns the ``K x K`` block of the loss Hessian does
    too: the last output's rows and columns are minus the sums of the others', and
    the product needs only the matrix without them (exact but for rounding).
    Covtype's 7 classes: 330^2 entries instead of 385^2, a product 25% faster.
    The reduced matrix is symmetric too (the same rows as columns), so
    :func:`~sklearn_deltagrad._kernels.cpu.symmetric_product` reads one triangle
    of it. Other losses keep the whole matrix.

    Single precision halves the memory that every approximate iteration streams
    through that product, for a relative error of about 1e-7 in a term that only
    models the curvature (as the logistic loss's Grams, :func:`gram_dtype`):
    covtype, batches of 1,024 rows, removal of 1%, about 3 us less per
    approximate iteration (23.4 -> 20.0 us with a one-row sample,
    ``benchmarks.iteration_cost``). The estimator keeps ``H_r`` itself in double,
    so the requests' updates to it do not accumulate single-precision rounding.
    """
    if model.loss == MULTINOMIAL and model.n_outputs >= 2:
        kept = np.arange(model.n_params) % model.n_outputs != model.n_outputs - 1
        reference_hessian = reference_hessian[np.ix_(kept, kept)]
    return np.ascontiguousarray(reference_hessian, dtype=np.float32)


@njit(cache=True)
def add_reference_correction(reference_matrix, reference_weight, v, factor, out):
    """``out += factor * H_r v / n_r``: the reference Hessian's mean product (the
    sample's products at the reference point are subtracted by
    :func:`referenced_hessian_product`).

    ``reference_matrix`` is ``H_r`` (``n_params`` square) or the multinomial
    loss's reduced form from :func:`reference_operator`, ``n_params (K - 1) / K``
    square, which its size identifies, in double or (as the replay passes it)
    single precision. Either is symmetric, and only its lower triangle is read.
    """
    n_params = v.shape[0]
    size = reference_matrix.shape[0]
    scale = factor / reference_weight
    if size == n_params:
        full = np.empty(n_params)
        symmetric_product(reference_matrix, v, full)
        for i in range(n_params):
            out[i] += scale * full[i]
        return
    n_outputs = n_params // (n_params - size)
    last = n_outputs - 1
    # The direction relative to its last output in each column, the product's
    # last output minus the sum of the others.
    relative = np.empty(size)
    for j in range(n_params // n_outputs):
        base = j * n_outputs
        for k in range(last):
            relative[j * last + k] = v[base + k] - v[base + last]
    product = np.empty(size)
    symmetric_product(reference_matrix, relative, product)
    for j in range(n_params // n_outputs):
        base = j * n_outputs
        total = 0.0
        for k in range(last):
            value = scale * product[j * last + k]
            out[base + k] += value
            total += value
        out[base + last] -= total
