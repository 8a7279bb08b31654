"""Numba CPU kernels: per-row losses, batch gradient sums, Hessian-vector products.

Parameters are a flat float64 vector ``w`` of length ``(n_features + fit_intercept)
* n_outputs``: the coefficients laid out as a row-major ``(n_features, n_outputs)``
block, followed by the ``n_outputs`` intercepts when ``fit_intercept``. Targets are a
float64 ``(n_samples, n_target_columns)`` array: the regression targets for the squared
loss, 0/1 for the binary logistic loss, the class index for the multinomial loss.
``sample_weight`` holds one float64 weight per row; sums over rows are weighted.

Rows ``X`` are a dense C-contiguous float64 or float32 array, or a :class:`CSRRows`
(the arrays of a CSR matrix, never densified). The few row primitives that touch
``X`` (``linear_outputs``, ``add_outer``, ...) are compiled for either layout; every
other kernel is written once on top of them. The batch sums of the multi-output
losses have one more layout-specific step: dense batches of 8 rows or more are
gathered in blocks of 256 float64 rows and multiplied through BLAS (``np.dot``),
sparse ones go row by row.

The model is parametrised around fixed feature means ``offset`` (zeros without an
intercept): the outputs are ``(x - offset) W + b``. This is the same model with
intercept ``b - offset W``, the same objective (the intercept is not penalised), but
far better conditioned for SGD. ``offset`` is fixed at ``fit`` and never changes;
it is applied through the outputs' shift, so sparse rows stay sparse.

Kernels *add* sums over the given rows into ``out``; callers divide by the batches'
weight sums. They never skip or reorder rows, so results are deterministic.
"""

import inspect
import math
from collections import namedtuple

import llvmlite.binding as llvm
import numpy as np
import scipy.sparse as sp
from numba import njit, types
from numba.extending import get_cython_function_address, overload

SQUARED = 0
BINARY_LOGISTIC = 1
MULTINOMIAL = 2

CSRRows = namedtuple("CSRRows", ["data", "indices", "indptr"])
CSRRows.__doc__ = "The arrays of a CSR matrix, as the kernels read sparse rows."


def as_kernel_rows(X):
    """``X`` as the kernels take it: the array itself, or the CSR matrix's arrays."""
    if sp.issparse(X):
        return CSRRows(X.data, X.indices, X.indptr)
    return X


@njit(cache=True)
def output_shift(w, offset, n_outputs, fit_intercept, shift):
    """``shift = b - offset W``: the outputs of a row of zeros."""
    n_features = offset.shape[0]
    if n_outputs == 1:
        # BLAS's dot: a sequential sum waits on each addition (8 against 1.5 us on
        # Reuters-21578's 8,315 features, once per batch sum).
        intercept = w[n_features] if fit_intercept else 0.0
        shift[0] = intercept - np.dot(offset, w[:n_features])
        return
    # One output at a time, summed in a local: accumulating into ``shift`` (or
    # skipping zero means) kept each step waiting on memory.
    for k in range(n_outputs):
        value = w[n_features * n_outputs + k] if fit_intercept else 0.0
        for j in range(n_features):
            value -= offset[j] * w[j * n_outputs + k]
        shift[k] = value


def linear_outputs(X, i, w, shift, n_outputs, z):
    """Write the outputs ``z = x_i W + shift`` of row ``i`` into ``z``."""
    raise TypeError(_COMPILED_ONLY)


def paired_linear_outputs(X, i, w, v, shift_w, shift_v, n_outputs, z, u):
    """Outputs of row ``i`` for two parameter vectors in one pass over the row."""
    raise TypeError(_COMPILED_ONLY)


def add_outer(X, i, r, n_outputs, out):
    """``out[:p K] += x_i (outer) r`` in the flat parameter layout."""
    raise TypeError(_COMPILED_ONLY)


def row_dot(X, i, w):
    """``x_i . w[:p]`` (single-output models)."""
    raise TypeError(_COMPILED_ONLY)


def add_scaled_row(X, i, a, out):
    """``out[:p] += a x_i`` (single-output models)."""
    raise TypeError(_COMPILED_ONLY)


def row_square_norm(X, i):
    """``x_i . x_i``."""
    raise TypeError(_COMPILED_ONLY)


def row_into(X, i, out):
    """Write row ``i`` densely into ``out`` (of length ``p``)."""
    raise TypeError(_COMPILED_ONLY)


_COMPILED_ONLY = "row primitives are compiled into the kernels, not called from Python"


def _dense_linear_outputs(X, i, w, shift, n_outputs, z):
    for k in range(n_outputs):
        z[k] = shift[k]
    for j in range(X.shape[1]):
        xij = X[i, j]
        if xij != 0.0:
            base = j * n_outputs
            for k in range(n_outputs):
                z[k] += xij * w[base + k]


def _csr_linear_outputs(X, i, w, shift, n_outputs, z):
    for k in range(n_outputs):
        z[k] = shift[k]
    for e in range(X.indptr[i], X.indptr[i + 1]):
        xij = X.data[e]
        base = X.indices[e] * n_outputs
        for k in range(n_outputs):
            z[k] += xij * w[base + k]


def _dense_paired_linear_outputs(X, i, w, v, shift_w, shift_v, n_outputs, z, u):
    for k in range(n_outputs):
        z[k] = shift_w[k]
        u[k] = shift_v[k]
    for j in range(X.shape[1]):
        xij = X[i, j]
        if xij != 0.0:
            base = j * n_outputs
            for k in range(n_outputs):
                z[k] += xij * w[base + k]
                u[k] += xij * v[base + k]


def _csr_paired_linear_outputs(X, i, w, v, shift_w, shift_v, n_outputs, z, u):
    for k in range(n_outputs):
        z[k] = shift_w[k]
        u[k] = shift_v[k]
    for e in range(X.indptr[i], X.indptr[i + 1]):
        xij = X.data[e]
        base = X.indices[e] * n_outputs
        for k in range(n_outputs):
            z[k] += xij * w[base + k]
            u[k] += xij * v[base + k]


def _dense_add_outer(X, i, r, n_outputs, out):
    for j in range(X.shape[1]):
        xij = X[i, j]
        if xij != 0.0:
            base = j * n_outputs
            for k in range(n_outputs):
                out[base + k] += xij * r[k]


def _csr_add_outer(X, i, r, n_outputs, out):
    for e in range(X.indptr[i], X.indptr[i + 1]):
        xij = X.data[e]
        base = X.indices[e] * n_outputs
        for k in range(n_outputs):
            out[base + k] += xij * r[k]


def _dense_row_dot(X, i, w):
    # Branch-free, so that the compiler can vectorise it.
    total = 0.0
    for j in range(X.shape[1]):
        total += X[i, j] * w[j]
    return total


def _csr_row_dot(X, i, w):
    total = 0.0
    for e in range(X.indptr[i], X.indptr[i + 1]):
        total += X.data[e] * w[X.indices[e]]
    return total


def _dense_row_square_norm(X, i):
    total = 0.0
    for j in range(X.shape[1]):
        xij = np.float64(X[i, j])  # float32 rows: square in float64
        total += xij * xij
    return total


def _csr_row_square_norm(X, i):
    total = 0.0
    for e in range(X.indptr[i], X.indptr[i + 1]):
        xij = np.float64(X.data[e])
        total += xij * xij
    return total


def _dense_add_scaled_row(X, i, a, out):
    for j in range(X.shape[1]):
        out[j] += X[i, j] * a


def _csr_add_scaled_row(X, i, a, out):
    for e in range(X.indptr[i], X.indptr[i + 1]):
        out[X.indices[e]] += X.data[e] * a


def _dense_row_into(X, i, out):
    for j in range(out.shape[0]):
        out[j] = X[i, j]


def _csr_row_into(X, i, out):
    for j in range(out.shape[0]):
        out[j] = 0.0
    for e in range(X.indptr[i], X.indptr[i + 1]):
        out[X.indices[e]] += X.data[e]


def _register_row_primitive(primitive, dense, csr):
    """Compile ``primitive`` as ``dense`` for 2-D arrays and ``csr`` for CSRRows,
    inlined where it is called rather than called once per row (a9a's CSR batch
    gradient: 275 against 337 us)."""

    def select(X, *args):
        return dense if isinstance(X, types.Array) else csr

    select.__signature__ = inspect.signature(primitive)
    overload(primitive, inline="always", jit_options={"cache": True})(select)


for _primitive, _dense, _csr in [
    (linear_outputs, _dense_linear_outputs, _csr_linear_outputs),
    (paired_linear_outputs, _dense_paired_linear_outputs, _csr_paired_linear_outputs),
    (add_outer, _dense_add_outer, _csr_add_outer),
    (row_dot, _dense_row_dot, _csr_row_dot),
    (add_scaled_row, _dense_add_scaled_row, _csr_add_scaled_row),
    (row_square_norm, _dense_row_square_norm, _csr_row_square_norm),
    (row_into, _dense_row_into, _csr_row_into),
]:
    _register_row_primitive(_primitive, _dense, _csr)


@njit(cache=True)
def sigmoid(z):
    """The logistic function, without overflow for large ``|z|``."""
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


@njit(cache=True)
def _shifted_exponentials(z, out):
    """``out = exp(z - max(z))`` (no overflow); returns ``sum(out)``."""
    zmax = z[0]
    for k in range(1, z.shape[0]):
        if z[k] > zmax:
            zmax = z[k]
    total = 0.0
    for k in range(z.shape[0]):
        out[k] = math.exp(z[k] - zmax)
        total += out[k]
    return total


@njit(cache=True)
def softmax_into(z, out):
    """``out = softmax(z)``, shifted by ``max(z)`` against overflow."""
    total = _shifted_exponentials(z, out)
    for k in range(z.shape[0]):
        out[k] /= total


@njit(cache=True)
def loss_residual(loss, z, Y, i, r):
    """Derivative of the loss with respect to the outputs ``z`` of row ``i``, whose
    targets are ``Y[i]`` (written into ``r``). Indexing ``Y`` rather than taking the
    row as a view spares the view's reference counting (about a tenth of a binary
    batch gradient's time)."""
    if loss == SQUARED:
        for k in range(z.shape[0]):
            r[k] = z[k] - Y[i, k]
    elif loss == BINARY_LOGISTIC:
        r[0] = sigmoid(z[0]) - Y[i, 0]
    else:
        softmax_into(z, r)
        r[int(Y[i, 0])] -= 1.0


@njit(cache=True)
def loss_curvature_product(loss, z, u, out):
    """Product of the loss's Hessian in the outputs ``z`` with ``u`` (into ``out``)."""
    if loss == SQUARED:
        for k in range(z.shape[0]):
            out[k] = u[k]
    elif loss == BINARY_LOGISTIC:
        prob = sigmoid(z[0])
        out[0] = prob * (1.0 - prob) * u[0]
    else:
        # softmax_into's arithmetic, its normalising loop also summing p . u: the
        # same bits with one loop less over the outputs (about 30% less time per
        # row on covtype's 7 classes, where this is a third of a Hessian sample's
        # cost next to the two BLAS products).
        total = _shifted_exponentials(z, out)
        dot = 0.0
        for k in range(z.shape[0]):
            out[k] /= total
            dot += out[k] * u[k]
        for k in range(z.shape[0]):
            out[k] = out[k] * (u[k] - dot)


# ------------------------------------------------------------ dense batch sums
# Dense rows go through BLAS in blocks of rows: gathered into a float64 block, one
# matrix product for the outputs and one for the sum of the rows' outer products
# (batch gradients of 4,096 rows, against row by row: about 2.5x faster on
# covtype's 7 classes, 1.35x on its binary task, 1.5x on a9a). Fewer than 8 rows
# (most batches' changed rows) and CSR rows stay row by row: side by side, one
# block breaks even with the row loop at 8 rows on covtype and 4 on a9a, and at 16
# rows takes 12 against 15 us (covtype) and 8 against 16 us (a9a) for a gradient.
_BLOCK_ROWS = 256
_MIN_BLOCK_ROWS = 8


def add_output_gradients(
    X, Y, sample_weight, rows, w, shift, loss, n_outputs, out, total
):
    """``out[:p K] += sum_i s_i x_i (outer) r_i`` and ``total += sum_i s_i r_i`` for
    the loss derivatives ``r_i`` at the outputs ``x_i W + shift``."""
    raise TypeError(_COMPILED_ONLY)


def add_output_hessian_products(
    X, Y, sample_weight, rows, w, v, shift_w, shift_v, loss, n_outputs, out, total
):
    """As :func:`add_output_gradients` for ``r_i`` the loss's output Hessian at
    ``x_i W + shift_w`` times the outputs ``x_i V + shift_v`` of ``v``."""
    raise TypeError(_COMPILED_ONLY)


def add_output_hessian_differences(
    X, Y, sample_weight, rows, w, reference, v, shift_w, shift_r, shift_v, beta,
    loss, n_outputs, out, total,
):  # fmt: skip
    """As :func:`add_output_hessian_products` for ``r_i`` the difference of the
    output Hessians at ``x_i W + shift_w`` and (times ``beta``) at ``x_i R +
    shift_r``, times the outputs of ``v``: one pass over the rows for both."""
    raise TypeError(_COMPILED_ONLY)


@njit(cache=True)
def _rowwise_output_gradients(
    X, Y, sample_weight, rows, w, shift, loss, n_outputs, out, total
):
    z = np.empty(n_outputs)
    r = np.empty(n_outputs)
    for idx in range(rows.shape[0]):
        i = rows[idx]
        linear_outputs(X, i, w, shift, n_outputs, z)
        loss_residual(loss, z, Y, i, r)
        r *= sample_weight[i]
        add_outer(X, i, r, n_outputs, out)
        total += r


@njit(cache=True)
def _rowwise_output_hessian_differences(
    X, Y, sample_weight, rows, w, reference, v, shift_w, shift_r, shift_v, beta,
    loss, n_outputs, out, total,
):  # fmt: skip
    z = np.empty(n_outputs)
    u = np.empty(n_outputs)
    hu = np.empty(n_outputs)
    z_ref = np.empty(n_outputs)
    hu_ref = np.empty(n_outputs)
    for idx in range(rows.shape[0]):
        i = rows[idx]
        paired_linear_outputs(X, i, w, v, shift_w, shift_v, n_outputs, z, u)
        loss_curvature_product(loss, z, u, hu)
        if beta != 0.0:
            linear_outputs(X, i, reference, shift_r, n_outputs, z_ref)
            loss_curvature_product(loss, z_ref, u, hu_ref)
            for k in range(n_outputs):
                hu[k] -= beta * hu_ref[k]
        hu *= sample_weight[i]
        add_outer(X, i, hu, n_outputs, out)
        total += hu


@njit(cache=True)
def _rowwise_output_hessian_products(
    X, Y, sample_weight, rows, w, v, shift_w, shift_v, loss, n_outputs, out, total
):
    _rowwise_output_hessian_differences(
        X, Y, sample_weight, rows, w, w, v, shift_w, shift_w, shift_v, 0.0, loss,
        n_outputs, out, total,
    )  # fmt: skip


@njit(cache=True)
def _csr_output_gradients(
    X, Y, sample_weight, rows, w, shift, loss, n_outputs, out, total
):
    if n_outputs > 1:
        _rowwise_output_gradients(
            X, Y, sample_weight, rows, w, shift, loss, n_outputs, out, total
        )
        return
    # One output (binary logistic, single-target ridge): no loop over outputs, and
    # the residual in scalars (a9a's CSR rows, 14 non-zeros each, a batch of 4,096:
    # 186 us, against 275 us through loss_residual's arrays). Written out as in
    # _single_output_residuals: a shared scalar function took 211 against 188 us.
    running = total[0]
    for idx in range(rows.shape[0]):
        i = rows[idx]
        z = shift[0] + row_dot(X, i, w)
        if loss == BINARY_LOGISTIC:
            residual = sigmoid(z) - Y[i, 0]
        else:
            residual = z - Y[i, 0]
        value = residual * sample_weight[i]
        add_scaled_row(X, i, value, out)
        running += value
    total[0] = running


@njit(cache=True)
def _gather_block(X, rows, start, block):
    """Rows ``rows[start:start + len(block)]`` of dense ``X`` into ``block``, as
    float64."""
    for idx in range(block.shape[0]):
        i = rows[start + idx]
        for j in range(X.shape[1]):
            block[idx, j] = X[i, j]


@njit(cache=True)
def _add_block_outer(block, residuals, out):
    """``out[:p K] += block' residuals`` in the flat parameter layout."""
    n_outputs = residuals.shape[1]
    products = np.dot(block.T, residuals)
    for j in range(products.shape[0]):
        for k in range(n_outputs):
            out[j * n_outputs + k] += products[j, k]


# The per-row step of the blocked sums, from the block's outputs to each row's
# weighted vector (added to ``total``). The gradients of the multinomial and
# single-output losses have loops of their own in scalars and indices, with the
# arithmetic of loss_residual in the same order (the same bits): the
# generic loop's row views and small arrays cost more than the arithmetic there
# (covtype's batch gradient of 4,096 random rows, side by side: 1.0-1.2 against
# 0.65-0.8 ms for two classes, 2.2-2.3 against 1.9-2.0 ms for 7).
@njit(cache=True)
def _single_output_residuals(
    loss, outputs, shift, Y, sample_weight, rows, start, vectors, total
):  # fmt: skip
    running = total[0]
    for idx in range(vectors.shape[0]):
        i = rows[start + idx]
        z = outputs[idx, 0] + shift
        if loss == BINARY_LOGISTIC:
            residual = sigmoid(z) - Y[i, 0]
        else:
            residual = z - Y[i, 0]
        value = residual * sample_weight[i]
        vectors[idx, 0] = value
        running += value
    total[0] = running


@njit(cache=True)
def _softmax_into_row(outputs, idx, first, shifts, target, row):
    """``target[row] = exp(z - max(z))`` for the outputs ``z = outputs[idx,
    first:first + K] + shifts[first:first + K]``; returns their sum (the first
    step of :func:`softmax_into`, the same bits)."""
    n_outputs = target.shape[1]
    zmax = outputs[idx, first] + shifts[first]
    for k in range(1, n_outputs):
        z = outputs[idx, first + k] + shifts[first + k]
        if z > zmax:
            zmax = z
    denominator = 0.0
    for k in range(n_outputs):
        value = math.exp((outputs[idx, first + k] + shifts[first + k]) - zmax)
        target[row, k] = value
        denominator += value
    return denominator


@njit(cache=True)
def _multinomial_residuals(
    outputs, shifts, Y, sample_weight, rows, start, vectors, total
):  # fmt: skip
    n_outputs = vectors.shape[1]
    for idx in range(vectors.shape[0]):
        i = rows[start + idx]
        denominator = _softmax_into_row(outputs, idx, 0, shifts, vectors, idx)
        label = int(Y[i, 0])
        weight = sample_weight[i]
        for k in range(n_outputs):
            value = vectors[idx, k] / denominator
            if k == label:
                value -= 1.0
            value *= weight
            vectors[idx, k] = value
            total[k] += value


@njit(cache=True)
def _generic_row_vectors(
    outputs, shifts, Y, sample_weight, rows, start, loss, hessian, with_reference,
    beta, vectors, total,
):  # fmt: skip
    """The other row steps: several targets, and every Hessian product (whose
    arrays are reused across the block's rows: a loop of its own gained only about
    3% of a 64-row sample)."""
    n_outputs = vectors.shape[1]
    z = np.empty(n_outputs)
    u = np.empty(n_outputs)
    r = np.empty(n_outputs)
    z_ref = np.empty(n_outputs)
    r_ref = np.empty(n_outputs)
    for idx in range(vectors.shape[0]):
        i = rows[start + idx]
        for k in range(n_outputs):
            z[k] = outputs[idx, k] + shifts[k]
        if hessian:
            for k in range(n_outputs):
                u[k] = outputs[idx, n_outputs + k] + shifts[n_outputs + k]
            loss_curvature_product(loss, z, u, r)
            if with_reference:
                for k in range(n_outputs):
                    z_ref[k] = outputs[idx, 2 * n_outputs + k]
                    z_ref[k] += shifts[2 * n_outputs + k]
                loss_curvature_product(loss, z_ref, u, r_ref)
                for k in range(n_outputs):
                    r[k] -= beta * r_ref[k]
        else:
            loss_residual(loss, z, Y, i, r)
        for k in range(n_outputs):
            vectors[idx, k] = r[k] * sample_weight[i]
            total[k] += vectors[idx, k]


@njit(cache=True)
def _blocked_output_sums(
    X, Y, sample_weight, rows, columns, shifts, loss, n_outputs, hessian, beta, out,
    total,
):  # fmt: skip
    """The dense batch sums of the primitives above, block by block of rows.

    ``columns`` (``p x K``; ``p x 2K`` with a direction ``v`` beside the
    parameters; ``p x 3K`` with a reference point after it) and ``shifts`` give the
    outputs by one matrix product per block; each row's vector (the loss
    derivative, or with ``hessian`` the output Hessian times the direction's
    outputs, less ``beta`` times the reference point's) is weighted, added to
    ``total``, and the block's outer products to ``out`` by a second product.
    """
    n_rows = rows.shape[0]
    with_reference = columns.shape[1] == 3 * n_outputs
    block_buffer = np.empty((min(_BLOCK_ROWS, n_rows), X.shape[1]))
    vector_buffer = np.empty((block_buffer.shape[0], n_outputs))
    for start in range(0, n_rows, _BLOCK_ROWS):
        size = min(_BLOCK_ROWS, n_rows - start)
        block = block_buffer[:size]
        vectors = vector_buffer[:size]
        _gather_block(X, rows, start, block)
        outputs = np.dot(block, columns)
        if loss == MULTINOMIAL and not hessian:
            _multinomial_residuals(
                outputs, shifts, Y, sample_weight, rows, start, vectors, total
            )
        elif n_outputs == 1 and not hessian:
            _single_output_residuals(
                loss, outputs, shifts[0], Y, sample_weight, rows, start, vectors,
                total,
            )  # fmt: skip
        else:
            _generic_row_vectors(
                outputs, shifts, Y, sample_weight, rows, start, loss, hessian,
                with_reference, beta, vectors, total,
            )  # fmt: skip
        _add_block_outer(block, vectors, out)


@njit(cache=True)
def _put_coefficients(w, n_outputs, columns, first):
    """Columns ``first .. first + K - 1`` of ``columns`` (``p x ...``) = the
    ``p x K`` coefficient block of the flat parameter vector ``w``."""
    for j in range(columns.shape[0]):
        for k in range(n_outputs):
            columns[j, first + k] = w[j * n_outputs + k]


@njit(cache=True)
def _dense_output_gradients(
    X, Y, sample_weight, rows, w, shift, loss, n_outputs, out, total
):
    if rows.shape[0] < _MIN_BLOCK_ROWS:
        _rowwise_output_gradients(
            X, Y, sample_weight, rows, w, shift, loss, n_outputs, out, total
        )
        return
    columns = np.empty((X.shape[1], n_outputs))
    _put_coefficients(w, n_outputs, columns, 0)
    _blocked_output_sums(
        X, Y, sample_weight, rows, columns, shift, loss, n_outputs, False, 0.0, out,
        total,
    )  # fmt: skip


@njit(cache=True)
def _dense_output_hessian_products(
    X, Y, sample_weight, rows, w, v, shift_w, shift_v, loss, n_outputs, out, total
):
    if rows.shape[0] < _MIN_BLOCK_ROWS:
        _rowwise_output_hessian_products(
            X,
            Y,
            sample_weight,
            rows,
            w,
            v,
            shift_w,
            shift_v,
            loss,
            n_outputs,
            out,
            total,
        )
        return
    # One product gives the outputs of both vectors.
    columns = np.empty((X.shape[1], 2 * n_outputs))
    _put_coefficients(w, n_outputs, columns, 0)
    _put_coefficients(v, n_outputs, columns, n_outputs)
    shifts = np.concatenate((shift_w, shift_v))
    _blocked_output_sums(
        X, Y, sample_weight, rows, columns, shifts, loss, n_outputs, True, 0.0, out,
        total,
    )  # fmt: skip


@njit(cache=True)
def _dense_output_hessian_differences(
    X, Y, sample_weight, rows, w, reference, v, shift_w, shift_r, shift_v, beta,
    loss, n_outputs, out, total,
):  # fmt: skip
    if rows.shape[0] < _MIN_BLOCK_ROWS:
        _rowwise_output_hessian_differences(
            X, Y, sample_weight, rows, w, reference, v, shift_w, shift_r, shift_v,
            beta, loss, n_outputs, out, total,
        )  # fmt: skip
        return
    # One gather and two products for both points (the reference correction's
    # difference): about half the cost of two Hessian samples.
    columns = np.empty((X.shape[1], 3 * n_outputs))
    _put_coefficients(w, n_outputs, columns, 0)
    _put_coefficients(v, n_outputs, columns, n_outputs)
    _put_coefficients(reference, n_outputs, columns, 2 * n_outputs)
    shifts = np.concatenate((shift_w, shift_v, shift_r))
    _blocked_output_sums(
        X, Y, sample_weight, rows, columns, shifts, loss, n_outputs, True, beta, out,
        total,
    )  # fmt: skip


# Registered like the row primitives (the compiled functions' Python sources).
for _primitive, _dense, _csr in [
    (add_output_gradients, _dense_output_gradients, _csr_output_gradients),
    (
        add_output_hessian_products,
        _dense_output_hessian_products,
        _rowwise_output_hessian_products,
    ),
    (
        add_output_hessian_differences,
        _dense_output_hessian_differences,
        _rowwise_output_hessian_differences,
    ),
]:
    _register_row_primitive(_primitive, _dense.py_func, _csr.py_func)


@njit(cache=True)
def add_centered_totals(total, offset, n_outputs, fit_intercept, out):
    """Finish a sum of ``(x_i - offset, 1) (outer) r_i`` from ``total = sum_i r_i``."""
    n_features = offset.shape[0]
    # Branch-free, and one output on its own, so that the compiler vectorises the
    # pass (a zero mean subtracts 0).
    if n_outputs == 1:
        value = total[0]
        for j in range(n_features):
            out[j] -= offset[j] * value
    else:
        for j in range(n_features):
            mj = offset[j]
            for k in range(n_outputs):
                out[j * n_outputs + k] -= mj * total[k]
    if fit_intercept:
        for k in range(n_outputs):
            out[n_features * n_outputs + k] += total[k]


# BLAS's symmetric matrix-vector products (dsymv, ssymv) from SciPy's Cython BLAS,
# which np.dot's BLAS is too. They are bound by symbol names (an address in the
# compiled code would keep Numba from caching every function that calls them).
_DSYMV = "sklearn_deltagrad_dsymv"
_SSYMV = "sklearn_deltagrad_ssymv"
for _symbol, _name in ((_DSYMV, "dsymv"), (_SSYMV, "ssymv")):
    llvm.add_symbol(
        _symbol, get_cython_function_address("scipy.linalg.cython_blas", _name)
    )
_dsymv = types.ExternalFunction(_DSYMV, types.void(*([types.voidptr] * 10)))
_ssymv = types.ExternalFunction(_SSYMV, types.void(*([types.voidptr] * 10)))


@njit(cache=True)
def symmetric_product(matrix, v, out):
    """``out = matrix v`` for a symmetric float64 or float32 ``matrix``.

    BLAS's ``dsymv`` reads the lower triangle only (of the row-major matrix,
    which is the upper one of BLAS's column-major view), so half the memory of
    ``np.dot``'s ``dgemv``: covtype's 330 x 330 reference matrix (871 kB, about
    the size of a core's L2 cache) in 7.8 against 13.3 us, with 512 kB of other
    memory traffic between products as in the replay. A float32 ``matrix`` goes
    through ``ssymv``, ``v`` rounded to single precision and the product summed
    in it (relative error about 1e-7), reading half that memory again. ``v`` and
    ``out`` are contiguous float64 vectors; a matrix that is not C-contiguous is
    copied first.
    """
    n = matrix.shape[0]
    if n == 0:
        return
    matrix = np.ascontiguousarray(matrix)
    # Fortran arguments by pointer: n, lda, incx = incy; alpha, beta; uplo "U".
    sizes = np.empty(3, np.int32)
    sizes[0] = n
    sizes[1] = n
    sizes[2] = 1
    upper = np.empty(1, np.uint8)
    upper[0] = 85
    scalars = np.empty(2, matrix.dtype)
    scalars[0] = 1.0
    scalars[1] = 0.0
    if matrix.itemsize == 8:
        _dsymv(
            upper.ctypes, sizes.ctypes, scalars.ctypes, matrix.ctypes,
            sizes[1:].ctypes, v.ctypes, sizes[2:].ctypes, scalars[1:].ctypes,
            out.ctypes, sizes[2:].ctypes,
        )  # fmt: skip
        return
    single_v = v.astype(np.float32)
    single_out = np.empty(n, np.float32)
    _ssymv(
        upper.ctypes, sizes.ctypes, scalars.ctypes, matrix.ctypes, sizes[1:].ctypes,
        single_v.ctypes, sizes[2:].ctypes, scalars[1:].ctypes, single_out.ctypes,
        sizes[2:].ctypes,
    )  # fmt: skip
    for i in range(n):
        out[i] = single_out[i]


@njit(cache=True)
def weight_sum(sample_weight, rows):
    """The total weight of ``rows`` (summed in order, so that it is reproducible)."""
    total = 0.0
    for idx in range(rows.shape[0]):
        total += sample_weight[rows[idx]]
    return total


@njit(cache=True)
def gradient_sum(
    X, Y, sample_weight, rows, w, offset, loss, n_outputs, fit_intercept, out
):
    """Add the weighted sum over ``rows`` of the loss gradients at ``w`` to ``out``."""
    shift = np.empty(n_outputs)
    total = np.zeros(n_outputs)
    output_shift(w, offset, n_outputs, fit_intercept, shift)
    add_output_gradients(
        X, Y, sample_weight, rows, w, shift, loss, n_outputs, out, total
    )
    add_centered_totals(total, offset, n_outputs, fit_intercept, out)


@njit(cache=True)
def hessian_vector_sum(
    X, Y, sample_weight, rows, w, v, offset, loss, n_outputs, fit_intercept, out
):
    """Add the weighted sum over ``rows`` of the loss Hessians at ``w`` times ``v``."""
    hessian_difference_sum(
        X, Y, sample_weight, rows, w, w, 0.0, v, offset, loss, n_outputs,
        fit_intercept, out,
    )  # fmt: skip


@njit(cache=True)
def hessian_difference_sum(
    X, Y, sample_weight, rows, w, reference, beta, v, offset, loss, n_outputs,
    fit_intercept, out,
):  # fmt: skip
    """Add the weighted sum over ``rows`` of ``(H_i(w) - beta H_i(reference)) v``,
    ``H_i`` the loss Hessians (``reference`` unused when ``beta`` is 0)."""
    shift_w = np.empty(n_outputs)
    shift_v = np.empty(n_outputs)
    total = np.zeros(n_outputs)
    output_shift(w, offset, n_outputs, fit_intercept, shift_w)
    output_shift(v, offset, n_outputs, fit_intercept, shift_v)
    if beta == 0.0:
        add_output_hessian_products(
            X, Y, sample_weight, rows, w, v, shift_w, shift_v, loss, n_outputs, out,
            total,
        )  # fmt: skip
    else:
        shift_r = np.empty(n_outputs)
        output_shift(reference, offset, n_outputs, fit_intercept, shift_r)
        add_output_hessian_differences(
            X, Y, sample_weight, rows, w, reference, v, shift_w, shift_r, shift_v,
            beta, loss, n_outputs, out, total,
        )  # fmt: skip
    add_centered_totals(total, offset, n_outputs, fit_intercept, out)


@njit(cache=True)
def add_penalty(w, alpha, n_penalized, out):
    """``out += alpha * P w``: the ridge penalty's gradient (intercepts excluded)."""
    for j in range(n_penalized):
        out[j] += alpha * w[j]


@njit(cache=True, nogil=True)
def centered_square_norms(X, offset, fit_intercept, out):
    """``out[i] = ||(x_i - offset, 1)||^2`` for every row (the intercept column
    only when ``fit_intercept``), expanded so that sparse rows stay sparse."""
    base = np.dot(offset, offset) + (1.0 if fit_intercept else 0.0)
    for i in range(out.shape[0]):
        out[i] = row_square_norm(X, i) - 2.0 * row_dot(X, i, offset) + base
