"""The DeltaGrad replay of a changed training set, and the exact retrain it mimics.

Both start at the first iteration whose batch changed (before it the trajectory is
unchanged) and overwrite the cache from there with the new trajectory, so the next
request starts from the updated model. Exact iterations of the replay sit at fixed
absolute positions ``t < burn_in`` or ``(t - burn_in) % exact_period == 0``, shared
by every request; curvature pairs are formed only where the cached gradient is exact.
"""

import functools
import time
from dataclasses import dataclass

import numpy as np
from numba import njit

from ._backend import cuda_loops
from ._curvature import (
    GRAM,
    HESSIAN,
    LBFGS,
    MIN_STEP_SQUARE,
    add_reference_correction,
    add_reference_rows,
    build_grams,
    build_reference,
    gram_product,
    lbfgs_factorize,
    lbfgs_product,
    lbfgs_push_pair,
    pair_difference,
    reference_operator,
    referenced_hessian_product,
    secant_control_sums,
    secant_weight,
    update_grams,
    update_grams_in_place,
)
from ._kernels.cpu import as_kernel_rows, gradient_sum, weight_sum
from ._schedule import gather, gather_into, position_table
from ._training import curvature_bound, run_sgd


@dataclass(frozen=True)
class ReplaySettings:
    """How the replay trades exactness for speed (see the estimators' parameters)."""

    burn_in: int
    exact_period: int
    curvature: int
    lbfgs_memory: int
    hessian_rows: int
    secant_correction: bool = True
    reference_correction: bool = False


@dataclass
class ReplayReport:
    """What one request did: the audit record of a model update.

    Parameters
    ----------
    method : {"deltagrad", "exact"}
        How the model was updated (``"exact"`` also when a fallback replaced a
        requested ``"deltagrad"``, see ``fallback``).
    first_iteration : int
        First iteration of the schedule that was recomputed.
    n_exact_iterations : int
        Iterations whose gradient was computed exactly.
    n_approximate_iterations : int
        Iterations whose gradient came from the curvature model.
    seconds : float
        Wall-clock time of the update.
    n_removed : int
        Rows removed by the request.
    n_added : int
        Rows added by the request.
    n_samples : int
        Training rows after the request.
    drift : float
        Estimated relative error ``||w - w_exact|| / ||w||`` that this request added
        (0 for an exact update), see ``drift_estimate``.
    drift_total : float
        The estimator's accumulated ``drift_`` after the request.
    requested_method : str or None
        The ``method`` the caller asked for.
    fallback : str or None
        Why an exact retrain replaced the requested DeltaGrad replay:
        ``"max_change_share"`` or ``"max_drift"``; ``None`` when it did not.
    n_residual_checks : int
        Exact iterations at which the curvature model's prediction was checked.
    mean_residual : float
        Mean norm of the gradient residual at those checks.
    """

    method: str
    first_iteration: int
    n_exact_iterations: int
    n_approximate_iterations: int
    seconds: float
    n_removed: int = 0
    n_added: int = 0
    n_samples: int = 0
    drift: float = 0.0
    drift_total: float = 0.0
    requested_method: str | None = None
    fallback: str | None = None
    n_residual_checks: int = 0
    mean_residual: float = 0.0


@njit(cache=True, nogil=True)
def replay_iterations(
    X,
    Y,
    sample_weight,
    new_ptr,
    new_ids,
    row_positions,
    removed_ptr,
    removed_rows,
    added_ptr,
    added_rows,
    new_batch_weights,
    old_batch_weights,
    learning_rates,
    alpha,
    offset,
    loss,
    n_outputs,
    fit_intercept,
    t_start,
    burn_in,
    exact_period,
    curvature,
    lbfgs_memory,
    hessian_rows,
    secant_correction,
    curvature_bound,
    grams,
    weights,
    gradients,
    exact,
    out_weights,
    out_gradients,
    out_exact,
    reference_point,
    reference_hessian,
    reference_weight,
):
    """Replay iterations ``t_start..T-1`` on the changed batches.

    Batch ``t`` lists the stable ids ``new_ids[new_ptr[t]:new_ptr[t + 1]]``, and
    ``row_positions`` maps an id to its row of ``X`` (see
    :func:`~sklearn_deltagrad._schedule.position_table`): only the batches of
    exact iterations and the sampled rows are translated, not the whole schedule.

    ``weights``/``gradients``/``exact`` hold the old trajectory (read only); rows
    ``t_start..T-1`` of ``out_weights``/``out_gradients``/``out_exact`` receive the
    new one (the old arrays themselves may be passed: iteration ``t`` reads them
    before writing). Batch sizes are weight sums: ``old_batch_weights[t]`` of the
    original batch, ``new_batch_weights[t]`` of the changed one. Returns ``(final
    parameters, number of exact iterations, sum of residual norms, number of
    residual checks, exposure)``: at every scheduled exact iteration where the
    curvature model is usable, the model's prediction of the original batch's loss
    gradient is compared with the exact one (the residual); the exposure is the sum
    of ``(learning_rate * b_old / b_new)^2`` over approximate iterations, whose
    factor is how far a gradient error there moves the parameters.
    ``secant_correction`` adds the secant control variate to the ``HESSIAN``
    model (see :mod:`sklearn_deltagrad._curvature`): its anchor is the last exact
    iteration whose cached gradient is exact, its weight is fitted at the
    scheduled exact iterations.
    """
    n_iterations, n_params = weights.shape
    n_penalized = offset.shape[0] * n_outputs
    w = weights[t_start].copy()
    largest_batch = 0
    for t in range(t_start, n_iterations):
        largest_batch = max(largest_batch, new_ptr[t + 1] - new_ptr[t])
    batch_rows = np.empty(largest_batch, row_positions.dtype)
    pairs_s = np.zeros((lbfgs_memory, n_params))
    pairs_y = np.zeros((lbfgs_memory, n_params))
    pairs_sy = np.zeros((lbfgs_memory, lbfgs_memory))
    pairs_ss = np.zeros((lbfgs_memory, lbfgs_memory))
    pair_slots = np.arange(lbfgs_memory)
    middle_inv = np.zeros((2 * lbfgs_memory, 2 * lbfgs_memory))
    n_pairs = 0
    first_pair = 0
    sigma = 1.0
    step = np.empty(n_params)
    new_sum = np.empty(n_params)
    removed_sum = np.empty(n_params)
    added_sum = np.empty(n_params)
    estimate = np.empty(n_params)
    midpoint = np.empty(n_params)
    # The Hessian model's secant control variate: the last exact iteration's step
    # and regularised secant (the anchor), the least-squares sums of its weight.
    corrected = curvature == HESSIAN and secant_correction
    anchor = np.zeros((2, n_params))
    has_anchor = False
    control_sums = np.zeros(2)
    direction = np.empty(n_params)
    secant = np.empty(n_params)
    plain = np.empty(n_params)
    anchor_product = np.empty(n_params)
    n_exact = 0
    residual_sum = 0.0
    n_checks = 0
    exposure = 0.0
    for t in range(t_start, n_iterations):
        lo = new_ptr[t]
        hi = new_ptr[t + 1]
        removed_t = removed_rows[removed_ptr[t] : removed_ptr[t + 1]]
        added_t = added_rows[added_ptr[t] : added_ptr[t + 1]]
        b_old = old_batch_weights[t]
        b_new = new_batch_weights[t]
        for i in range(n_params):
            step[i] = w[i] - weights[t, i]
        # Only compared with thresholds: BLAS's sum, not a sequential one that
        # waits on each addition (8 us a step at Reuters-21578's 8,316 parameters).
        step_norm2 = np.dot(step, step)
        # Most batches lose or gain no row: skip the O(d) work of an empty sum
        # (the sums are zeroed only where they are read).
        has_removed = removed_t.shape[0] > 0
        has_added = added_t.shape[0] > 0
        if has_removed:
            # The Hessian model's products cover the kept rows alone: the removed
            # rows enter through their exact gradients at the cached iterate
            # (the kept rows' sum there is b_old g_t less theirs), one pass over
            # them instead of a gradient at w and a product at the midpoint.
            # The other models' products are of the whole original batch.
            removed_sum[:] = 0.0
            gradient_sum(
                X,
                Y,
                sample_weight,
                removed_t,
                weights[t] if curvature == HESSIAN else w,
                offset,
                loss,
                n_outputs,
                fit_intercept,
                removed_sum,
            )
        if has_added:
            added_sum[:] = 0.0
            gradient_sum(
                X,
                Y,
                sample_weight,
                added_t,
                w,
                offset,
                loss,
                n_outputs,
                fit_intercept,
                added_sum,
            )

        scheduled = t < burn_in or (t - burn_in) % exact_period == 0
        usable = curvature != LBFGS or first_pair < n_pairs
        if b_new == 0.0:
            # Every row of this batch is gone: the retrain skips the iteration,
            # which is then exact (as in the exact method's count).
            n_exact += 1
            new_sum[:] = 0.0
            out_exact[t] = True
            out_weights[t] = w
            out_gradients[t] = new_sum
            continue
        modelled = usable and b_old > 0.0
        approximate = modelled and not scheduled
        if modelled:
            # Original-batch Hessian (+ alpha P) times the step, from the model.
            if curvature == LBFGS:
                lbfgs_product(
                    pairs_s,
                    pairs_y,
                    pair_slots,
                    first_pair,
                    n_pairs,
                    sigma,
                    middle_inv,
                    step,
                    estimate,
                )
            elif curvature == GRAM:
                gram_product(
                    grams[t], offset, b_old, step, alpha, n_outputs, n_penalized,
                    estimate,
                )  # fmt: skip
            else:
                # The sample: the batch's first kept rows (added rows come last).
                n_kept = hi - lo - added_t.shape[0]
                sample = gather_into(
                    row_positions, new_ids, lo, min(hessian_rows, n_kept), batch_rows
                )
                weight = secant_weight(control_sums) if has_anchor else 0.0
                # The Hessian at the midpoint of w_t and w' makes the secant
                # g(w') - g(w_t) exact to third order.
                for i in range(n_params):
                    midpoint[i] = weights[t, i] + 0.5 * step[i]
                    direction[i] = step[i] - weight * anchor[0, i]
                _sampled_product(
                    X, Y, sample_weight, sample, removed_t, added_t, b_new,
                    midpoint, direction, alpha, offset, loss, n_outputs,
                    fit_intercept, estimate, reference_point, reference_hessian,
                    reference_weight,
                )  # fmt: skip
                if weight != 0.0:
                    for i in range(n_params):
                        estimate[i] += weight * anchor[1, i]
                if corrected and scheduled and has_anchor:
                    # For the weight's fit at this check: the sample's products
                    # along s_e and (from the estimate) along the step.
                    _sampled_product(
                        X, Y, sample_weight, sample, removed_t, added_t, b_new,
                        midpoint, anchor[0], alpha, offset, loss, n_outputs,
                        fit_intercept, anchor_product, reference_point,
                        reference_hessian, reference_weight,
                    )  # fmt: skip
                    for i in range(n_params):
                        value = estimate[i] - weight * anchor[1, i]
                        plain[i] = value + weight * anchor_product[i]
            # No batch Hessian is steeper than the per-row bound: a larger product
            # means the model is wrong here, so compute this iteration exactly.
            limit2 = curvature_bound * curvature_bound * step_norm2
            approximate = approximate and np.dot(estimate, estimate) <= limit2
        if approximate:
            _approximate_step(
                estimate,
                gradients[t],
                weights[t],
                w,
                removed_sum,
                added_sum,
                has_removed,
                has_added,
                b_old,
                b_new,
                learning_rates[t],
                alpha,
                n_penalized,
                out_weights[t],
                out_gradients[t],
            )
            out_exact[t] = False
            move = learning_rates[t] * b_old / b_new
            exposure += move * move
        else:
            n_exact += 1
            if not has_removed:
                removed_sum[:] = 0.0
            if not has_added:
                added_sum[:] = 0.0
            new_sum[:] = 0.0
            gradient_sum(
                X,
                Y,
                sample_weight,
                gather_into(row_positions, new_ids, lo, hi - lo, batch_rows),
                w,
                offset,
                loss,
                n_outputs,
                fit_intercept,
                new_sum,
            )
            if modelled and scheduled:
                # Drift indicator: what the model would have predicted here (the
                # model's loss-only gradient of the original batch at w).
                _shift_to_loss_gradient(
                    estimate, gradients[t], weights[t], w, alpha, n_penalized
                )
                residual = 0.0
                for i in range(n_params):
                    diff = (new_sum[i] - added_sum[i] + removed_sum[i]) / b_old
                    diff -= estimate[i]
                    residual += diff * diff
                residual_sum += np.sqrt(residual)
                n_checks += 1
            if (curvature == LBFGS or corrected) and exact[t] and b_old > 0.0:
                # The regularised gradient difference of the *original* batch
                # (of its kept rows for the Hessian model, whose removed rows'
                # sum is at the cached iterate).
                pair_difference(
                    new_sum, added_sum, removed_sum, b_old, gradients[t], step,
                    alpha, n_penalized, secant,
                )  # fmt: skip
            anchored = step_norm2 > MIN_STEP_SQUARE
            if corrected and exact[t] and b_old > 0.0 and anchored:
                if scheduled and has_anchor:
                    # Fit the control variate's weight on this known secant.
                    secant_control_sums(
                        secant, plain, anchor[1], anchor_product, control_sums
                    )
                anchor[0] = step
                anchor[1] = secant
                has_anchor = True
            if curvature == LBFGS and exact[t] and b_old > 0.0:
                n_pairs, accepted = lbfgs_push_pair(
                    pairs_s,
                    pairs_y,
                    pairs_sy,
                    pairs_ss,
                    pair_slots,
                    n_pairs,
                    step,
                    secant,
                )
                if accepted:
                    first_pair, sigma = lbfgs_factorize(
                        pairs_sy, pairs_ss, n_pairs, alpha, middle_inv
                    )
            out_exact[t] = True
            _record_and_step(
                w,
                new_sum,
                b_new,
                learning_rates[t],
                alpha,
                n_penalized,
                out_weights[t],
                out_gradients[t],
            )
    return w, n_exact, residual_sum, n_checks, exposure


@njit(cache=True)
def _sampled_product(
    X, Y, sample_weight, sample, removed, added, b_new, point, v, alpha, offset,
    loss, n_outputs, fit_intercept, out, reference_point, reference_hessian,
    reference_weight,
):  # fmt: skip
    """``out = (H_kept / b_old + alpha P) v``: the Hessian at ``point`` of the
    original batch's kept rows, estimated from ``sample`` (kept rows of the new
    batch, of weight ``b_new`` with this request's ``added`` rows), over the
    original batch's weight ``b_old`` (the kept rows' and the ``removed`` rows');
    with the reference correction where ``reference_hessian`` holds the reference
    Hessian (see :func:`add_reference_correction`; a ``0 x 0`` placeholder
    otherwise). The removed rows' share is the replay's exact gradient
    difference."""
    kept_weight = b_new - weight_sum(sample_weight, added)
    old_weight = kept_weight + weight_sum(sample_weight, removed)
    # The reference correction (see _curvature): beta = 0 for a sample of the whole
    # batch, whose product is exact.
    beta = 0.0
    if reference_hessian.shape[0] > 0 and kept_weight > 0.0:
        beta = 1.0 - weight_sum(sample_weight, sample) / kept_weight
    referenced_hessian_product(
        X, Y, sample_weight, sample, kept_weight, removed[:0], old_weight, point,
        reference_point, beta, v, alpha, offset, loss, n_outputs, fit_intercept,
        out,
    )  # fmt: skip
    if beta > 0.0:
        add_reference_correction(
            reference_hessian, reference_weight, v, beta * kept_weight / old_weight,
            out,
        )  # fmt: skip


@njit(cache=True)
def _shift_to_loss_gradient(estimate, cached_gradient, w_old, w, alpha, n_penalized):
    """``estimate = B s + g_t + alpha P w_t - alpha P w``, in one pass: the
    modelled loss-only gradient of the original batch at ``w``."""
    for i in range(estimate.shape[0]):
        value = estimate[i] + cached_gradient[i]
        if i < n_penalized:
            value += alpha * w_old[i]
            value += -alpha * w[i]
        estimate[i] = value


@njit(cache=True)
def _approximate_step(
    estimate,
    cached_gradient,
    w_old,
    w,
    removed_sum,
    added_sum,
    has_removed,
    has_added,
    b_old,
    b_new,
    learning_rate,
    alpha,
    n_penalized,
    w_row,
    g_row,
):
    """An approximate iteration's vector work in one pass over the parameters.

    From the curvature model's product ``estimate = B s``: the modelled loss-only
    gradient of the original batch at ``w`` (``B s + g_t + alpha P (w_t - w)``),
    the new batch's loss-only sum (original, minus removed, plus added rows), then
    as :func:`_record_and_step`.
    """
    # Penalized and unpenalized (intercept) parameters in loops of their own, so
    # that neither tests the index (the compiler vectorises them).
    for i in range(n_penalized):
        wi = w[i]
        value = estimate[i] + cached_gradient[i]
        value += alpha * w_old[i]
        value += -alpha * wi
        gradient = _changed_batch_gradient(
            value, removed_sum[i], added_sum[i], has_removed, has_added, b_old, b_new
        )
        w_row[i] = wi
        g_row[i] = gradient
        gradient += alpha * wi
        w[i] = wi - learning_rate * gradient
    for i in range(n_penalized, w.shape[0]):
        wi = w[i]
        gradient = _changed_batch_gradient(
            estimate[i] + cached_gradient[i], removed_sum[i], added_sum[i],
            has_removed, has_added, b_old, b_new,
        )  # fmt: skip
        w_row[i] = wi
        g_row[i] = gradient
        w[i] = wi - learning_rate * gradient


@njit(cache=True, inline="always")
def _changed_batch_gradient(
    value, removed, added, has_removed, has_added, b_old, b_new
):
    """The new batch's mean loss gradient from the original batch's ``value``."""
    total = b_old * value
    if has_removed:
        total -= removed
    if has_added:
        total += added
    return total / b_new


@njit(cache=True)
def _record_and_step(
    w, batch_sum, batch_weight, learning_rate, alpha, n_penalized, w_row, g_row
):
    """Cache ``w`` and the batch's mean loss gradient, then take the SGD step with
    the penalty, in one pass over the parameters."""
    for i in range(w.shape[0]):
        gradient = batch_sum[i] / batch_weight
        w_row[i] = w[i]
        g_row[i] = gradient
        if i < n_penalized:
            gradient += alpha * w[i]
        w[i] -= learning_rate * gradient


@njit(cache=True)
def _weighted_batch_sums(sample_weight, ptr, rows):
    """The total weight of every batch of a CSR batch list, summed in order (as the
    exact retrain sums them)."""
    n_batches = ptr.shape[0] - 1
    totals = np.zeros(n_batches)
    for t in range(n_batches):
        totals[t] = weight_sum(sample_weight, rows[ptr[t] : ptr[t + 1]])
    return totals


def _batch_weights(sample_weight, change, schedule_rows, removed_rows, added_rows):
    """The weight of each batch after and before the change.

    Without weights (all ones) these are the batch sizes, read off the pointers
    instead of a pass over every schedule entry. ``schedule_rows()`` gives the
    new schedule's row positions.
    """
    unit = bool((sample_weight == 1.0).all())

    def sums(ptr, rows):
        if unit:
            return np.diff(ptr).astype(np.float64)
        return _weighted_batch_sums(sample_weight, ptr, rows)

    new = sums(change.schedule.batch_ptr, None if unit else schedule_rows())
    old = (
        new
        + sums(change.removed_ptr, removed_rows)
        - sums(change.added_ptr, added_rows)
    )
    return new, old


def _old_grams(
    X, sample_weight, model, change, schedule_rows, changed, old_cache, cache, shared
):
    """The Gram matrices of the *old* batches, for the ``GRAM`` curvature model.

    Those of the old cache (read only); where it has none, they are built (from
    the new batches, whose row positions ``schedule_rows()`` gives, at the cached
    iterates, with the change undone). ``cache``, the old one's successor, gets
    room for the updated Grams, and their points; with ``shared`` it gets the old
    Grams themselves instead, for a :class:`GramUpdate` to change in place.
    """
    if old_cache.grams is not None:
        points = old_cache.gram_points
        if shared:
            cache.grams, cache.gram_points = old_cache.grams, points
        else:
            cache.grams = np.empty_like(old_cache.grams)
            cache.gram_points = None if points is None else points.copy()
        return old_cache.grams
    grams, points = build_grams(
        X,
        sample_weight,
        model,
        change.schedule.batch_ptr,
        schedule_rows(),
        old_cache.weights,
    )
    removed_ptr, removed_rows, added_ptr, added_rows, *centring = changed
    # Undo the change: the old batches had the removed rows and not the added ones.
    undone = (added_ptr, added_rows, removed_ptr, removed_rows, *centring)
    update_grams_in_place(
        X,
        sample_weight,
        undone,
        model.loss,
        old_cache.weights,
        grams,
        np.zeros(1, dtype=np.bool_),
    )
    cache.grams = grams if shared else np.empty_like(grams)
    cache.gram_points = points
    return grams


@dataclass
class GramUpdate:
    """A request's change of the Gram matrices, left for the commit to make in
    place (see :func:`apply_change`'s ``defer_grams``).

    It holds its own copy of the changed rows (``X``, ``sample_weight``; the
    positions index them), so it does not read the training rows, which the commit
    compacts. :meth:`apply` is one compiled call that allocates what it needs
    before it changes a matrix and sets ``done`` when it has finished, so it never
    stops half-way, and a caller interrupted after it can tell that it ran (the
    request is then committed: the matrices are its last change).
    """

    X: object
    sample_weight: np.ndarray
    changed: tuple
    loss: int
    points: np.ndarray
    grams: np.ndarray
    done: np.ndarray

    @classmethod
    def gather(cls, X, sample_weight, changed, loss, points, grams):
        """The update of ``grams`` by ``changed`` (positions of rows of ``X``, a
        dense array or a CSR matrix), with the changed rows copied out of ``X``."""
        removed_ptr, removed_rows, added_ptr, added_rows, *centring = changed
        positions, local = np.unique(
            np.concatenate((removed_rows, added_rows)), return_inverse=True
        )
        local = local.astype(removed_rows.dtype, copy=False)
        n_removed = removed_rows.shape[0]
        return cls(
            as_kernel_rows(X[positions]),
            sample_weight[positions],
            (removed_ptr, local[:n_removed], added_ptr, local[n_removed:], *centring),
            loss,
            points,
            grams,
            np.zeros(1, dtype=np.bool_),
        )

    def apply(self):
        update_grams_in_place(
            self.X,
            self.sample_weight,
            self.changed,
            self.loss,
            self.points,
            self.grams,
            self.done,
        )


def apply_change(
    X,
    Y,
    sample_weight,
    row_ids,
    model,
    change,
    cache,
    method,
    settings,
    device="cpu",
    max_row_norm=None,
    defer_grams=False,
    written=None,
):
    """The cache of the changed training set (a new one: ``cache`` is left as it
    is, so that a failed request changes nothing), the report, and the
    :class:`GramUpdate` left to the caller (``None`` unless ``defer_grams``).

    ``X``/``Y``/``sample_weight`` hold every row that the old or the new schedule
    mentions, with stable ids ``row_ids`` (sorted); ``X`` is a dense array or a
    scipy CSR matrix. ``method`` is ``"deltagrad"`` or ``"exact"``. The exact
    retrain starts at the first changed iteration or at the first iteration whose
    cached gradient is an estimate of an earlier replay, whichever comes first, so
    that its result is the reference retrain of the whole current training set.
    The report's ``drift`` is the replay's estimated error ``||w - w_exact||``
    (absolute; see :func:`drift_estimate`). ``device`` (``"cpu"`` or ``"cuda"``)
    runs the loops. ``max_row_norm``: the largest squared centred norm of the rows
    of ``X``, or a larger value (see :func:`curvature_bound`); ``None`` computes it
    (a pass over ``X``).

    The ``GRAM`` model's matrices are written updated into new memory, or, with
    ``defer_grams``, the new cache shares the old one's and the returned
    :class:`GramUpdate` changes them in place when the caller applies it (at its
    commit: a9a's 25 MB of Grams are then neither copied nor faulted in, and only
    the changed batches' matrices are touched).

    ``written``, a one-element bool array, asks for the new trajectory to be written
    over the old one instead (``cache``'s iterates and gradients; the ``GRAM``
    model then needs ``defer_grams``): the returned cache shares them, and
    ``written[0]`` is set just before the first write. From then on ``cache`` no
    longer describes the old training set: a caller that cannot finish the request
    must redo it with ``method="exact"``, whose first iteration does not depend on
    the overwritten rows.
    """
    start = time.perf_counter()
    rows_X = X
    bound = 0.0
    if method == "deltagrad":
        bound = curvature_bound(X, model, max_row_norm)
    X = as_kernel_rows(X)
    schedule = change.schedule
    new_ptr = schedule.batch_ptr
    positions = position_table(row_ids)

    # The whole schedule's row positions, for the few callers that need them (the
    # DeltaGrad replay on the CPU translates only the batches it reads).
    @functools.cache
    def schedule_rows():
        return gather(positions, schedule.batch_ids)

    t_start = change.first_changed_iteration
    n_iterations = schedule.n_iterations
    old_cache = cache
    # Only the Gram model keeps its Grams up to date; another drops them (a later
    # switch back builds them anew, at the iterates of that time). They are not
    # copied here: _old_grams makes room for them (or shares them), update_grams
    # fills it (or the GramUpdate changes them).
    if written is None:
        cache = cache.successor(
            t_start if method == "deltagrad" else n_iterations,
            keep_grams=False,
            keep_reference=settings.reference_correction,
        )
    else:
        if settings.curvature == GRAM and not defer_grams:
            raise ValueError("An in-place request must defer the Gram update.")
        cache = cache.sharing_trajectory(settings.reference_correction)
    removed_rows = positions[change.removed_ids]
    added_rows = positions[change.added_ids]
    changed = (
        change.removed_ptr,
        removed_rows,
        change.added_ptr,
        added_rows,
        model.offset,
        model.fit_intercept,
    )
    old_grams = None
    if settings.curvature == GRAM:
        old_grams = _old_grams(
            X, sample_weight, model, change, schedule_rows, changed, old_cache, cache,
            defer_grams,
        )  # fmt: skip
    _keep_reference_current(
        X, sample_weight, model, settings, schedule_rows, removed_rows, added_rows,
        old_cache, cache,
    )  # fmt: skip
    residual_sum, n_checks, exposure = 0.0, 0, 0.0
    if method == "exact":
        inexact = np.flatnonzero(~cache.exact)
        if inexact.size:
            t_start = min(t_start, int(inexact[0]))
    if written is not None and t_start < n_iterations:
        written[0] = True
    if t_start >= n_iterations:
        n_exact = 0
    elif method == "exact":
        run_sgd(
            X,
            Y,
            sample_weight,
            model,
            new_ptr,
            schedule_rows(),
            schedule.learning_rates,
            t_start,
            cache,
            device,
        )
        n_exact = n_iterations - t_start
    else:
        replay = replay_iterations
        if device == "cuda":
            replay = cuda_loops().replay_iterations
        final, n_exact, residual_sum, n_checks, exposure = replay(
            X,
            Y,
            sample_weight,
            new_ptr,
            schedule.batch_ids,
            positions,
            change.removed_ptr,
            removed_rows,
            change.added_ptr,
            added_rows,
            *_batch_weights(
                sample_weight, change, schedule_rows, removed_rows, added_rows
            ),
            schedule.learning_rates,
            model.alpha,
            model.offset,
            model.loss,
            model.n_outputs,
            model.fit_intercept,
            t_start,
            settings.burn_in,
            settings.exact_period,
            settings.curvature,
            # More pairs than parameters cannot be independent.
            min(settings.lbfgs_memory, model.n_params),
            settings.hessian_rows,
            settings.secant_correction,
            bound,
            np.zeros((1, 1, 1)) if old_grams is None else old_grams,
            old_cache.weights,
            old_cache.gradients,
            old_cache.exact,
            cache.weights,
            cache.gradients,
            cache.exact,
            *_reference_arguments(old_cache, cache, settings, model, device),
        )
        cache.final[:] = final
    gram_update = None
    if old_grams is not None:
        # The squared loss's Grams do not depend on the point (any array will do).
        points = cache.weights if cache.gram_points is None else cache.gram_points
        if defer_grams:
            gram_update = GramUpdate.gather(
                rows_X, sample_weight, changed, model.loss, points, cache.grams
            )
        else:
            update_grams(
                X, sample_weight, changed, model.loss, points, old_grams, cache.grams
            )
    n_replayed = max(n_iterations - t_start, 0)
    mean_residual = residual_sum / n_checks if n_checks else 0.0
    report = ReplayReport(
        method=method,
        first_iteration=int(t_start),
        n_exact_iterations=int(n_exact),
        n_approximate_iterations=int(n_replayed - n_exact),
        seconds=time.perf_counter() - start,
        drift=drift_estimate(mean_residual, exposure),
        n_residual_checks=int(n_checks),
        mean_residual=float(mean_residual),
    )
    return cache, report, gram_update


def _keep_reference_current(
    X, sample_weight, model, settings, schedule_rows, removed_rows, added_rows,
    old_cache, cache,
):  # fmt: skip
    """The new cache's reference Hessian (a copy of the old one's) for the new
    training set: the removed rows' terms subtracted, the added rows' added. Where
    the old cache has none and the request wants one, it is built from the new
    training set (the rows of ``schedule_rows()``) at the old cache's model (and
    serves this request's replay). A request without the correction drops it (as
    the Grams: ``cache`` has no copy of it then)."""
    if not settings.reference_correction:
        return
    if cache.reference_hessian is None:
        cache.reference_point, cache.reference_hessian, cache.reference_weight = (
            build_reference(
                X, sample_weight, np.unique(schedule_rows()), old_cache.final, model
            )
        )
        return
    for rows, sign in ((removed_rows, -1.0), (added_rows, 1.0)):
        if rows.shape[0] == 0:
            continue
        # Every epoch lists a row once: each changed row counted once.
        unique = np.unique(rows)
        add_reference_rows(
            X, sample_weight, unique, cache.reference_point, model.offset,
            model.loss, model.n_outputs, model.fit_intercept, sign,
            cache.reference_hessian,
        )  # fmt: skip
        cache.reference_weight += sign * float(weight_sum(sample_weight, unique))


def _reference_arguments(old_cache, cache, settings, model, device):
    """The replay's ``reference_point``, ``reference_hessian`` and
    ``reference_weight``: the old cache's (the original training set's), or the
    one built for this request, or ``0 x 0`` placeholders without the correction.
    The CPU loop takes the multinomial loss's reduced matrix, in single precision
    (:func:`reference_operator`)."""
    if not settings.reference_correction:
        # In the CPU operator's dtype: one compiled loop with and without.
        return np.zeros(1), np.zeros((0, 0), dtype=np.float32), 1.0
    source = old_cache if old_cache.reference_hessian is not None else cache
    matrix = source.reference_hessian
    if device == "cpu":
        matrix = reference_operator(matrix, model)
    return source.reference_point, matrix, source.reference_weight


def drift_estimate(mean_residual, exposure):
    """Estimated ``||w_replay - w_exact||`` of one replay, from its residuals.

    At its scheduled exact iterations the replay compares the curvature model's
    prediction of the batch gradient with the exact gradient; the mean norm of the
    difference stands for the gradient error of every approximate iteration, and an
    error ``e`` there moves the parameters by ``learning_rate * b_old / b_new * e``.
    These moves are added as independent random steps (a root sum of squares, no
    contraction): ``mean_residual * sqrt(exposure)``. A cheap indicator, not a
    bound; it is 0 when no iteration was approximate.

    Parameters
    ----------
    mean_residual : float
        Mean norm of the residuals at the checked exact iterations.
    exposure : float
        Sum of ``(learning_rate * b_old / b_new)^2`` over approximate iterations.

    Returns
    -------
    float
        The estimate of ``||w_replay - w_exact||``.
    """
    return float(mean_residual * np.sqrt(exposure))
