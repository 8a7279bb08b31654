"""The training loop and the DeltaGrad replay on a CUDA device.

Same signatures and results as the CPU loops :func:`~sklearn_deltagrad._training.
sgd_iterations` and :func:`~sklearn_deltagrad._replay.replay_iterations` (host NumPy
arrays in, the cache rows written back): the rows, the schedule and the old and new
trajectories are copied to the GPU once, a host loop launches the kernels of
:mod:`sklearn_deltagrad._kernels.cuda` for each iteration, and only the results come
back. Approximate iterations read nothing back: the host keeps launching while the
GPU works. An exact iteration reads the bound checks of the approximate ones since
the previous exact iteration (one transfer; a rejected step sends the replay back
to it) and, with the L-BFGS model, the inner products of the new pair, whose small
matrices (``2 m x 2 m``) are factorised on the host by the CPU code; the residuals
of the drift indicator come back at the end.

Imported only when ``device="cuda"`` is requested.
"""

import math

import numpy as np
from numba import cuda

from ._curvature import (
    _MIN_CURVATURE,
    GRAM,
    HESSIAN,
    LBFGS,
    MIN_STEP_SQUARE,
    lbfgs_factorize,
    secant_weight,
)
from ._kernels import cuda as kernels
from ._kernels.cpu import CSRRows, weight_sum
from ._schedule import gather


def _to_device(array):
    """A device copy of ``array`` whose allocation holds at least one element.

    numba-cuda gives an empty array a null pointer, and any slice of it, even an
    empty one, raises ("non-empty slice into empty slice") on a real GPU; the
    simulator does not. An empty array is therefore a zero-length view of a
    one-element allocation.
    """
    array = np.ascontiguousarray(array)
    if array.size:
        return cuda.to_device(array)
    return cuda.to_device(np.zeros((1,) + array.shape[1:], array.dtype))[:0]


def _upload_rows(X):
    if isinstance(X, CSRRows):
        return CSRRows(*(_to_device(a) for a in X))
    return cuda.to_device(np.ascontiguousarray(X))


def _upload(X, Y, sample_weight, offset, n_iterations, n_params):
    """The rows, targets, weights and offset on the device, and the device rows
    for the new trajectory's ``n_iterations`` iterates and gradients."""
    return (
        _upload_rows(X),
        cuda.to_device(np.ascontiguousarray(Y)),
        cuda.to_device(np.ascontiguousarray(sample_weight)),
        cuda.to_device(np.ascontiguousarray(offset)),
        cuda.device_array((n_iterations, n_params)),
        cuda.device_array((n_iterations, n_params)),
    )


def _max_rows(*ptrs):
    return max(int(np.diff(ptr).max(initial=0)) for ptr in ptrs)


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
    """Run iterations ``t_start..T-1`` from ``w`` on the GPU, caching each (see the
    CPU loop); ``w`` and the cache rows from ``t_start`` are written back."""
    n_iterations = learning_rates.shape[0]
    if t_start >= n_iterations:
        return w
    n_params = w.shape[0]
    n_penalized = offset.shape[0] * n_outputs
    d_X, d_Y, d_weight, d_offset, out_w, out_g = _upload(
        X, Y, sample_weight, offset, n_iterations - t_start, n_params
    )
    d_rows = _to_device(batch_rows)
    d_w = cuda.to_device(w)
    gradient = cuda.device_array(n_params)
    workspace = kernels.Workspace(_max_rows(batch_ptr), offset.shape[0], n_outputs)
    for t in range(t_start, n_iterations):
        lo, hi = batch_ptr[t], batch_ptr[t + 1]
        row = t - t_start
        batch_weight = weight_sum(sample_weight, batch_rows[lo:hi])
        if batch_weight == 0.0:
            kernels.copy_row(d_w, out_w, row)
            kernels.fill(out_g[row], 0.0)
            continue
        kernels.gradient_sum(
            d_X, d_Y, d_weight, d_rows[lo:hi], d_w, d_offset, loss, n_outputs,
            fit_intercept, gradient, workspace, accumulate=False,
        )  # fmt: skip
        kernels.record_and_step(
            d_w, gradient, batch_weight, learning_rates[t], alpha, n_penalized,
            out_w[row], out_g[row],
        )  # fmt: skip
    weights[t_start:] = out_w.copy_to_host()
    gradients[t_start:] = out_g.copy_to_host()
    exact[t_start:] = True
    w[:] = d_w.copy_to_host()
    return w


class _PairMemory:
    """The L-BFGS pairs: vectors on the device, their inner products on the host.

    Mirrors :func:`~sklearn_deltagrad._curvature.lbfgs_push_pair` (a ring of rows,
    ``SY``/``SS`` in age order) with the dot products computed on the GPU.
    """

    def __init__(self, memory, n_params, alpha):
        self.memory = memory
        self.alpha = alpha
        self.S = cuda.device_array((memory, n_params))
        self.Yp = cuda.device_array((memory, n_params))
        self.SY = np.zeros((memory, memory))
        self.SS = np.zeros((memory, memory))
        self.slots = np.arange(memory)
        self.d_slots = cuda.to_device(self.slots)
        self.middle_inv = np.zeros((2 * memory, 2 * memory))
        self.d_middle_inv = cuda.to_device(self.middle_inv)
        self.projections = cuda.device_array(2 * memory)
        self.coefficients = cuda.device_array(2 * memory)
        self.dots = cuda.device_array(3 * memory)
        # Row indices of the dot products, uploaded once: [0, 0, 1] picks
        # (s, s) and (s, y) of the pair; the zeros and ones pick s or y.
        self.d_pair_index = cuda.to_device(np.array([0, 0, 1], dtype=np.int64))
        self.d_zeros = cuda.to_device(np.zeros(memory, dtype=np.int64))
        self.d_ones = cuda.to_device(np.ones(memory, dtype=np.int64))
        self.n_pairs = 0
        self.first = 0
        self.sigma = 1.0

    @property
    def usable(self):
        return self.first < self.n_pairs

    def product(self, v, out):
        kernels.lbfgs_product(
            self.S, self.Yp, self.d_slots, self.first, self.n_pairs, self.sigma,
            self.d_middle_inv, v, out, self.projections, self.coefficients,
        )  # fmt: skip

    def push(self, pair):
        """Offer the pair ``(pair[0], pair[1]) = (s, y)``; refactorise if kept."""
        index = self.d_pair_index
        kernels.row_dots(pair, index[:2], pair, index[1:], self.dots)
        ss, sy = self.dots[:2].copy_to_host()
        if ss <= MIN_STEP_SQUARE or sy <= _MIN_CURVATURE * ss:
            return
        memory = self.memory
        n = self.n_pairs
        if n == memory:
            self.slots = np.roll(self.slots, -1)
            self.SY[:-1, :-1] = self.SY[1:, 1:].copy()
            self.SS[:-1, :-1] = self.SS[1:, 1:].copy()
            n -= 1
        newest = int(self.slots[n])
        kernels.copy_row(pair[0], self.S, newest)
        kernels.copy_row(pair[1], self.Yp, newest)
        self.d_slots.copy_to_device(self.slots)
        rows = self.d_slots[: n + 1]
        zeros, ones = self.d_zeros[: n + 1], self.d_ones[: n + 1]
        kernels.row_dots(pair, zeros, self.Yp, rows, self.dots[: n + 1])
        kernels.row_dots(self.S, rows, pair, ones, self.dots[n + 1 : 2 * n + 2])
        kernels.row_dots(pair, zeros, self.S, rows, self.dots[2 * n + 2 : 3 * n + 3])
        dots = self.dots[: 3 * n + 3].copy_to_host()
        self.SY[n, : n + 1] = dots[: n + 1]
        self.SY[: n + 1, n] = dots[n + 1 : 2 * n + 2]
        self.SS[n, : n + 1] = dots[2 * n + 2 :]
        self.SS[: n + 1, n] = dots[2 * n + 2 :]
        self.n_pairs = n + 1
        self.first, self.sigma = lbfgs_factorize(
            self.SY, self.SS, self.n_pairs, self.alpha, self.middle_inv
        )
        self.d_middle_inv.copy_to_device(self.middle_inv)


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
    """Replay iterations ``t_start..T-1`` on the GPU; arguments and result as the
    CPU :func:`~sklearn_deltagrad._replay.replay_iterations`."""
    n_iterations, n_params = weights.shape
    n_penalized = offset.shape[0] * n_outputs
    d_X, d_Y, d_weight, d_offset, out_w, out_g = _upload(
        X, Y, sample_weight, offset, n_iterations - t_start, n_params
    )
    # The whole schedule's row positions, computed once and kept on the GPU.
    new_rows = gather(row_positions, new_ids)
    d_new_rows = _to_device(new_rows)
    d_removed = _to_device(removed_rows)
    d_added = _to_device(added_rows)
    old_w = cuda.to_device(np.ascontiguousarray(weights[t_start:]))
    old_g = cuda.to_device(np.ascontiguousarray(gradients[t_start:]))
    d_grams = cuda.to_device(grams[t_start:]) if curvature == GRAM else None
    w = weights[t_start].copy()
    d_w = cuda.to_device(w)
    workspace = kernels.Workspace(
        _max_rows(new_ptr, removed_ptr, added_ptr), offset.shape[0], n_outputs
    )
    pairs = _PairMemory(lbfgs_memory if curvature == LBFGS else 1, n_params, alpha)
    pair = cuda.device_array((2, n_params))
    step, secant = pair[0], pair[1]
    vectors = cuda.device_array((10, n_params))
    midpoint, estimate, new_sum, removed_sum, added_sum, removed_part = vectors[:6]
    direction, plain, anchor_product, at_reference = vectors[6:]
    referenced = reference_hessian.shape[0] == n_params
    if referenced:
        d_reference_point = cuda.to_device(reference_point)
        d_reference_hessian = cuda.to_device(reference_hessian)
    # The Hessian model's secant control variate (as the CPU loop): the anchor's
    # step and secant stay on the GPU, the weight's sums come back at each check.
    corrected = curvature == HESSIAN and secant_correction
    anchor = cuda.device_array((2, n_params))
    has_anchor = False
    control_sums = np.zeros(2)
    d_control_sums = cuda.to_device(np.zeros(2))
    # Per iteration ||step||^2 and ||B step||^2 (the bound check), and the squared
    # residuals of the checked exact iterations: read back in batches.
    # Per row: ||step||^2, then the blocks' shares of ||B step||^2.
    bound_norms = cuda.to_device(
        np.zeros((n_iterations - t_start, 1 + kernels.n_blocks(n_params)))
    )
    residuals = cuda.to_device(np.zeros(n_iterations - t_start))
    bound2 = curvature_bound * curvature_bound
    checked = []
    moves = np.zeros(n_iterations)
    # Approximate iterations run without waiting for their bound check: the checks
    # are read at the next exact iteration (one transfer), and if one failed, the
    # replay resumes from that iteration, computed exactly (as the CPU loop would
    # have), from the iterate it recorded. No pair is formed in between, so the
    # curvature model is the same.
    unverified = []
    forced_exact = -1

    def first_failed():
        if not unverified:
            return None
        lo, hi = unverified[0] - t_start, unverified[-1] - t_start + 1
        values = bound_norms[lo:hi].copy_to_host()
        for t in unverified:
            step_norm2, *shares = values[t - t_start - lo]
            estimate_norm2 = 0.0
            for share in shares:
                estimate_norm2 += share
            if not estimate_norm2 <= bound2 * step_norm2:
                return t
        return None

    def sampled_product(t, v, out):
        """``out = (H_kept / b_old + alpha P) v`` from the Hessian sample of
        iteration ``t`` at ``midpoint`` (the CPU loop's ``_sampled_product``)."""
        lo, hi = new_ptr[t], new_ptr[t + 1]
        a_lo, a_hi = added_ptr[t], added_ptr[t + 1]
        r_lo, r_hi = removed_ptr[t], removed_ptr[t + 1]
        n_sample = min(hessian_rows, hi - lo - (a_hi - a_lo))
        sample = d_new_rows[lo : lo + n_sample]
        sample_weight_sum = weight_sum(sample_weight, new_rows[lo : lo + n_sample])
        kept_weight = new_batch_weights[t] - weight_sum(
            sample_weight, added_rows[a_lo:a_hi]
        )
        removed_weight = weight_sum(sample_weight, removed_rows[r_lo:r_hi])
        # The kept rows' share of the original batch's product (no removed rows,
        # but their weight), as the CPU loop's.
        kernels.subsampled_hessian_product(
            d_X, d_Y, d_weight, sample, sample_weight_sum, kept_weight,
            d_removed[r_lo:r_lo], removed_weight, midpoint, v, alpha, d_offset, loss,
            n_outputs, fit_intercept, out, workspace, removed_part,
        )  # fmt: skip
        beta = 1.0 - sample_weight_sum / kept_weight if kept_weight > 0.0 else 0.0
        if referenced and beta > 0.0:
            # The reference correction (as the CPU loop's _sampled_product).
            kernels.subsampled_hessian_product(
                d_X, d_Y, d_weight, sample, sample_weight_sum, kept_weight,
                d_removed[r_lo:r_lo], 0.0, d_reference_point, v, 0.0, d_offset,
                loss, n_outputs, fit_intercept, at_reference, workspace,
                removed_part,
            )  # fmt: skip
            # The sample's products at r are subtracted apart here, where the CPU
            # loop folds them into its one pass over the sample.
            factor = beta * kept_weight / (kept_weight + removed_weight)
            kernels.combine(out, -factor, at_reference, out)
            kernels.add_reference_correction(
                d_reference_hessian, reference_weight, v, factor, out
            )

    t = t_start
    resume = None
    while True:
        if resume is None and t == n_iterations:
            resume = first_failed()
            if resume is None:
                break
        if resume is not None:
            unverified, forced_exact, t = [], resume, resume
            d_w.copy_to_device(out_w[resume - t_start])
            resume = None
        row = t - t_start
        lo, hi = new_ptr[t], new_ptr[t + 1]
        removed_t = d_removed[removed_ptr[t] : removed_ptr[t + 1]]
        added_t = d_added[added_ptr[t] : added_ptr[t + 1]]
        b_old = old_batch_weights[t]
        b_new = new_batch_weights[t]
        w_old, g_old = old_w[row], old_g[row]
        kernels.step_from(d_w, w_old, step, midpoint, bound_norms[row])
        has_removed = removed_t.shape[0] > 0
        has_added = added_t.shape[0] > 0
        # The Hessian model's removed rows at the cached iterate (as the CPU loop).
        removed_point = w_old if curvature == HESSIAN else d_w
        for rows, point, total in (
            (removed_t, removed_point, removed_sum),
            (added_t, d_w, added_sum),
        ):
            if rows.shape[0]:
                kernels.gradient_sum(
                    d_X, d_Y, d_weight, rows, point, d_offset, loss, n_outputs,
                    fit_intercept, total, workspace, accumulate=False,
                )  # fmt: skip
        scheduled = t < burn_in or (t - burn_in) % exact_period == 0
        usable = curvature != LBFGS or pairs.usable
        if b_new == 0.0:
            out_exact[t] = True
            kernels.copy_row(d_w, out_w, row)
            kernels.fill(out_g[row], 0.0)
            t += 1
            continue
        modelled = usable and b_old > 0.0
        approximate = modelled and not scheduled and t != forced_exact
        if modelled and t != forced_exact:
            if curvature == LBFGS:
                pairs.product(step, estimate)
            elif curvature == GRAM:
                kernels.gram_product(
                    d_grams[row], d_offset, b_old, step, alpha, n_outputs,
                    n_penalized, estimate,
                )  # fmt: skip
            else:
                weight = secant_weight(control_sums) if has_anchor else 0.0
                if weight != 0.0:
                    kernels.combine(step, -weight, anchor[0], direction)
                    sampled_product(t, direction, estimate)
                    kernels.combine(estimate, weight, anchor[1], estimate)
                else:
                    sampled_product(t, step, estimate)
                if corrected and scheduled and has_anchor:
                    # For the weight's fit at this check (as the CPU loop).
                    sampled_product(t, anchor[0], anchor_product)
                    kernels.combine(estimate, -weight, anchor[1], plain)
                    kernels.combine(plain, weight, anchor_product, plain)
        if approximate:
            # No batch Hessian is steeper than the per-row bound (checked later).
            kernels.approximate_step(
                estimate, g_old, w_old, d_w, removed_sum, added_sum, has_removed,
                has_added, b_old, b_new, learning_rates[t], alpha, n_penalized,
                out_w[row], out_g[row], bound_norms[row, 1:],
            )  # fmt: skip
            out_exact[t] = False
            moves[t] = (learning_rates[t] * b_old / b_new) ** 2
            unverified.append(t)
            t += 1
            continue
        resume = first_failed()
        if resume is not None:
            continue  # from the failed iteration, at the loop's head
        unverified = []
        # The exact iteration's formulas read the sums also where they are empty.
        for rows, total in ((removed_t, removed_sum), (added_t, added_sum)):
            if not rows.shape[0]:
                kernels.fill(total, 0.0)
        kernels.gradient_sum(
            d_X, d_Y, d_weight, d_new_rows[lo:hi], d_w, d_offset, loss, n_outputs,
            fit_intercept, new_sum, workspace, accumulate=False,
        )  # fmt: skip
        if modelled and scheduled:
            # Drift indicator: the model's prediction against the exact gradient.
            kernels.residual_square_norm(
                estimate, g_old, w_old, d_w, alpha, n_penalized, new_sum, added_sum,
                removed_sum, b_old, residuals, row,
            )  # fmt: skip
            checked.append(row)
        if (curvature == LBFGS or corrected) and exact[t] and b_old > 0.0:
            kernels.pair_difference(
                new_sum, added_sum, removed_sum, b_old, g_old, step, alpha,
                n_penalized, secant,
            )  # fmt: skip
        anchored = corrected and exact[t] and b_old > 0.0
        if anchored:
            # ||step||^2, from step_from: a step of rounding noise makes no anchor.
            anchored = bound_norms[row, :1].copy_to_host()[0] > MIN_STEP_SQUARE
        if anchored:
            if scheduled and has_anchor:
                kernels.fill(d_control_sums, 0.0)
                kernels.secant_control_sums(
                    secant, plain, anchor[1], anchor_product, d_control_sums
                )
                control_sums += d_control_sums.copy_to_host()
            kernels.copy_row(step, anchor, 0)
            kernels.copy_row(secant, anchor, 1)
            has_anchor = True
        if curvature == LBFGS and exact[t] and b_old > 0.0:
            pairs.push(pair)
        out_exact[t] = True
        kernels.record_and_step(
            d_w, new_sum, b_new, learning_rates[t], alpha, n_penalized, out_w[row],
            out_g[row],
        )  # fmt: skip
        t += 1
    replayed = out_exact[t_start:]
    n_exact = int(np.count_nonzero(replayed))
    exposure = float(np.sum(moves[t_start:][~replayed]))
    residual_values = residuals.copy_to_host()
    residual_sum = 0.0
    for row in checked:
        residual_sum += math.sqrt(residual_values[row])
    n_checks = len(checked)
    out_weights[t_start:] = out_w.copy_to_host()
    out_gradients[t_start:] = out_g.copy_to_host()
    w[:] = d_w.copy_to_host()
    return w, n_exact, residual_sum, n_checks, exposure
