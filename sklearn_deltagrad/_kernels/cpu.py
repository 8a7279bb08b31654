"""Numba CPU kernels: per-row losses, batch gradient sums, Hessian-vector products.

Parameters are a flat float64 vector ``w`` of length ``(n_features + fit_intercept)
* n_outputs``: the coefficients laid out as a row-major ``(n_features, n_outputs)``
block, followed by the ``n_outputs`` intercepts when ``fit_intercept``. Targets are a
float64 ``(n_samples, n_target_columns)`` array: the regression targets for the squared
loss, 0/1 for the binary logistic loss, the class index for the multinomial loss.

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
def linear_outputs(X, i, w, n_outputs, fit_intercept, z):
    """Write the outputs ``z = x_i W + b`` of row ``i`` into ``z``."""
    n_features = X.shape[1]
    offset = n_features * n_outputs
    for k in range(n_outputs):
        z[k] = w[offset + k] if fit_intercept else 0.0
    for j in range(n_features):
        xij = X[i, j]
        if xij != 0.0:
            base = j * n_outputs
            for k in range(n_outputs):
                z[k] += xij * w[base + k]


@njit(cache=True)
def loss_residual(loss, z, y_row, r):
    """Derivative of the loss with respect to the outputs ``z`` (written into ``r``)."""
    n_outputs = z.shape[0]
    if loss == SQUARED:
        for k in range(n_outputs):
            r[k] = z[k] - y_row[k]
    elif loss == BINARY_LOGISTIC:
        zk = z[0]
        if zk >= 0.0:
            prob = 1.0 / (1.0 + math.exp(-zk))
        else:
            ez = math.exp(zk)
            prob = ez / (1.0 + ez)
        r[0] = prob - y_row[0]
    else:
        zmax = z[0]
        for k in range(1, n_outputs):
            if z[k] > zmax:
                zmax = z[k]
        total = 0.0
        for k in range(n_outputs):
            r[k] = math.exp(z[k] - zmax)
            total += r[k]
        label = int(y_row[0])
        for k in range(n_outputs):
            r[k] /= total
        r[label] -= 1.0


@njit(cache=True)
def loss_curvature_product(loss, z, u, out):
    """Product of the loss's Hessian in the outputs ``z`` with ``u`` (into ``out``)."""
    n_outputs = z.shape[0]
    if loss == SQUARED:
        for k in range(n_outputs):
            out[k] = u[k]
    elif loss == BINARY_LOGISTIC:
        zk = z[0]
        if zk >= 0.0:
            prob = 1.0 / (1.0 + math.exp(-zk))
        else:
            ez = math.exp(zk)
            prob = ez / (1.0 + ez)
        out[0] = prob * (1.0 - prob) * u[0]
    else:
        zmax = z[0]
        for k in range(1, n_outputs):
            if z[k] > zmax:
                zmax = z[k]
        total = 0.0
        for k in range(n_outputs):
            out[k] = math.exp(z[k] - zmax)
            total += out[k]
        dot = 0.0
        for k in range(n_outputs):
            out[k] /= total
            dot += out[k] * u[k]
        for k in range(n_outputs):
            out[k] = out[k] * (u[k] - dot)


@njit(cache=True)
def add_outer(X, i, r, n_outputs, fit_intercept, out):
    """``out += x_i (outer) r`` in the flat parameter layout."""
    n_features = X.shape[1]
    for j in range(n_features):
        xij = X[i, j]
        if xij != 0.0:
            base = j * n_outputs
            for k in range(n_outputs):
                out[base + k] += xij * r[k]
    if fit_intercept:
        offset = n_features * n_outputs
        for k in range(n_outputs):
            out[offset + k] += r[k]


@njit(cache=True)
def gradient_sum(X, Y, rows, w, loss, n_outputs, fit_intercept, out):
    """Add the sum over ``rows`` of the per-row loss gradients at ``w`` to ``out``."""
    z = np.empty(n_outputs)
    r = np.empty(n_outputs)
    for idx in range(rows.shape[0]):
        i = rows[idx]
        linear_outputs(X, i, w, n_outputs, fit_intercept, z)
        loss_residual(loss, z, Y[i], r)
        add_outer(X, i, r, n_outputs, fit_intercept, out)


@njit(cache=True)
def hessian_vector_sum(X, Y, rows, w, v, loss, n_outputs, fit_intercept, out):
    """Add the sum over ``rows`` of the per-row loss Hessians at ``w`` times ``v``."""
    z = np.empty(n_outputs)
    u = np.empty(n_outputs)
    hu = np.empty(n_outputs)
    for idx in range(rows.shape[0]):
        i = rows[idx]
        linear_outputs(X, i, w, n_outputs, fit_intercept, z)
        linear_outputs(X, i, v, n_outputs, fit_intercept, u)
        loss_curvature_product(loss, z, u, hu)
        add_outer(X, i, hu, n_outputs, fit_intercept, out)


@njit(cache=True)
def add_penalty(w, alpha, n_penalized, out):
    """``out += alpha * P w``: the ridge penalty's gradient (intercepts excluded)."""
    for j in range(n_penalized):
        out[j] += alpha * w[j]
