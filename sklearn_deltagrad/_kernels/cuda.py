"""Numba CUDA kernels: the CPU kernels' batch sums and update steps on a GPU.

Imported only when ``device="cuda"`` is requested (it imports ``numba.cuda``). The
functions named like those of :mod:`sklearn_deltagrad._kernels.cpu`,
:mod:`sklearn_deltagrad._curvature` and :mod:`sklearn_deltagrad._replay` take the
same arguments in the same order, as device arrays (``X`` a 2-D device array or a
:class:`~sklearn_deltagrad._kernels.cpu.CSRRows` of device arrays), plus a trailing
:class:`Workspace` of preallocated scratch buffers, and launch the kernels that do
the work; the parameter layout and the centring on ``offset`` are those of the CPU
kernels.

Every sum is deterministic: no atomics. A batch sum over rows is split into at most
``_MAX_CHUNKS`` chunks of consecutive rows; one thread per (chunk, parameter) adds
its chunk's rows in order into its own slot of a partial-sum array, and a second
kernel adds the chunks in order. Reductions to a scalar run in one block, each
thread striding over the vector in order, then a fixed tree in shared memory.
"""

import math

import numpy as np
from numba import config, cuda

from .cpu import BINARY_LOGISTIC, SQUARED, CSRRows

# Threads per block (powers of two, for the tree reductions). The simulator runs
# every thread as a Python thread: fewer per block keep its launches affordable.
# Reductions with a block barrier cost the simulator most: 4 threads there.
THREADS = 16 if config.ENABLE_CUDASIM else 256
_REDUCE_THREADS = 4 if config.ENABLE_CUDASIM else 1024

# Row kernels: threads per row (a power of two), rows per block, outputs per pass.
_LANES = 2 if config.ENABLE_CUDASIM else 32
_ROWS_PER_BLOCK = 8
_PASS = 16
# Loops over outputs run over the constant _PASS with a guard `if k < count`: a loop
# over the run-time count would leave the accumulator array in local memory (43-78
# local loads and stores in the row kernels' PTX), a constant one unrolls into
# registers.

# A batch sum is split into at most this many chunks, of at least _MIN_CHUNK_ROWS.
_MAX_CHUNKS = 64
_MIN_CHUNK_ROWS = 16


def n_blocks(n):
    """Blocks of a one-thread-per-element launch over ``n`` elements."""
    return max(1, (n + THREADS - 1) // THREADS)


class Workspace:
    """Scratch device buffers of one training or replay loop, allocated once.

    Parameters
    ----------
    max_rows : int
        The most rows any batch sum of the loop covers.
    n_features, n_outputs : int
        The model's sizes (parameters: ``(n_features + 1) * n_outputs`` at most).
    """

    def __init__(self, max_rows, n_features, n_outputs):
        max_rows = max(int(max_rows), 1)
        n_columns = (n_features + 1) * n_outputs
        self.outputs = cuda.device_array((max_rows, n_outputs))
        self.directions = cuda.device_array((max_rows, n_outputs))
        self.partials = cuda.to_device(np.zeros((_MAX_CHUNKS, n_columns)))
        self.shift_w = cuda.device_array(n_outputs)
        self.shift_v = cuda.device_array(n_outputs)


# ------------------------------------------------------------------ device rows


@cuda.jit(device=True)
def _sigmoid(z):
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


@cuda.jit(device=True)
def _softmax_in_place(z, idx, n_outputs):
    zmax = z[idx, 0]
    for k in range(1, n_outputs):
        if z[idx, k] > zmax:
            zmax = z[idx, k]
    total = 0.0
    for k in range(n_outputs):
        z[idx, k] = math.exp(z[idx, k] - zmax)
        total += z[idx, k]
    for k in range(n_outputs):
        z[idx, k] /= total


@cuda.jit(device=True)
def _residual_in_place(loss, Y, i, weight, z, idx, n_outputs):
    """``z[idx] <- weight * dloss/dz`` at the outputs ``z[idx]`` of row ``i``."""
    if loss == SQUARED:
        for k in range(n_outputs):
            z[idx, k] = weight * (z[idx, k] - Y[i, k])
    elif loss == BINARY_LOGISTIC:
        z[idx, 0] = weight * (_sigmoid(z[idx, 0]) - Y[i, 0])
    else:
        _softmax_in_place(z, idx, n_outputs)
        z[idx, int(Y[i, 0])] -= 1.0
        for k in range(n_outputs):
            z[idx, k] *= weight


@cuda.jit(device=True)
def _curvature_in_place(loss, weight, z, u, idx, n_outputs):
    """``z[idx] <- weight * (loss Hessian at z[idx]) u[idx]``."""
    if loss == SQUARED:
        for k in range(n_outputs):
            z[idx, k] = weight * u[idx, k]
    elif loss == BINARY_LOGISTIC:
        prob = _sigmoid(z[idx, 0])
        z[idx, 0] = weight * prob * (1.0 - prob) * u[idx, 0]
    else:
        _softmax_in_place(z, idx, n_outputs)
        dot = 0.0
        for k in range(n_outputs):
            dot += z[idx, k] * u[idx, k]
        for k in range(n_outputs):
            z[idx, k] = weight * z[idx, k] * (u[idx, k] - dot)


@cuda.jit
def _output_shifts(w, v, offset, n_outputs, fit_intercept, shift_w, shift_v):
    """``shift = b - offset W`` of ``w`` (block ``k``) and of ``v`` (block
    ``n_outputs + k``; launch ``n_outputs`` blocks for ``w`` alone): the outputs
    of a row of zeros. The block's threads stride over the features and add
    their shares in a fixed tree: one thread per output would run a chain of
    ``n_features`` dependent loads."""
    buffer = cuda.shared.array(THREADS, np.float64)
    k = cuda.blockIdx.x % n_outputs
    of_v = cuda.blockIdx.x >= n_outputs
    params = v if of_v else w
    n_features = offset.shape[0]
    value = 0.0
    for j in range(cuda.threadIdx.x, n_features, cuda.blockDim.x):
        value += offset[j] * params[j * n_outputs + k]
    total = _block_total(value, buffer)
    if cuda.threadIdx.x == 0:
        shift = params[n_features * n_outputs + k] if fit_intercept else 0.0
        if of_v:
            shift_v[k] = shift - total
        else:
            shift_w[k] = shift - total


# A row's outputs x_i W: a group of _LANES threads per row strides over the row's
# entries (adjacent threads read adjacent entries), each thread accumulating up to
# _PASS outputs at a time, then a fixed tree adds the lanes. A block holds
# _ROWS_PER_BLOCK such groups.


@cuda.jit(device=True)
def _dense_lane_sums(X, i, w, n_outputs, first, count, lane, acc):
    for k in range(_PASS):
        if k < count:
            acc[k] = 0.0
    for j in range(lane, X.shape[1], _LANES):
        x = X[i, j]
        base = j * n_outputs + first
        for k in range(_PASS):
            if k < count:
                acc[k] += x * w[base + k]


@cuda.jit(device=True)
def _csr_lane_sums(data, indices, indptr, i, w, n_outputs, first, count, lane, acc):
    for k in range(_PASS):
        if k < count:
            acc[k] = 0.0
    for e in range(indptr[i] + lane, indptr[i + 1], _LANES):
        x = data[e]
        base = indices[e] * n_outputs + first
        for k in range(_PASS):
            if k < count:
                acc[k] += x * w[base + k]


@cuda.jit(device=True)
def _write_lane_totals(acc, count, buffer, shift, first, z, idx, valid):
    """``z[idx, first + k] = shift[first + k] + sum over lanes of acc[k]``; every
    thread of the block calls it (it synchronises the block)."""
    slot = cuda.threadIdx.y
    lane = cuda.threadIdx.x
    for k in range(_PASS):
        if k < count:
            buffer[slot, k, lane] = acc[k]
    cuda.syncthreads()
    half = _LANES // 2
    while half > 0:
        if lane < half:
            for k in range(count):
                buffer[slot, k, lane] += buffer[slot, k, lane + half]
        cuda.syncthreads()
        half //= 2
    if valid and lane == 0:
        for k in range(count):
            z[idx, first + k] = shift[first + k] + buffer[slot, k, 0]
    cuda.syncthreads()


@cuda.jit(device=True)
def _dense_row_outputs(X, rows, w, shift, n_outputs, z, buffer, acc):
    """``z[idx] = shift + x_rows[idx] W`` for this thread group's row ``idx``."""
    idx = cuda.blockIdx.x * _ROWS_PER_BLOCK + cuda.threadIdx.y
    valid = idx < rows.shape[0]
    i = rows[idx] if valid else 0
    for first in range(0, n_outputs, _PASS):
        count = min(_PASS, n_outputs - first)
        if valid:
            _dense_lane_sums(X, i, w, n_outputs, first, count, cuda.threadIdx.x, acc)
        else:
            for k in range(_PASS):
                if k < count:
                    acc[k] = 0.0
        _write_lane_totals(acc, count, buffer, shift, first, z, idx, valid)


@cuda.jit(device=True)
def _csr_row_outputs(data, indices, indptr, rows, w, shift, n_outputs, z, buffer, acc):
    """As :func:`_dense_row_outputs` for CSR rows."""
    idx = cuda.blockIdx.x * _ROWS_PER_BLOCK + cuda.threadIdx.y
    valid = idx < rows.shape[0]
    i = rows[idx] if valid else 0
    lane = cuda.threadIdx.x
    for first in range(0, n_outputs, _PASS):
        count = min(_PASS, n_outputs - first)
        if valid:
            _csr_lane_sums(
                data, indices, indptr, i, w, n_outputs, first, count, lane, acc
            )
        else:
            for k in range(_PASS):
                if k < count:
                    acc[k] = 0.0
        _write_lane_totals(acc, count, buffer, shift, first, z, idx, valid)


@cuda.jit(device=True)
def _finish_gradient_row(loss, Y, sample_weight, rows, n_outputs, r):
    """Lane 0 of each row group turns the row's outputs into its weighted loss
    derivative."""
    idx = cuda.blockIdx.x * _ROWS_PER_BLOCK + cuda.threadIdx.y
    if idx < rows.shape[0] and cuda.threadIdx.x == 0:
        i = rows[idx]
        _residual_in_place(loss, Y, i, sample_weight[i], r, idx, n_outputs)


@cuda.jit(device=True)
def _finish_curvature_row(loss, sample_weight, rows, n_outputs, r, u):
    """Lane 0 of each row group turns the row's outputs into its weighted loss
    Hessian times ``u``."""
    idx = cuda.blockIdx.x * _ROWS_PER_BLOCK + cuda.threadIdx.y
    if idx < rows.shape[0] and cuda.threadIdx.x == 0:
        _curvature_in_place(loss, sample_weight[rows[idx]], r, u, idx, n_outputs)


@cuda.jit
def _dense_gradient_rows(X, Y, sample_weight, rows, w, shift, loss, n_outputs, r):
    buffer = cuda.shared.array((_ROWS_PER_BLOCK, _PASS, _LANES), np.float64)
    acc = cuda.local.array(_PASS, np.float64)
    _dense_row_outputs(X, rows, w, shift, n_outputs, r, buffer, acc)
    _finish_gradient_row(loss, Y, sample_weight, rows, n_outputs, r)


@cuda.jit
def _csr_gradient_rows(
    data, indices, indptr, Y, sample_weight, rows, w, shift, loss, n_outputs, r
):
    buffer = cuda.shared.array((_ROWS_PER_BLOCK, _PASS, _LANES), np.float64)
    acc = cuda.local.array(_PASS, np.float64)
    _csr_row_outputs(data, indices, indptr, rows, w, shift, n_outputs, r, buffer, acc)
    _finish_gradient_row(loss, Y, sample_weight, rows, n_outputs, r)


@cuda.jit
def _dense_hessian_rows(
    X, sample_weight, rows, w, v, shift_w, shift_v, loss, n_outputs, r, u
):
    buffer = cuda.shared.array((_ROWS_PER_BLOCK, _PASS, _LANES), np.float64)
    acc = cuda.local.array(_PASS, np.float64)
    _dense_row_outputs(X, rows, w, shift_w, n_outputs, r, buffer, acc)
    _dense_row_outputs(X, rows, v, shift_v, n_outputs, u, buffer, acc)
    _finish_curvature_row(loss, sample_weight, rows, n_outputs, r, u)


@cuda.jit
def _csr_hessian_rows(
    data, indices, indptr, sample_weight, rows, w, v, shift_w, shift_v, loss,
    n_outputs, r, u,
):  # fmt: skip
    buffer = cuda.shared.array((_ROWS_PER_BLOCK, _PASS, _LANES), np.float64)
    acc = cuda.local.array(_PASS, np.float64)
    _csr_row_outputs(data, indices, indptr, rows, w, shift_w, n_outputs, r, buffer, acc)
    _csr_row_outputs(data, indices, indptr, rows, v, shift_v, n_outputs, u, buffer, acc)
    _finish_curvature_row(loss, sample_weight, rows, n_outputs, r, u)


def _row_groups(n_rows):
    """Launch shape of the row kernels: blocks of ``_ROWS_PER_BLOCK`` row groups."""
    n_blocks = (n_rows + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK
    return n_blocks, (_LANES, _ROWS_PER_BLOCK)


# ------------------------------------------------------------ sums over the rows


@cuda.jit(device=True)
def _column_entry(X, rows, idx, j, n_features):
    """``x[rows[idx], j]``, and 1 in the column ``j = n_features`` (the totals)."""
    return X[rows[idx], j] if j < n_features else 1.0


@cuda.jit
def _dense_chunk_sums(X, rows, r, n_outputs, chunk_rows, partials):
    """``partials[c, j K + k] = sum_{idx in chunk c} r[idx, k] x[rows[idx], j]``:
    one thread per (feature ``j``, chunk ``c``), adjacent threads on adjacent
    features; thread ``j = n_features`` writes ``sum r[idx, k]`` (the totals).
    Rows go four at a time, their entries loaded before the sums use them (four
    loads in flight instead of one), and are added in order."""
    j = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    c = cuda.blockIdx.y
    n_features = X.shape[1]
    if j > n_features:
        return
    acc = cuda.local.array(_PASS, np.float64)
    lo = c * chunk_rows
    hi = min(lo + chunk_rows, rows.shape[0])
    for first in range(0, n_outputs, _PASS):
        count = min(_PASS, n_outputs - first)
        for k in range(_PASS):
            if k < count:
                acc[k] = 0.0
        idx = lo
        while idx + 4 <= hi:
            x0 = _column_entry(X, rows, idx, j, n_features)
            x1 = _column_entry(X, rows, idx + 1, j, n_features)
            x2 = _column_entry(X, rows, idx + 2, j, n_features)
            x3 = _column_entry(X, rows, idx + 3, j, n_features)
            for k in range(_PASS):
                if k < count:
                    q = first + k
                    value = acc[k] + r[idx, q] * x0
                    value += r[idx + 1, q] * x1
                    value += r[idx + 2, q] * x2
                    acc[k] = value + r[idx + 3, q] * x3
            idx += 4
        for tail in range(idx, hi):
            x = _column_entry(X, rows, tail, j, n_features)
            for k in range(_PASS):
                if k < count:
                    acc[k] += r[tail, first + k] * x
        for k in range(_PASS):
            if k < count:
                partials[c, j * n_outputs + first + k] = acc[k]


@cuda.jit
def _csr_chunk_sums(data, indices, indptr, rows, r, n_outputs, chunk_rows, partials):
    """As :func:`_dense_chunk_sums` for CSR rows: one thread per (chunk, output)
    scatters its rows into its own slots (which start at zero)."""
    t = cuda.grid(1)
    n_chunks = (rows.shape[0] + chunk_rows - 1) // chunk_rows
    if t >= n_chunks * n_outputs:
        return
    c = t // n_outputs
    k = t % n_outputs
    totals = partials.shape[1] - n_outputs
    lo = c * chunk_rows
    hi = min(lo + chunk_rows, rows.shape[0])
    for idx in range(lo, hi):
        i = rows[idx]
        ri = r[idx, k]
        for e in range(indptr[i], indptr[i + 1]):
            partials[c, indices[e] * n_outputs + k] += data[e] * ri
        partials[c, totals + k] += ri


@cuda.jit
def _zero_rows(partials, n_chunks):
    q = cuda.grid(1)
    if q < partials.shape[1]:
        for c in range(n_chunks):
            partials[c, q] = 0.0


@cuda.jit
def _add_chunks(partials, n_chunks, offset, n_outputs, fit_intercept, accumulate, out):
    """``out += sum_c partials[c]`` (``=`` unless ``accumulate``), centred:
    ``(x - offset, 1) (outer) r``."""
    q = cuda.grid(1)
    n_features = offset.shape[0]
    totals = n_features * n_outputs
    if q >= out.shape[0]:
        return
    k = q % n_outputs
    base = out[q] if accumulate else 0.0
    total = 0.0
    for c in range(n_chunks):
        total += partials[c, totals + k]
    if q < totals:
        value = 0.0
        for c in range(n_chunks):
            value += partials[c, q]
        out[q] = base + (value - offset[q // n_outputs] * total)
    elif fit_intercept:
        out[q] = base + total


def _chunking(n_rows):
    n_chunks = min(_MAX_CHUNKS, max(1, n_rows // _MIN_CHUNK_ROWS))
    chunk_rows = (n_rows + n_chunks - 1) // n_chunks
    return (n_rows + chunk_rows - 1) // chunk_rows, chunk_rows


def _add_row_sums(
    X, rows, r, offset, n_outputs, fit_intercept, out, workspace, accumulate
):
    """``out += sum_idx (x_rows[idx] - offset, 1) (outer) r[idx]`` (``=`` unless
    ``accumulate``)."""
    n_chunks, chunk_rows = _chunking(rows.shape[0])
    partials = workspace.partials
    n_columns = partials.shape[1]
    if isinstance(X, CSRRows):
        _csr_chunk_sums[n_blocks(n_chunks * n_outputs), THREADS](
            X.data, X.indices, X.indptr, rows, r, n_outputs, chunk_rows, partials
        )
    else:
        _dense_chunk_sums[(n_blocks(X.shape[1] + 1), n_chunks), THREADS](
            X, rows, r, n_outputs, chunk_rows, partials
        )
    _add_chunks[n_blocks(out.shape[0]), THREADS](
        partials, n_chunks, offset, n_outputs, fit_intercept, accumulate, out
    )
    if isinstance(X, CSRRows):
        # The scatter adds into its slots: leave them at zero for the next sum.
        _zero_rows[n_blocks(n_columns), THREADS](partials, n_chunks)


def gradient_sum(
    X, Y, sample_weight, rows, w, offset, loss, n_outputs, fit_intercept, out,
    workspace, accumulate=True,
):  # fmt: skip
    """Add the weighted sum over ``rows`` of the loss gradients at ``w`` to ``out``
    (write it there when not ``accumulate``: saves zeroing ``out`` first)."""
    n_rows = rows.shape[0]
    if n_rows == 0:
        if not accumulate:
            fill(out, 0.0)
        return
    shift, r = workspace.shift_w, workspace.outputs
    _output_shifts[n_outputs, THREADS](
        w, w, offset, n_outputs, fit_intercept, shift, workspace.shift_v
    )
    if isinstance(X, CSRRows):
        _csr_gradient_rows[_row_groups(n_rows)](
            X.data, X.indices, X.indptr, Y, sample_weight, rows, w, shift, loss,
            n_outputs, r,
        )  # fmt: skip
    else:
        _dense_gradient_rows[_row_groups(n_rows)](
            X, Y, sample_weight, rows, w, shift, loss, n_outputs, r
        )
    _add_row_sums(
        X, rows, r, offset, n_outputs, fit_intercept, out, workspace, accumulate
    )


def hessian_vector_sum(
    X, Y, sample_weight, rows, w, v, offset, loss, n_outputs, fit_intercept, out,
    workspace, accumulate=True,
):  # fmt: skip
    """Add the weighted sum over ``rows`` of the loss Hessians at ``w`` times ``v``
    (write it there when not ``accumulate``)."""
    n_rows = rows.shape[0]
    if n_rows == 0:
        if not accumulate:
            fill(out, 0.0)
        return
    shift_w, shift_v = workspace.shift_w, workspace.shift_v
    r, u = workspace.outputs, workspace.directions
    _output_shifts[2 * n_outputs, THREADS](
        w, v, offset, n_outputs, fit_intercept, shift_w, shift_v
    )
    if isinstance(X, CSRRows):
        _csr_hessian_rows[_row_groups(n_rows)](
            X.data, X.indices, X.indptr, sample_weight, rows, w, v, shift_w,
            shift_v, loss, n_outputs, r, u,
        )  # fmt: skip
    else:
        _dense_hessian_rows[_row_groups(n_rows)](
            X, sample_weight, rows, w, v, shift_w, shift_v, loss, n_outputs, r, u
        )
    _add_row_sums(
        X, rows, r, offset, n_outputs, fit_intercept, out, workspace, accumulate
    )


# ------------------------------------------------------------- vector kernels


@cuda.jit
def _fill_kernel(v, value):
    i = cuda.grid(1)
    if i < v.shape[0]:
        v[i] = value


def fill(v, value):
    """``v[:] = value`` for a 1-D device array."""
    _fill_kernel[n_blocks(v.shape[0]), THREADS](v, value)


@cuda.jit(device=True)
def _block_total(value, buffer):
    """The sum of ``value`` over the block's threads, in a fixed tree order."""
    t = cuda.threadIdx.x
    buffer[t] = value
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if t < half:
            buffer[t] += buffer[t + half]
        cuda.syncthreads()
        half //= 2
    total = buffer[0]
    cuda.syncthreads()
    return total


@cuda.jit
def _record_and_step_kernel(
    w, batch_sum, batch_weight, learning_rate, alpha, n_penalized, w_row, g_row
):
    i = cuda.grid(1)
    if i >= w.shape[0]:
        return
    wi = w[i]
    gradient = batch_sum[i] / batch_weight
    w_row[i] = wi
    g_row[i] = gradient
    if i < n_penalized:
        gradient += alpha * wi
    w[i] = wi - learning_rate * gradient


def record_and_step(
    w, batch_sum, batch_weight, learning_rate, alpha, n_penalized, w_row, g_row
):
    """Cache ``w`` and the batch's mean loss gradient, then take the SGD step."""
    _record_and_step_kernel[n_blocks(w.shape[0]), THREADS](
        w, batch_sum, batch_weight, learning_rate, alpha, n_penalized, w_row, g_row
    )


@cuda.jit
def _approximate_step_kernel(
    estimate, cached_gradient, w_old, w, removed_sum, added_sum, has_removed,
    has_added, b_old, b_new, learning_rate, alpha, n_penalized, w_row, g_row,
    norm_partials,
):  # fmt: skip
    buffer = cuda.shared.array(THREADS, np.float64)
    i = cuda.grid(1)
    square = 0.0
    if i < w.shape[0]:
        wi = w[i]
        square = estimate[i] * estimate[i]
        value = estimate[i] + cached_gradient[i]
        if i < n_penalized:
            value += alpha * w_old[i]
            value += -alpha * wi
        total = b_old * value
        if has_removed:
            total -= removed_sum[i]
        if has_added:
            total += added_sum[i]
        gradient = total / b_new
        w_row[i] = wi
        g_row[i] = gradient
        if i < n_penalized:
            gradient += alpha * wi
        w[i] = wi - learning_rate * gradient
    # This block's share of ||estimate||^2, for the curvature bound's check.
    total_square = _block_total(square, buffer)
    if cuda.threadIdx.x == 0:
        norm_partials[cuda.blockIdx.x] = total_square


def approximate_step(
    estimate, cached_gradient, w_old, w, removed_sum, added_sum, has_removed,
    has_added, b_old, b_new, learning_rate, alpha, n_penalized, w_row, g_row,
    norm_partials,
):  # fmt: skip
    """An approximate iteration's step from the curvature product ``estimate``
    (see the CPU ``_approximate_step``), one thread per parameter; block ``b``
    also writes its share of ``||estimate||^2`` to ``norm_partials[b]`` (there are
    :func:`n_blocks` of them, to be added in order)."""
    _approximate_step_kernel[n_blocks(w.shape[0]), THREADS](
        estimate, cached_gradient, w_old, w, removed_sum, added_sum, has_removed,
        has_added, b_old, b_new, learning_rate, alpha, n_penalized, w_row, g_row,
        norm_partials,
    )  # fmt: skip


@cuda.jit
def _step_kernel(w, w_old, step, midpoint, norms):
    """``step = w - w_old``, ``midpoint = w_old + step / 2``, ``norms[0] =
    ||step||^2`` (one block)."""
    buffer = cuda.shared.array(_REDUCE_THREADS, np.float64)
    value = 0.0
    for i in range(cuda.threadIdx.x, w.shape[0], cuda.blockDim.x):
        s = w[i] - w_old[i]
        step[i] = s
        midpoint[i] = w_old[i] + 0.5 * s
        value += s * s
    total = _block_total(value, buffer)
    if cuda.threadIdx.x == 0:
        norms[0] = total


def step_from(w, w_old, step, midpoint, norms):
    """``step``, ``midpoint`` and ``||step||^2`` (into ``norms[0]``)."""
    _step_kernel[1, _REDUCE_THREADS](w, w_old, step, midpoint, norms)


@cuda.jit
def _residual_kernel(
    estimate, cached_gradient, w_old, w, alpha, n_penalized, new_sum, added_sum,
    removed_sum, b_old, norms, slot,
):  # fmt: skip
    buffer = cuda.shared.array(_REDUCE_THREADS, np.float64)
    value = 0.0
    for i in range(cuda.threadIdx.x, w.shape[0], cuda.blockDim.x):
        modelled = estimate[i] + cached_gradient[i]
        if i < n_penalized:
            modelled += alpha * w_old[i]
            modelled += -alpha * w[i]
        diff = (new_sum[i] - added_sum[i] + removed_sum[i]) / b_old - modelled
        value += diff * diff
    total = _block_total(value, buffer)
    if cuda.threadIdx.x == 0:
        norms[slot] = total


def residual_square_norm(
    estimate, cached_gradient, w_old, w, alpha, n_penalized, new_sum, added_sum,
    removed_sum, b_old, norms, slot,
):  # fmt: skip
    """``norms[slot] = ||(new - added + removed) / b_old - modelled||^2`` where the
    modelled loss gradient is ``estimate + g_t + alpha P (w_t - w)``."""
    _residual_kernel[1, _REDUCE_THREADS](
        estimate, cached_gradient, w_old, w, alpha, n_penalized, new_sum, added_sum,
        removed_sum, b_old, norms, slot,
    )  # fmt: skip


@cuda.jit
def _pair_difference_kernel(
    new_sum, added_sum, removed_sum, b_old, cached_gradient, step, alpha,
    n_penalized, y,
):  # fmt: skip
    i = cuda.grid(1)
    if i >= y.shape[0]:
        return
    value = (new_sum[i] - added_sum[i] + removed_sum[i]) / b_old - cached_gradient[i]
    if i < n_penalized:
        value += alpha * step[i]
    y[i] = value


def pair_difference(
    new_sum, added_sum, removed_sum, b_old, cached_gradient, step, alpha,
    n_penalized, y,
):  # fmt: skip
    """The L-BFGS pair's ``y``: the original batch's regularised gradient change."""
    _pair_difference_kernel[n_blocks(y.shape[0]), THREADS](
        new_sum, added_sum, removed_sum, b_old, cached_gradient, step, alpha,
        n_penalized, y,
    )  # fmt: skip


@cuda.jit
def _combine_kernel(x, a, y, out):
    i = cuda.grid(1)
    if i < out.shape[0]:
        out[i] = x[i] + a * y[i]


def combine(x, a, y, out):
    """``out = x + a * y`` (``out`` may be ``x``)."""
    _combine_kernel[n_blocks(out.shape[0]), THREADS](x, a, y, out)


@cuda.jit
def _secant_control_kernel(secant, plain, anchor_secant, anchor_product, sums):
    buffer = cuda.shared.array(_REDUCE_THREADS, np.float64)
    cross = 0.0
    square = 0.0
    for i in range(cuda.threadIdx.x, secant.shape[0], cuda.blockDim.x):
        control = anchor_secant[i] - anchor_product[i]
        cross += (secant[i] - plain[i]) * control
        square += control * control
    cross_total = _block_total(cross, buffer)
    square_total = _block_total(square, buffer)
    if cuda.threadIdx.x == 0:
        sums[0] += cross_total
        sums[1] += square_total


def secant_control_sums(secant, plain, anchor_secant, anchor_product, sums):
    """Add one check's terms to the secant weight's least-squares sums (device
    array of 2; see the CPU ``secant_control_sums``), in a fixed order."""
    _secant_control_kernel[1, _REDUCE_THREADS](
        secant, plain, anchor_secant, anchor_product, sums
    )


@cuda.jit
def _row_dots_kernel(A, a_rows, B, b_rows, out):
    """``out[d] = A[a_rows[d]] . B[b_rows[d]]``, one block per dot."""
    buffer = cuda.shared.array(_REDUCE_THREADS, np.float64)
    d = cuda.blockIdx.x
    a = a_rows[d]
    b = b_rows[d]
    value = 0.0
    for i in range(cuda.threadIdx.x, A.shape[1], cuda.blockDim.x):
        value += A[a, i] * B[b, i]
    total = _block_total(value, buffer)
    if cuda.threadIdx.x == 0:
        out[d] = total


def row_dots(A, a_rows, B, b_rows, out):
    """``out[d] = A[a_rows[d]] . B[b_rows[d]]`` for every ``d`` (device arrays)."""
    if a_rows.shape[0]:
        _row_dots_kernel[a_rows.shape[0], _REDUCE_THREADS](A, a_rows, B, b_rows, out)


@cuda.jit
def _copy_row_kernel(source, target, row):
    i = cuda.grid(1)
    if i < source.shape[0]:
        target[row, i] = source[i]


def copy_row(source, target, row):
    """``target[row] = source``."""
    _copy_row_kernel[n_blocks(source.shape[0]), THREADS](source, target, row)


# ------------------------------------------------------------ curvature products


@cuda.jit
def _lbfgs_projections_kernel(S, Yp, slots, first, n_used, sigma, step, projections):
    buffer = cuda.shared.array(_REDUCE_THREADS, np.float64)
    b = cuda.blockIdx.x
    row = slots[first + b % n_used]
    value = 0.0
    for i in range(cuda.threadIdx.x, step.shape[0], cuda.blockDim.x):
        value += (S[row, i] if b < n_used else Yp[row, i]) * step[i]
    total = _block_total(value, buffer)
    if cuda.threadIdx.x == 0:
        projections[b] = sigma * total if b < n_used else total


@cuda.jit
def _lbfgs_coefficients_kernel(middle_inv, projections, n_used, sigma, coefficients):
    i = cuda.grid(1)
    if i >= 2 * n_used:
        return
    value = 0.0
    for j in range(2 * n_used):
        value += middle_inv[i, j] * projections[j]
    coefficients[i] = sigma * value if i < n_used else value


@cuda.jit
def _lbfgs_output_kernel(S, Yp, slots, first, n_used, sigma, coefficients, v, out):
    j = cuda.grid(1)
    if j >= v.shape[0]:
        return
    value = sigma * v[j]
    for i in range(n_used):
        row = slots[first + i]
        value -= coefficients[i] * S[row, j] + coefficients[n_used + i] * Yp[row, j]
    out[j] = value


def lbfgs_product(
    S, Yp, slots, first, n_pairs, sigma, middle_inv, v, out, projections, coefficients
):
    """``out = B v`` for the compact L-BFGS matrix (see the CPU
    :func:`~sklearn_deltagrad._curvature.lbfgs_product`); ``projections`` and
    ``coefficients`` are device scratch of ``2 m`` floats."""
    n_used = n_pairs - first
    _lbfgs_projections_kernel[2 * n_used, _REDUCE_THREADS](
        S, Yp, slots, first, n_used, sigma, v, projections
    )
    _lbfgs_coefficients_kernel[n_blocks(2 * n_used), THREADS](
        middle_inv, projections, n_used, sigma, coefficients
    )
    _lbfgs_output_kernel[n_blocks(v.shape[0]), THREADS](
        S, Yp, slots, first, n_used, sigma, coefficients, v, out
    )


@cuda.jit
def _combine_hessian_kernel(
    sample_part, removed_part, has_removed, sample_scale, old_weight, v, alpha,
    n_penalized, out,
):  # fmt: skip
    i = cuda.grid(1)
    if i >= out.shape[0]:
        return
    value = sample_part[i] * sample_scale
    if has_removed:
        value += removed_part[i]
    if old_weight > 0.0:
        value /= old_weight
    if i < n_penalized:
        value += alpha * v[i]
    out[i] = value


def subsampled_hessian_product(
    X, Y, sample_weight, sample, sample_weight_sum, kept_weight, removed,
    removed_weight, w, v, alpha, offset, loss, n_outputs, fit_intercept, out,
    workspace, removed_part,
):  # fmt: skip
    """``out = (H + alpha P) v`` for the original batch's Hessian at ``w`` (see the
    CPU :func:`~sklearn_deltagrad._curvature.subsampled_hessian_product`; the
    sample's and the removed rows' weights are summed by the caller)."""
    scale = 0.0
    if sample_weight_sum > 0.0:
        hessian_vector_sum(
            X, Y, sample_weight, sample, w, v, offset, loss, n_outputs,
            fit_intercept, out, workspace, accumulate=False,
        )  # fmt: skip
        scale = kept_weight / sample_weight_sum
    else:
        fill(out, 0.0)
    has_removed = removed.shape[0] > 0
    if has_removed:
        hessian_vector_sum(
            X, Y, sample_weight, removed, w, v, offset, loss, n_outputs,
            fit_intercept, removed_part, workspace, accumulate=False,
        )  # fmt: skip
    _combine_hessian_kernel[n_blocks(out.shape[0]), THREADS](
        out, removed_part, has_removed, scale, kept_weight + removed_weight, v,
        alpha, offset.shape[0] * n_outputs, out,
    )  # fmt: skip


@cuda.jit
def _reference_correction_kernel(reference_hessian, reference_weight, v, factor, out):
    i = cuda.grid(1)
    if i >= out.shape[0]:
        return
    full = 0.0
    for j in range(v.shape[0]):
        full += reference_hessian[i, j] * v[j]
    out[i] += factor * full / reference_weight


def add_reference_correction(reference_hessian, reference_weight, v, factor, out):
    """``out += factor * H_r v / n_r`` (see the CPU
    :func:`~sklearn_deltagrad._curvature.add_reference_correction`)."""
    _reference_correction_kernel[n_blocks(out.shape[0]), THREADS](
        reference_hessian, reference_weight, v, factor, out
    )


@cuda.jit
def _gram_product_kernel(
    gram, offset, batch_weight, v, alpha, n_outputs, n_penalized, out
):  # fmt: skip
    q = cuda.grid(1)
    if q >= out.shape[0]:
        return
    j = q // n_outputs
    k = q % n_outputs
    n_columns = gram.shape[1]
    value = 0.0
    # Column j (the matrix is symmetric), in the order of the CPU's row-by-row sum;
    # the threads of a warp read adjacent entries.
    for col in range(n_columns):
        value += gram[col, j] * v[col * n_outputs + k]
    # The pending centring (row q of the Gram), each thread taking the two dot
    # products it needs: q is at most a few hundred.
    pending = gram[n_columns]
    m_v = 0.0
    r_v = 0.0
    for col in range(n_columns):
        r_v += pending[col] * v[col * n_outputs + k]
    for col in range(offset.shape[0]):
        m_v += offset[col] * v[col * n_outputs + k]
    value -= pending[j] * m_v
    if j < offset.shape[0]:
        value -= offset[j] * r_v
    value /= batch_weight
    if q < n_penalized:
        value += alpha * v[q]
    out[q] = value


def gram_product(gram, offset, batch_weight, v, alpha, n_outputs, n_penalized, out):
    """``out = (G_b / batch_weight) (x) I_K v + alpha P v``, ``G_b`` the batch's Gram
    (see the CPU :func:`~sklearn_deltagrad._curvature.gram_product`)."""
    _gram_product_kernel[n_blocks(out.shape[0]), THREADS](
        gram, offset, batch_weight, v, alpha, n_outputs, n_penalized, out
    )
