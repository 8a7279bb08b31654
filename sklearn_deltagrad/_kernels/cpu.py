"""Numba CPU kernels: per-row losses, batch gradient sums, Hessian-vector products.

Parameters are a flat float64 vector ``w`` of length ``(n_features + fit_intercept)
* n_outputs``: the coefficients laid out as a row-major ``(n_features, n_outputs)``
block, followed by the ``n_outputs`` intercepts when ``fit_intercept``. Targets are a
float64 ``(n_samples, n_target_columns)`` array: the regression targets for the squared
loss, 0/1 for the binary logistic loss, the class index for the multinomial loss.

The model is parametrised around fixed feature means ``offset`` (zeros without an
intercept): the outputs are ``(x - offset) W + b``. This is the same model with
intercept ``b - offset W``, the same objective (the intercept is not penalised), but
far better conditioned for SGD. ``offset`` is fixed at ``fit`` and never changes.

Kernels *add* sums over the given rows into ``out``; callers divide by batch sizes.
They never skip or reorder rows, so results are deterministic.
"""

import math

import numpy as np
from numba import njit

SQUARED = 0
BINARY_LOGISTIC = 1
MULTINOMIAL = 2


@njit(cache=True)
def output_shift(w, offset, n_outputs, fit_intercept, shift):
    """``shift = b - offset W``: the outputs of a row of zeros."""
    n_features = offset.shape[0]
    for k in range(n_outputs):
        shift[k] = w[n_features * n_outputs + k] if fit_intercept else 0.0
    for j in range(n_features):
        mj = offset[j]
        if mj != 0.0:
            for k in range(n_outputs):
                shift[k] -= mj * w[j * n_outputs + k]


@njit(cache=True)
def linear_outputs(X, i, w, shift, n_outputs, z):
    """Write the outputs ``z = x_i W + shift`` of row ``i`` into ``z``."""
    n_features = X.shape[1]
    for k in range(n_outputs):
        z[k] = shift[k]
    for j in range(n_features):
        xij = X[i, j]
        if xij != 0.0:
            base = j * n_outputs
            for k in range(n_outputs):
                z[k] += xij * w[base + k]


@njit(cache=True)
def paired_linear_outputs(X, i, w, v, shift_w, shift_v, n_outputs, z, u):
    """Outputs of row ``i`` for two parameter vectors in one pass over the row."""
    n_features = X.shape[1]
    for k in range(n_outputs):
        z[k] = shift_w[k]
        u[k] = shift_v[k]
    for j in range(n_features):
        xij = X[i, j]
        if xij != 0.0:
            base = j * n_outputs
            for k in range(n_outputs):
                z[k] += xij * w[base + k]
                u[k] += xij * v[base + k]


@njit(cache=True)
def sigmoid(z):
    """The logistic function, without overflow for large ``|z|``."""
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


@njit(cache=True)
def softmax_into(z, out):
    """``out = softmax(z)``, shifted by ``max(z)`` against overflow."""
    zmax = z[0]
    for k in range(1, z.shape[0]):
        if z[k] > zmax:
            zmax = z[k]
    total = 0.0
    for k in range(z.shape[0]):
        out[k] = math.exp(z[k] - zmax)
        total += out[k]
    for k in range(z.shape[0]):
        out[k] /= total


@njit(cache=True)
def loss_residual(loss, z, y_row, r):
    """Derivative of the loss with respect to the outputs ``z`` (written into ``r``)."""
    if loss == SQUARED:
        for k in range(z.shape[0]):
            r[k] = z[k] - y_row[k]
    elif loss == BINARY_LOGISTIC:
        r[0] = sigmoid(z[0]) - y_row[0]
    else:
        softmax_into(z, r)
        r[int(y_row[0])] -= 1.0


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
        softmax_into(z, out)
        dot = 0.0
        for k in range(z.shape[0]):
            dot += out[k] * u[k]
        for k in range(z.shape[0]):
            out[k] = out[k] * (u[k] - dot)


@njit(cache=True)
def add_outer(X, i, r, n_outputs, out):
    """``out[:p K] += x_i (outer) r`` in the flat parameter layout."""
    n_features = X.shape[1]
    for j in range(n_features):
        xij = X[i, j]
        if xij != 0.0:
            base = j * n_outputs
            for k in range(n_outputs):
                out[base + k] += xij * r[k]


@njit(cache=True)
def add_centered_totals(total, offset, n_outputs, fit_intercept, out):
    """Finish a sum of ``(x_i - offset, 1) (outer) r_i`` from ``total = sum_i r_i``."""
    n_features = offset.shape[0]
    for j in range(n_features):
        mj = offset[j]
        if mj != 0.0:
            for k in range(n_outputs):
                out[j * n_outputs + k] -= mj * total[k]
    if fit_intercept:
        for k in range(n_outputs):
            out[n_features * n_outputs + k] += total[k]


@njit(cache=True)
def gradient_sum(X, Y, rows, w, offset, loss, n_outputs, fit_intercept, out):
    """Add the sum over ``rows`` of the per-row loss gradients at ``w`` to ``out``."""
    shift = np.empty(n_outputs)
    z = np.empty(n_outputs)
    r = np.empty(n_outputs)
    total = np.zeros(n_outputs)
    output_shift(w, offset, n_outputs, fit_intercept, shift)
    if n_outputs == 1:
        # One output (binary logistic, single-target ridge): branch-free dot
        # products that the compiler can vectorise.
        n_features = X.shape[1]
        for idx in range(rows.shape[0]):
            i = rows[idx]
            zi = shift[0]
            for j in range(n_features):
                zi += X[i, j] * w[j]
            z[0] = zi
            loss_residual(loss, z, Y[i], r)
            ri = r[0]
            for j in range(n_features):
                out[j] += X[i, j] * ri
            total[0] += ri
    else:
        for idx in range(rows.shape[0]):
            i = rows[idx]
            linear_outputs(X, i, w, shift, n_outputs, z)
            loss_residual(loss, z, Y[i], r)
            add_outer(X, i, r, n_outputs, out)
            total += r
    add_centered_totals(total, offset, n_outputs, fit_intercept, out)


@njit(cache=True)
def hessian_vector_sum(X, Y, rows, w, v, offset, loss, n_outputs, fit_intercept, out):
    """Add the sum over ``rows`` of the per-row loss Hessians at ``w`` times ``v``."""
    shift_w = np.empty(n_outputs)
    shift_v = np.empty(n_outputs)
    z = np.empty(n_outputs)
    u = np.empty(n_outputs)
    hu = np.empty(n_outputs)
    total = np.zeros(n_outputs)
    output_shift(w, offset, n_outputs, fit_intercept, shift_w)
    output_shift(v, offset, n_outputs, fit_intercept, shift_v)
    for idx in range(rows.shape[0]):
        i = rows[idx]
        paired_linear_outputs(X, i, w, v, shift_w, shift_v, n_outputs, z, u)
        loss_curvature_product(loss, z, u, hu)
        add_outer(X, i, hu, n_outputs, out)
        total += hu
    add_centered_totals(total, offset, n_outputs, fit_intercept, out)


@njit(cache=True)
def add_penalty(w, alpha, n_penalized, out):
    """``out += alpha * P w``: the ridge penalty's gradient (intercepts excluded)."""
    for j in range(n_penalized):
        out[j] += alpha * w[j]
