"""Cached mini-batch SGD: runs a schedule and records every iterate and gradient.

The same loop serves ``fit`` (from iteration 0 and zero parameters) and the exact
reference retrain after a change (from the first changed iteration, whose iterate is
unchanged). On the CPU the whole loop over iterations is one Numba function.
"""

from dataclasses import dataclass

import numpy as np
from numba import njit

from ._backend import cuda_loops
from ._curvature import GRAM, gram_nbytes
from ._kernels.cpu import (
    BINARY_LOGISTIC,
    MULTINOMIAL,
    SQUARED,
    add_penalty,
    as_kernel_rows,
    centered_square_norms,
    gradient_sum,
    weight_sum,
)
from ._schedule import id_dtype


@dataclass(frozen=True)
class LinearModel:
    """What the kernels need to know about the model: loss, outputs, penalty.

    ``offset`` holds the feature means the parametrisation is centred on (zeros
    without an intercept), see :mod:`sklearn_deltagrad._kernels.cpu`.
    """

    loss: int
    n_outputs: int
    fit_intercept: bool
    alpha: float
    offset: np.ndarray

    @property
    def n_features(self):
        return self.offset.shape[0]

    @property
    def n_columns(self):
        """Columns of a centred row ``(x - offset, 1)`` (the 1 with an intercept)."""
        return self.n_features + int(self.fit_intercept)

    @property
    def n_params(self):
        return self.n_columns * self.n_outputs

    @property
    def n_penalized(self):
        return self.n_features * self.n_outputs

    def split(self, w):
        """``(coef, intercept)`` of a flat parameter vector, as in sklearn."""
        p, k = self.n_features, self.n_outputs
        coef = w[: p * k].reshape(p, k).T.copy()
        intercept = w[p * k :] - self.offset @ coef.T if self.fit_intercept else None
        return coef, np.zeros(k) if intercept is None else intercept


@dataclass
class TrainingCache:
    """Per-iteration iterates and loss gradients of the current training run.

    Attributes
    ----------
    weights : ndarray of shape (n_iterations, n_params)
        ``w_t``, the parameters at which iteration ``t`` evaluated its gradient.
    gradients : ndarray of shape (n_iterations, n_params)
        Mean loss-only gradient of iteration ``t``'s batch at ``w_t`` (exact, or the
        replay's estimate).
    exact : ndarray of shape (n_iterations,), bool
        Whether ``gradients[t]`` was computed exactly. Curvature pairs are formed
        only at exact entries.
    final : ndarray of shape (n_params,)
        The parameters after the last iteration: the model.
    grams : ndarray of shape (n_iterations, q + 1, q) or None
        Per-batch Gram matrices of the ``"gram"`` curvature model, each with its
        pending centring vector in its last row (see ``gram_shape``), built at ``fit``
        (or at the first request that uses it) and kept up to date by every later
        request that uses them (a request with another model drops them).
    gram_points : ndarray of shape (n_iterations, n_params) or None
        For the logistic loss, the iterates at which ``grams`` weight their rows
        (the cache's ``weights`` when they were built); ``None`` for the squared
        loss, whose Grams do not depend on the parameters.
    reference_point : ndarray of shape (n_params,) or None
        The ``"hessian"`` model's reference point (the model at ``fit``), see
        ``reference_correction``.
    reference_hessian : ndarray of shape (n_params, n_params) or None
        The loss Hessian at ``reference_point`` summed over the current training
        rows (weighted; without the penalty), kept current by every request.
    reference_weight : float
        The total weight of the rows summed in ``reference_hessian``.
    """

    weights: np.ndarray
    gradients: np.ndarray
    exact: np.ndarray
    final: np.ndarray
    grams: np.ndarray | None = None
    gram_points: np.ndarray | None = None
    reference_point: np.ndarray | None = None
    reference_hessian: np.ndarray | None = None
    reference_weight: float = 0.0

    @classmethod
    def empty(cls, n_iterations, n_params):
        return cls(
            weights=np.zeros((n_iterations, n_params)),
            gradients=np.zeros((n_iterations, n_params)),
            exact=np.ones(n_iterations, dtype=bool),
            final=np.zeros(n_params),
        )

    def copy(self):
        return self.successor(self.weights.shape[0])

    def successor(self, n_kept, keep_grams=True, keep_reference=True):
        """A new cache that shares no memory with this one: iterations before
        ``n_kept`` are copied, the rows of the later ones are left for the caller
        to write (allocated, not filled: a replay writes each of them once). The
        Grams are copied, or dropped with ``keep_grams=False``, and the reference
        Hessian alike with ``keep_reference``."""
        keep_grams = keep_grams and self.grams is not None
        weights = np.empty_like(self.weights)
        gradients = np.empty_like(self.gradients)
        weights[:n_kept] = self.weights[:n_kept]
        gradients[:n_kept] = self.gradients[:n_kept]
        return TrainingCache(
            weights,
            gradients,
            self.exact.copy(),
            self.final.copy(),
            self.grams.copy() if keep_grams else None,
            (
                self.gram_points.copy()
                if keep_grams and self.gram_points is not None
                else None
            ),
            **self._reference_copy(keep_reference),
        )

    def sharing_trajectory(self, keep_reference=True):
        """A new cache with this one's iterates and gradients (not copied: an
        in-place request rewrites them), copies of the flags, the final parameters
        and (with ``keep_reference``) the reference Hessian, and no Grams (a
        request sets them)."""
        return TrainingCache(
            self.weights,
            self.gradients,
            self.exact.copy(),
            self.final.copy(),
            **self._reference_copy(keep_reference),
        )

    def _reference_copy(self, keep):
        # Copied (n_params^2 floats, 1.2 MB on covtype's 7 classes): a request
        # updates its successor's for the changed rows.
        if not keep or self.reference_hessian is None:
            return {}
        return {
            "reference_point": self.reference_point.copy(),
            "reference_hessian": self.reference_hessian.copy(),
            "reference_weight": self.reference_weight,
        }

    @property
    def nbytes(self):
        return (
            self.weights.nbytes
            + self.gradients.nbytes
            + self.exact.nbytes
            + self.final.nbytes
            + (0 if self.grams is None else self.grams.nbytes)
            + (0 if self.gram_points is None else self.gram_points.nbytes)
            + sum(
                0 if array is None else array.nbytes
                for array in (self.reference_point, self.reference_hessian)
            )
        )


def estimate_cache_nbytes(
    n_iterations, n_samples, n_epochs, model, curvature=None, reference=False
):
    """Bytes of the cache and schedule that a fit of ``model`` will allocate.

    ``2 * T * n_params * 8`` for the iterates and gradients, ``T`` exactness flags, the
    final parameters, and the schedule (a row id per row and epoch, of the type that
    ``make_schedule`` gives them, ``T + 1`` batch pointers, ``T`` learning rates). With
    the ``"gram"`` curvature model, the ``T * (q + 1) * q`` Gram arrays are included
    (float32 for the logistic loss, see ``gram_nbytes``), and for the logistic loss
    the ``T * n_params`` iterates they are weighted at. With ``reference``, the
    ``"hessian"`` model's reference Hessian and point (``n_params^2 + n_params``
    float64).
    """
    n_params = model.n_params
    nbytes = 2 * n_iterations * n_params * 8 + n_iterations + n_params * 8
    id_bytes = np.dtype(id_dtype(n_samples - 1)).itemsize
    nbytes += n_samples * n_epochs * id_bytes + (n_iterations + 1) * 8
    nbytes += n_iterations * 8
    if curvature == GRAM:
        nbytes += gram_nbytes(n_iterations, model.n_columns, model.loss)
        if model.loss != SQUARED:
            nbytes += n_iterations * n_params * 8
    if reference:
        nbytes += (n_params + 1) * n_params * 8
    return int(nbytes)


_LOSS_CURVATURE_BOUND = {SQUARED: 1.0, BINARY_LOGISTIC: 0.25, MULTINOMIAL: 0.5}


def _centered_row_norms(X, model):
    """``||(x_i - offset, 1)||^2`` for every row (the intercept column included).

    ``X`` may be dense (float64 or float32) or a scipy sparse matrix; the result is
    float64.
    """
    norms = np.empty(X.shape[0])
    centered_square_norms(
        as_kernel_rows(X), model.offset, bool(model.fit_intercept), norms
    )
    return norms


def feature_means(X, sample_weight):
    """Weighted column means of ``X`` (dense or sparse), in float64."""
    total = np.asarray(X.T @ sample_weight, dtype=np.float64).ravel()
    return total / sample_weight.sum()


def max_row_square_norm(X, model):
    """The largest ``||(x_i - offset, 1)||^2`` over the rows of ``X`` (0 for none)."""
    if X.shape[0] == 0:
        return 0.0
    return float(_centered_row_norms(X, model).max())


def curvature_bound(X, model, max_row_norm=None):
    """An upper bound on the spectral norm of any batch Hessian (+ alpha) of ``X``.

    A batch Hessian is a weighted mean of the rows' Hessians, so the largest row
    bounds it whatever the weights. ``max_row_norm``: the largest squared centred
    row norm of ``X`` (:func:`max_row_square_norm`) when the caller keeps it, or any
    larger value (a looser bound); ``None`` computes it, a pass over ``X``.
    """
    if max_row_norm is None:
        max_row_norm = max_row_square_norm(X, model)
    return _LOSS_CURVATURE_BOUND[model.loss] * max_row_norm + model.alpha


def auto_learning_rate(
    X,
    model,
    batch_size,
    sample_weight=None,
    n_power_iterations=30,
    seed=0,
    max_row_norm=None,
):
    """A step size ``1 / L`` from the smoothness constant of the batch objective.

    ``L = c * (lambda_max(Z' S Z / sum(s)) + max_i ||z_i||^2 / b) + alpha``, where
    the rows ``z_i`` are ``x_i - offset`` augmented by the intercept column, ``s``
    the sample weights (ones by default) and ``c`` the largest second derivative of
    the loss. For full batches this is the smoothness of the objective, with ``b``
    the total weight ``sum(s)`` (so that an integer weight acts as repeated rows);
    for single-row batches it is close to the SAG bound ``c * max_i ||z_i||^2``
    that sklearn uses. ``max_row_norm``: ``max_i ||z_i||^2`` if the caller has it
    (:func:`max_row_square_norm`); ``None`` computes it.
    """
    n_samples = X.shape[0]
    if sample_weight is None:
        sample_weight = np.ones(n_samples)
    mean_weight = sample_weight.mean()
    intercept = float(model.fit_intercept)
    offset = model.offset
    if max_row_norm is None:
        max_row_norm = max_row_square_norm(X, model)
    v = np.random.default_rng(seed).standard_normal(X.shape[1] + 1)
    v[-1] = v[-1] * intercept
    eigenvalue = 0.0
    for _ in range(n_power_iterations):
        norm = np.linalg.norm(v)
        if norm == 0.0:
            break
        v /= norm
        u = X @ v[:-1] - offset @ v[:-1] + v[-1] * intercept
        u = np.asarray(u, dtype=np.float64).ravel() * (sample_weight / mean_weight)
        back = np.asarray(X.T @ u, dtype=np.float64).ravel()
        v = np.append(back - offset * u.sum(), u.sum() * intercept) / n_samples
        eigenvalue = float(np.linalg.norm(v))
    rows_per_batch = max(batch_size, 1)
    if batch_size >= n_samples:
        rows_per_batch = n_samples * mean_weight
    smoothness = _LOSS_CURVATURE_BOUND[model.loss] * (
        eigenvalue + max_row_norm / rows_per_batch
    )
    return 1.0 / (smoothness + model.alpha)


# nogil: threads (joblib "threading", dask workers) can run fits side by side.
@njit(cache=True, nogil=True)
def sgd_iterations(
    X,
    Y,
    sample_weight,
    batch_ptr,
    batch_rows,
    learning_rates,
    alpha,
    offset,
    loss,
    n_outputs,
    fit_intercept,
    t_start,
    weights,
    gradients,
    exact,
    w,
):
    """Run iterations ``t_start..T-1`` from ``w`` (updated in place), caching each.

    ``batch_rows`` are positions in ``X``. Each batch's gradient is its weighted
    mean; a batch that is empty (or of zero weight) leaves ``w`` unchanged.
    """
    n_penalized = offset.shape[0] * n_outputs
    n_params = w.shape[0]
    gradient = np.empty(n_params)
    for t in range(t_start, learning_rates.shape[0]):
        lo = batch_ptr[t]
        hi = batch_ptr[t + 1]
        weights[t] = w
        exact[t] = True
        batch_weight = weight_sum(sample_weight, batch_rows[lo:hi])
        if batch_weight == 0.0:
            # Every row of this batch was removed: the iteration is skipped.
            gradients[t] = 0.0
            continue
        gradient[:] = 0.0
        gradient_sum(
            X,
            Y,
            sample_weight,
            batch_rows[lo:hi],
            w,
            offset,
            loss,
            n_outputs,
            fit_intercept,
            gradient,
        )
        gradient /= batch_weight
        gradients[t] = gradient
        add_penalty(w, alpha, n_penalized, gradient)
        w -= learning_rates[t] * gradient
    return w


def run_sgd(
    X,
    Y,
    sample_weight,
    model,
    batch_ptr,
    batch_rows,
    learning_rates,
    t_start,
    cache,
    device="cpu",
):
    """Retrain exactly from iteration ``t_start`` of ``cache``, filling it in place.

    At ``t_start = 0`` this is training from zero parameters (``cache.weights[0]``).
    ``X`` is a dense array or a scipy CSR matrix; ``device`` is ``"cpu"`` or
    ``"cuda"`` (resolved by :func:`~sklearn_deltagrad._backend.resolve_device`).
    """
    if t_start >= learning_rates.shape[0]:
        return cache
    w = cache.weights[t_start].copy()
    loop = sgd_iterations if device == "cpu" else cuda_loops().sgd_iterations
    cache.final[:] = loop(
        as_kernel_rows(X),
        Y,
        sample_weight,
        batch_ptr,
        batch_rows,
        learning_rates,
        model.alpha,
        model.offset,
        model.loss,
        model.n_outputs,
        model.fit_intercept,
        t_start,
        cache.weights,
        cache.gradients,
        cache.exact,
        w,
    )
    return cache
