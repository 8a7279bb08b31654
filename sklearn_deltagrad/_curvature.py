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
  ``alpha P``, costing ``O(rows * d)`` per product;
- ``GRAM`` (squared loss only): the exact batch Hessian, kept as the Gram matrix
  ``sum_i a_i a_i^T`` of each batch's centred rows ``a_i = (x_i - offset, 1)``; it does
  not depend on ``w``, is built once at the first request and then updated by the
  changed rows only, costing ``O(q^2 K)`` per product for ``q`` columns. The replay
  is then exact up to rounding.
"""

import numpy as np
from numba import njit

from ._kernels.cpu import (
    SQUARED,
    add_penalty,
    hessian_vector_sum,
    row_into,
    weight_sum,
)


def resolve_hessian_rows(hessian_rows, model):
    """Rows of the ``"hessian"`` model's sample for the ``hessian_rows`` parameter.

    ``"auto"``: 128 rows, and 256 for single-output models (binary logistic,
    single-target ridge), whose rows each carry one output's curvature instead of
    ``n_outputs``: measured on covtype class 2 vs rest, 128 rows gave a fidelity
    ratio of 0.066 and 256 rows 0.042, on a9a 0.073 and 0.048.
    """
    if hessian_rows == "auto":
        return 256 if model.n_outputs == 1 else 128
    return int(hessian_rows)


def resolve_curvature(name, model, hessian_rows):
    """The curvature model code for the ``curvature`` parameter.

    ``"auto"`` picks the exact ``"gram"`` model for the squared loss with at most
    ``_MAX_GRAM_COLUMNS`` columns; otherwise ``"hessian"`` when its row sample can
    have full rank (``rows * n_outputs >= 2 * n_params``, ``rows`` resolved by
    :func:`resolve_hessian_rows`), else ``"lbfgs"``.
    """
    hessian_rows = resolve_hessian_rows(hessian_rows, model)
    columns = model.n_features + int(model.fit_intercept)
    if name == "gram" and model.loss != SQUARED:
        raise ValueError(
            "curvature='gram' needs the squared loss (DeltaGradRidge): the logistic "
            "Hessian changes with the parameters."
        )
    if name != "auto":
        return CURVATURE_CODES[name]
    if model.loss == SQUARED and columns <= _MAX_GRAM_COLUMNS:
        return GRAM
    if hessian_rows * model.n_outputs >= 2 * model.n_params:
        return HESSIAN
    return LBFGS


LBFGS = 0
HESSIAN = 1
GRAM = 2

CURVATURE_CODES = {"lbfgs": LBFGS, "hessian": HESSIAN, "gram": GRAM}
CURVATURE_NAMES = {"auto", *CURVATURE_CODES}

# "auto" keeps per-batch Gram matrices only up to this many columns (with the
# intercept): T * q^2 floats, at most 32 KiB per iteration.
_MAX_GRAM_COLUMNS = 64

# A pair is kept only if s'y > _MIN_CURVATURE * s's; the middle matrix is used only
# while its condition number stays below _MAX_CONDITION.
_MIN_CURVATURE = 1e-10
_MAX_CONDITION = 1e12
_MIN_SIGMA = 1e-8


@njit(cache=True)
def lbfgs_push_pair(S, Yp, SY, SS, n_pairs, s, y):
    """Append a pair if it is usable; drop the oldest when full.

    ``SY[i, j] = s_i' y_j`` and ``SS[i, j] = s_i' s_j`` of the stored pairs are kept
    up to date here, at ``O(m d)`` per new pair, so that a factorisation costs
    ``O(m^3)`` instead of ``O(m^2 d)``. Returns ``(n_pairs, accepted)``; the middle
    matrix must be refactorised whenever a pair was accepted (also when the memory
    was full and ``n_pairs`` is unchanged).
    """
    ss = np.dot(s, s)
    if ss <= 1e-30 or np.dot(s, y) <= _MIN_CURVATURE * ss:
        return n_pairs, False
    memory = S.shape[0]
    if n_pairs == memory:
        for i in range(memory - 1):
            S[i] = S[i + 1]
            Yp[i] = Yp[i + 1]
            for j in range(memory - 1):
                SY[i, j] = SY[i + 1, j + 1]
                SS[i, j] = SS[i + 1, j + 1]
        n_pairs -= 1
    S[n_pairs] = s
    Yp[n_pairs] = y
    for j in range(n_pairs + 1):
        SY[n_pairs, j] = np.dot(s, Yp[j])
        SY[j, n_pairs] = np.dot(S[j], y)
        SS[n_pairs, j] = np.dot(s, S[j])
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
def lbfgs_product(S, Yp, first, n_pairs, sigma, middle_inv, v, out):
    """``out = B v`` for the compact L-BFGS matrix of pairs ``first..n_pairs-1``."""
    k = n_pairs - first
    projections = np.empty(2 * k)
    for i in range(k):
        projections[i] = sigma * np.dot(S[first + i], v)
        projections[k + i] = np.dot(Yp[first + i], v)
    coefficients = np.zeros(2 * k)
    for i in range(2 * k):
        for j in range(2 * k):
            coefficients[i] += middle_inv[i, j] * projections[j]
    for j in range(v.shape[0]):
        out[j] = sigma * v[j]
    for i in range(k):
        ci_s = sigma * coefficients[i]
        ci_y = coefficients[k + i]
        for j in range(v.shape[0]):
            out[j] -= ci_s * S[first + i, j] + ci_y * Yp[first + i, j]


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
    out[:] = 0.0
    sample_weight_sum = weight_sum(sample_weight, sample)
    if sample_weight_sum > 0.0:
        hessian_vector_sum(
            X,
            Y,
            sample_weight,
            sample,
            w,
            v,
            offset,
            loss,
            n_outputs,
            fit_intercept,
            out,
        )
        out *= kept_weight / sample_weight_sum
    hessian_vector_sum(
        X, Y, sample_weight, removed, w, v, offset, loss, n_outputs, fit_intercept, out
    )
    old_weight = kept_weight + weight_sum(sample_weight, removed)
    if old_weight > 0.0:
        out /= old_weight
    add_penalty(v, alpha, offset.shape[0] * n_outputs, out)


@njit(cache=True)
def add_gram_rows(X, sample_weight, rows, offset, fit_intercept, sign, gram):
    """``gram += sign * sum_i s_i a_i a_i^T`` over ``rows``, ``a_i = (x_i - offset,
    1)``, ``s_i`` the rows' weights."""
    n_features = offset.shape[0]
    n_columns = gram.shape[0]
    a = np.empty(n_columns)
    for idx in range(rows.shape[0]):
        i = rows[idx]
        row_into(X, i, a[:n_features])
        for j in range(n_features):
            a[j] -= offset[j]
        if fit_intercept:
            a[n_features] = 1.0
        scale = sign * sample_weight[i]
        for j in range(n_columns):
            aj = scale * a[j]
            if aj != 0.0:
                for k in range(n_columns):
                    gram[j, k] += aj * a[k]


@njit(cache=True, nogil=True)
def batch_grams(X, sample_weight, batch_ptr, batch_rows, offset, fit_intercept, grams):
    """The Gram matrix of every batch of a schedule, into ``grams`` (T, q, q)."""
    for t in range(grams.shape[0]):
        grams[t] = 0.0
        rows = batch_rows[batch_ptr[t] : batch_ptr[t + 1]]
        add_gram_rows(X, sample_weight, rows, offset, fit_intercept, 1.0, grams[t])


@njit(cache=True, nogil=True)
def update_grams(
    X,
    sample_weight,
    removed_ptr,
    removed_rows,
    added_ptr,
    added_rows,
    offset,
    fit_intercept,
    grams,
):
    """Take removed rows out of, and put added rows into, their batches' Grams."""
    for t in range(grams.shape[0]):
        removed = removed_rows[removed_ptr[t] : removed_ptr[t + 1]]
        added = added_rows[added_ptr[t] : added_ptr[t + 1]]
        add_gram_rows(X, sample_weight, removed, offset, fit_intercept, -1.0, grams[t])
        add_gram_rows(X, sample_weight, added, offset, fit_intercept, 1.0, grams[t])


@njit(cache=True)
def gram_product(gram, batch_weight, v, alpha, n_outputs, n_penalized, out):
    """``out = (gram / batch_weight) (x) I_K v + alpha P v``: a batch Hessian
    product."""
    n_columns = gram.shape[0]
    out[:] = 0.0
    for j in range(n_columns):
        for col in range(n_columns):
            g = gram[j, col]
            if g != 0.0:
                for k in range(n_outputs):
                    out[j * n_outputs + k] += g * v[col * n_outputs + k]
    out /= batch_weight
    add_penalty(v, alpha, n_penalized, out)
