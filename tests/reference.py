"""A plain-NumPy oracle for the package: losses, cached SGD, exact retrain, DeltaGrad.

Written independently of the Numba code (no numba import, vectorised NumPy) from the
design brief (``shared/DESIGN.md`` sections 2-4). It reads an estimator's internal
state only through plain arrays:

- rows: ``X`` (n, p), ``Y`` (n, q) -- regression targets for the squared loss, 0/1
  for the binary logistic loss, the class index for the multinomial loss -- and the
  sorted stable ``ids``;
- a schedule: ``batch_ptr`` (T + 1), ``batch_ids`` (stable ids), ``learning_rates``;
- a model: ``loss`` (0 squared, 1 binary logistic, 2 multinomial), ``n_outputs`` K,
  ``fit_intercept``, ``alpha``, ``n_features`` p and, optionally, ``offset`` (p,):
  the feature means the parametrisation is centred on (zeros when absent).

Parameters are a flat vector ``w`` of length ``d = (p + fit_intercept) * K``:
``W = w[:p*K].reshape(p, K)`` are the coefficients, ``b = w[p*K:]`` the K intercepts,
and the outputs of a row are ``(x - offset) W + b`` -- the sklearn model with
``coef_ = W'`` and ``intercept_ = b - offset W``. The objective of a batch is its
mean loss plus ``(alpha/2) ||P w||^2``, where ``P`` zeroes the intercepts; an SGD step
is ``w <- w - eta_t (g_batch(w) + alpha P w)``, and an empty batch leaves ``w``
unchanged.

Rows may carry non-negative weights ``sample_weight`` (aligned with the rows of ``X``;
``None`` means ones, and then every result is exactly the unweighted one): sums over
rows are weighted, a batch's gradient is the weighted mean ``sum_i s_i g_i / sum_i
s_i``, and a batch of zero total weight is skipped like an empty one. ``X`` may also
be a scipy sparse matrix or float32; it is read as a dense float64 array.
"""

from dataclasses import dataclass

import numpy as np

SQUARED = 0
BINARY_LOGISTIC = 1
MULTINOMIAL = 2

# Safeguards of the replay (DESIGN section 4; values of sklearn_deltagrad._curvature).
MIN_PAIR_NORM2 = 1e-30
MIN_CURVATURE = 1e-10
MAX_CONDITION = 1e12
MIN_SIGMA = 1e-8


@dataclass(frozen=True)
class Model:
    """A stand-in for the package's model description (any object with these works)."""

    loss: int
    n_outputs: int
    fit_intercept: bool
    alpha: float
    n_features: int
    offset: np.ndarray | None = None


# --------------------------------------------------------------------------- layout
def dense(X):
    """``X`` as a dense float64 array (sparse matrices are densified)."""
    if hasattr(X, "toarray"):
        X = X.toarray()
    return np.asarray(X, dtype=np.float64)


def weights_of(sample_weight, n_rows):
    """Row weights as float64: ``sample_weight``, or ones when it is None."""
    if sample_weight is None:
        return np.ones(n_rows)
    sample_weight = np.asarray(sample_weight, dtype=np.float64)
    assert sample_weight.shape == (n_rows,), "one weight per row"
    return sample_weight


def n_params(model):
    return (model.n_features + int(model.fit_intercept)) * model.n_outputs


def penalty_mask(model):
    """Diagonal of ``P``: 1 on the coefficients, 0 on the intercepts."""
    mask = np.zeros(n_params(model))
    mask[: model.n_features * model.n_outputs] = 1.0
    return mask


def offset_of(model):
    """The centring of the parametrisation: ``model.offset``, or zeros."""
    offset = getattr(model, "offset", None)
    if offset is None:
        return np.zeros(model.n_features)
    return np.asarray(offset, dtype=np.float64)


def split_params(w, model):
    """``(W, b)``: coefficients ``(p, K)`` and intercepts ``(K,)`` of a flat ``w``."""
    p, k = model.n_features, model.n_outputs
    coef = w[: p * k].reshape(p, k)
    intercept = w[p * k :] if model.fit_intercept else np.zeros(k)
    return coef, intercept


def sklearn_coefficients(w, model):
    """``(coef_, intercept_)`` in sklearn's layout: ``(K, p)`` and ``(K,)``."""
    coef, intercept = split_params(w, model)
    return coef.T, intercept - offset_of(model) @ coef


def augmented(X, model):
    """``X - offset``, with a column of ones when the model has intercepts."""
    X = dense(X) - offset_of(model)
    if model.fit_intercept:
        return np.hstack([X, np.ones((X.shape[0], 1))])
    return X


def outputs(X, w, model):
    """Linear outputs ``Z = (X - offset) W + b``, shape ``(n, K)``."""
    coef, intercept = split_params(w, model)
    X = dense(X) - offset_of(model)
    return X @ coef + intercept


# --------------------------------------------------------------------------- losses
def sigmoid(z):
    # tanh form: stable for any z, and not the formula the kernels use.
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def softmax(Z):
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def one_hot(Y, n_classes):
    labels = np.asarray(Y)[:, 0].astype(np.int64)
    return np.eye(n_classes)[labels]


def loss_values(Z, Y, model):
    """Per-row loss at outputs ``Z``."""
    if model.loss == SQUARED:
        return 0.5 * ((Z - Y) ** 2).sum(axis=1)
    if model.loss == BINARY_LOGISTIC:
        z, y = Z[:, 0], Y[:, 0]
        return np.logaddexp(0.0, z) - y * z
    shifted = Z - Z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    return log_norm - (shifted * one_hot(Y, model.n_outputs)).sum(axis=1)


def residuals(Z, Y, model):
    """Derivative of each row's loss in its outputs, shape ``(n, K)``."""
    if model.loss == SQUARED:
        return Z - Y
    if model.loss == BINARY_LOGISTIC:
        return sigmoid(Z) - Y
    return softmax(Z) - one_hot(Y, model.n_outputs)


def output_curvatures(Z, model):
    """Hessian of each row's loss in its outputs, shape ``(n, K, K)``."""
    n, k = Z.shape
    if model.loss == SQUARED:
        return np.broadcast_to(np.eye(k), (n, k, k)).copy()
    if model.loss == BINARY_LOGISTIC:
        prob = sigmoid(Z)
        return (prob * (1.0 - prob))[:, :, None]
    prob = softmax(Z)
    return np.einsum("ik,kl->ikl", prob, np.eye(k)) - np.einsum(
        "ik,il->ikl", prob, prob
    )


def loss_sum(X, Y, w, model, sample_weight=None):
    """(Weighted) sum of the per-row losses at ``w``."""
    values = loss_values(outputs(X, w, model), Y, model)
    if sample_weight is not None:
        values = values * weights_of(sample_weight, values.shape[0])
    return float(values.sum())


def gradient_sum(X, Y, w, model, sample_weight=None):
    """(Weighted) sum over the rows of the loss gradients at ``w`` (flat layout)."""
    R = residuals(outputs(X, w, model), Y, model)
    if sample_weight is not None:
        R = R * weights_of(sample_weight, R.shape[0])[:, None]
    return (augmented(X, model).T @ R).ravel()


def hessian(X, Y, w, model, sample_weight=None):
    """Dense ``d x d`` Hessian of the (weighted) summed loss at ``w``."""
    Xa = augmented(X, model)
    A = output_curvatures(outputs(X, w, model), model)
    if sample_weight is not None:
        A = A * weights_of(sample_weight, A.shape[0])[:, None, None]
    d = n_params(model)
    return np.einsum("ij,il,ikm->jklm", Xa, Xa, A).reshape(d, d)


def hessian_vector_sum(X, Y, w, v, model, sample_weight=None):
    """(Weighted) sum over the rows of the loss Hessians at ``w`` times ``v``."""
    return hessian(X, Y, w, model, sample_weight) @ v


def gram(X, model, sample_weight=None):
    """``sum_i s_i a_i a_i'`` of the rows ``a_i = (x_i - offset, 1)``: ``(q, q)``."""
    Xa = augmented(X, model)
    s = weights_of(sample_weight, Xa.shape[0])
    return (Xa * s[:, None]).T @ Xa


def stored_gram(stored, model):
    """The Gram ``G - r m^T - m r^T`` that the library stores as ``q + 1`` rows of
    ``q``: the matrix ``G`` and, in the last row, its pending centring ``r``, with
    ``m = (offset, 0)``."""
    stored = np.asarray(stored, dtype=np.float64)
    q = stored.shape[1]
    m = np.zeros(q)
    m[: model.n_features] = offset_of(model)
    r = stored[q]
    return stored[:q] - np.outer(r, m) - np.outer(m, r)


def objective(X, Y, w, model, sample_weight=None):
    """(Weighted) mean loss plus the ridge penalty (intercepts excluded)."""
    coef, _ = split_params(w, model)
    total = weights_of(sample_weight, X.shape[0]).sum()
    mean_loss = loss_sum(X, Y, w, model, sample_weight) / total
    return mean_loss + 0.5 * model.alpha * (coef**2).sum()


def curvature_bound(X, model):
    """``c * max_i ||(x_i - offset, 1)||^2 + alpha``: no batch Hessian (a weighted
    mean of the rows' Hessians, plus ``alpha P``) has a larger spectral norm; ``c``
    is the largest second derivative of the loss in its outputs."""
    c = {SQUARED: 1.0, BINARY_LOGISTIC: 0.25, MULTINOMIAL: 0.5}[model.loss]
    return c * float((augmented(X, model) ** 2).sum(axis=1).max()) + model.alpha


# ------------------------------------------------------------------ training (SGD)
def positions_of(ids, batch_ids):
    """Positions in rows with sorted stable ``ids`` of each id in ``batch_ids``."""
    ids = np.asarray(ids)
    pos = np.searchsorted(ids, batch_ids)
    assert np.array_equal(ids[pos], batch_ids), "schedule names an unknown row"
    return pos


def sgd_run(
    X,
    Y,
    model,
    batch_ptr,
    batch_positions,
    learning_rates,
    w0,
    t_start=0,
    sample_weight=None,
):
    """Mini-batch SGD on a schedule, from ``w0`` at iteration ``t_start``.

    Returns ``(weights, gradients, final)``: ``weights[t]`` is the iterate at which
    iteration ``t`` took its gradient, ``gradients[t]`` the (weighted) mean loss-only
    gradient of batch ``t`` there (zero for an empty batch or one of zero weight),
    ``final`` the last iterate. Rows before ``t_start`` are NaN. ``sample_weight``
    is aligned with the rows of ``X`` (``batch_positions`` index both).
    """
    X = dense(X)
    Y = np.asarray(Y, dtype=np.float64)
    s = weights_of(sample_weight, X.shape[0])
    n_iterations = len(learning_rates)
    d = n_params(model)
    mask = penalty_mask(model)
    weights = np.full((n_iterations, d), np.nan)
    gradients = np.full((n_iterations, d), np.nan)
    w = np.array(w0, dtype=np.float64)
    for t in range(t_start, n_iterations):
        rows = np.asarray(batch_positions[batch_ptr[t] : batch_ptr[t + 1]])
        weights[t] = w
        batch_weight = s[rows].sum() if sample_weight is not None else rows.size
        if rows.size == 0 or batch_weight == 0.0:
            gradients[t] = 0.0
            continue
        if sample_weight is None:
            g = gradient_sum(X[rows], Y[rows], w, model) / rows.size
        else:
            g = gradient_sum(X[rows], Y[rows], w, model, s[rows]) / batch_weight
        gradients[t] = g
        w = w - learning_rates[t] * (g + model.alpha * mask * w)
    return weights, gradients, w


def exact_retrain(
    X, Y, ids, model, batch_ptr, batch_ids, learning_rates, sample_weight=None
):
    """The reference retrain: SGD from zero on a schedule of stable ids
    (``sample_weight`` aligned with the rows of ``X``, i.e. with ``ids``)."""
    positions = positions_of(ids, np.asarray(batch_ids))
    return sgd_run(
        X,
        Y,
        model,
        batch_ptr,
        positions,
        learning_rates,
        np.zeros(n_params(model)),
        sample_weight=sample_weight,
    )


# ------------------------------------------------------------------------ L-BFGS
def lbfgs_sigma(pairs, alpha):
    """Initial scaling of the newest pair, floored at ``max(alpha, MIN_SIGMA)``."""
    s, y = pairs[-1]
    return max(float(y @ s) / float(s @ s), max(alpha, MIN_SIGMA))


def lbfgs_middle(pairs, sigma):
    """The compact form's middle matrix ``[[sigma S S', L], [L', -D]]``."""
    S = np.array([s for s, _ in pairs])
    Yp = np.array([y for _, y in pairs])
    SY = S @ Yp.T
    lower = np.tril(SY, -1)
    return np.block([[sigma * S @ S.T, lower], [lower.T, -np.diag(np.diag(SY))]])


def lbfgs_matrix_recursive(pairs, sigma):
    """Dense BFGS matrix from ``sigma I`` updated by each pair, oldest first."""
    d = pairs[0][0].shape[0]
    B = sigma * np.eye(d)
    for s, y in pairs:
        Bs = B @ s
        B = B - np.outer(Bs, Bs) / (s @ Bs) + np.outer(y, y) / (y @ s)
    return B


def lbfgs_matrix_compact(pairs, sigma):
    """Dense ``sigma I - [sigma S, Y] M^-1 [sigma S, Y]'`` via ``np.linalg.solve``."""
    S = np.array([s for s, _ in pairs])
    Yp = np.array([y for _, y in pairs])
    W = np.vstack([sigma * S, Yp])
    middle = lbfgs_middle(pairs, sigma)
    return sigma * np.eye(S.shape[1]) - W.T @ np.linalg.solve(middle, W)


def lbfgs_model(pairs, alpha, form="recursive"):
    """``(first, sigma, B)``: while the middle matrix is ill-conditioned, drop the
    older half of the pairs in use; ``B`` is None when no pair is usable."""
    if not pairs:
        return 0, 1.0, None
    sigma = lbfgs_sigma(pairs, alpha)
    build = lbfgs_matrix_recursive if form == "recursive" else lbfgs_matrix_compact
    first = 0
    while first < len(pairs):
        if np.linalg.cond(lbfgs_middle(pairs[first:], sigma)) < MAX_CONDITION:
            return first, sigma, build(pairs[first:], sigma)
        first += (len(pairs) - first + 1) // 2
    return len(pairs), sigma, None


def pair_is_usable(s, y):
    ss = float(s @ s)
    return ss > MIN_PAIR_NORM2 and float(s @ y) > MIN_CURVATURE * ss


# ------------------------------------------------------------------------ replay
def _batches(batch_ptr, batch_ids):
    return [
        batch_ids[batch_ptr[t] : batch_ptr[t + 1]] for t in range(len(batch_ptr) - 1)
    ]


def batch_changes(old_ptr, old_ids, new_ptr, new_ids):
    """Per iteration: ``(old, new, removed, added, kept)`` batches of stable ids.

    ``kept`` is the new batch without the added rows, in new-batch order.
    """
    changes = []
    for old, new in zip(
        _batches(old_ptr, old_ids), _batches(new_ptr, new_ids), strict=True
    ):
        removed = old[~np.isin(old, new)]
        added = new[~np.isin(new, old)]
        kept = new[np.isin(new, old)]
        changes.append((old, new, removed, added, kept))
    return changes


def first_changed_iteration(changes):
    for t, (_, _, removed, added, _) in enumerate(changes):
        if removed.size or added.size:
            return t
    return len(changes)


def deltagrad_replay(
    X,
    Y,
    ids,
    model,
    old_schedule,
    new_schedule,
    weights,
    gradients,
    exact,
    *,
    burn_in,
    exact_period,
    curvature,
    lbfgs_memory,
    hessian_rows,
    secant_correction=False,
    lbfgs_form="recursive",
    sample_weight=None,
    curvature_bound=None,
    gram_points=None,
    reference=None,
):
    """The DeltaGrad replay of DESIGN section 4, in NumPy.

    ``X``/``Y``/``ids`` hold every row either schedule mentions (sorted ``ids``);
    ``old_schedule``/``new_schedule`` are ``(batch_ptr, batch_ids)`` of stable ids;
    ``weights``/``gradients``/``exact`` the cache of the old trajectory.
    ``curvature`` is ``"lbfgs"``, ``"hessian"`` or ``"gram"`` (the exact Hessian of
    the whole old batch, at ``gram_points[t]`` when given, else at the midpoint; the
    squared loss's does not depend on the point). Returns a dict with the new cache
    (``weights``, ``gradients``, ``exact``, ``final``), ``first_iteration``,
    ``n_exact`` (exact iterations computed; skipped empty batches not counted) and
    ``n_skipped`` (iterations skipped because their new batch is empty).

    Rules: iteration ``t`` is exact when ``t < burn_in`` or ``(t - burn_in) %
    exact_period == 0``, or when no curvature is usable yet, or when its old batch
    was empty; a batch left empty is skipped. At an exact iteration whose cached
    gradient is exact and whose old batch is not empty, the pair ``s = w' - w_t``,
    ``y = g_old_batch(w') - g_t + alpha P s`` is offered to the L-BFGS memory
    (skipped when ``s's <= 1e-30`` or ``s'y <= 1e-10 s's``; oldest dropped when
    full), and the L-BFGS model is rebuilt whenever the memory changed.

    With ``sample_weight`` (aligned with ``ids``), the batch "sizes" ``b_old`` and
    ``b_new`` are the batches' weight sums ("empty" means of zero weight), gradient
    and Hessian sums are weighted, and the Hessian sample's sum is scaled by
    ``kept weight / sample weight`` (dropped when the sample weighs 0). With
    ``curvature_bound`` (see :func:`curvature_bound`), an iteration whose modelled
    product ``||(B) s||`` exceeds ``curvature_bound * ||s||`` is computed exactly.

    ``"hessian"``'s matrix ``H_mid`` is the kept rows' Hessian (estimated from the
    sample) over ``b_old``: the removed rows enter through their gradients at the
    cached iterate, ``g_new = (b_old (g_t + H_mid s) - grad_removed(w_t) +
    grad_added(w)) / b_new`` with the penalty's terms as above; ``"gram"``'s is the
    whole old batch's, and the removed rows' gradients are at ``w``.

    ``secant_correction`` (``"hessian"`` only): the secant control variate. The
    anchor ``(s_e, y_e)`` is the step and regularised secant ``y = (g_kept(w') +
    g_removed(w_t)) / b_old - g_t + alpha P s`` (sums over the old batch's kept and
    removed rows) of the last exact iteration with an exact cached gradient,
    a non-empty old batch and ``s's > 1e-30``; the product becomes ``H_mid (s -
    c s_e) + c y_e`` with ``H_mid`` the sampled matrix above. ``c`` is
    ``sum((y - H_mid s) . (y_e - H_mid s_e)) / sum(||y_e - H_mid s_e||^2)``
    clipped to ``[0, 1]``, the
    sums running over the scheduled exact iterations that have an anchor (with
    their own ``H_mid`` and ``y``), ``c = 0`` before the first.

    ``reference`` (``"hessian"`` only): ``(r, reference_ids)``, the reference
    control variate. With ``beta = 1 - size(sample) / size(kept)`` the kept rows'
    Hessian sum becomes ``(size(kept) / size(sample)) sum_sample (H_i(w_mid) -
    beta H_i(r)) + beta size(kept) H_r`` with ``H_r`` the mean Hessian at ``r`` of
    the rows ``reference_ids``.
    """
    X = dense(X)
    Y = np.asarray(Y, dtype=np.float64)
    all_weights = weights_of(sample_weight, X.shape[0])
    lr = np.asarray(new_schedule[2] if len(new_schedule) > 2 else old_schedule[2])
    changes = batch_changes(old_schedule[0], old_schedule[1], *new_schedule[:2])
    n_iterations = len(changes)
    mask = penalty_mask(model)
    alpha = model.alpha

    def rows(batch):
        pos = positions_of(ids, batch)
        if sample_weight is None:
            return X[pos], Y[pos]
        return X[pos], Y[pos], all_weights[pos]

    def size(batch):
        if sample_weight is None:
            return batch.size
        return float(all_weights[positions_of(ids, batch)].sum())

    def grad(batch, w):
        if batch.size == 0:
            return np.zeros_like(w)
        X_b, Y_b, *s_b = rows(batch)
        return gradient_sum(X_b, Y_b, w, model, *s_b)

    def hess(batch, w):
        if batch.size == 0:
            return np.zeros((w.size, w.size))
        X_b, Y_b, *s_b = rows(batch)
        return hessian(X_b, Y_b, w, model, *s_b)

    weights = np.array(weights, dtype=np.float64)
    gradients = np.array(gradients, dtype=np.float64)
    exact_in = np.array(exact, dtype=bool)
    exact_out = exact_in.copy()
    t0 = first_changed_iteration(changes)
    if t0 >= n_iterations:
        return {
            "weights": weights,
            "gradients": gradients,
            "exact": exact_out,
            "final": None,
            "first_iteration": t0,
            "n_exact": 0,
            "n_skipped": 0,
        }
    w = weights[t0].copy()
    anchor = None
    cross = square = 0.0
    pairs = []
    first, B = 0, None
    n_exact = n_skipped = 0
    for t in range(t0, n_iterations):
        old, new, removed, added, kept = changes[t]
        b_old, b_new = size(old), size(new)
        w_old = weights[t].copy()
        s = w - w_old
        if b_new == 0:
            weights[t] = w
            gradients[t] = 0.0
            exact_out[t] = True
            n_skipped += 1
            continue
        scheduled = t < burn_in or (t - burn_in) % exact_period == 0
        usable = curvature != "lbfgs" or (B is not None and first < len(pairs))
        corrected = secant_correction and curvature == "hessian"
        needs_matrix = (usable and not scheduled) or (corrected and scheduled)
        if curvature != "lbfgs" and b_old > 0 and needs_matrix:
            n_sample = kept.size if curvature == "gram" else hessian_rows
            sample = kept[: min(n_sample, kept.size)]
            # Hessian at the midpoint of the old and new iterates (the Gram
            # model's: where its matrices were built).
            w_mid = w_old + 0.5 * s
            if curvature == "gram" and gram_points is not None:
                w_mid = gram_points[t]
            # The Hessian model's product covers the kept rows alone (the removed
            # rows enter through their gradients at the cached iterate, below);
            # the Gram model's is the whole old batch's.
            H = hess(removed, w_mid) if curvature == "gram" else np.zeros((s.size,) * 2)
            if size(sample) > 0:
                H = H + hess(sample, w_mid) * (size(kept) / size(sample))
            if reference is not None and size(kept) > 0:
                beta = 1.0 - size(sample) / size(kept)
                if beta > 0:
                    point, reference_ids = reference
                    mean = hess(reference_ids, point) / size(reference_ids)
                    H = H + beta * size(kept) * mean
                    if size(sample) > 0:
                        at_point = hess(sample, point) * (size(kept) / size(sample))
                        H = H - beta * at_point
            H = H / b_old + alpha * np.diag(mask.astype(float))
        curv = None
        if usable and b_old > 0 and not scheduled:
            if curvature == "lbfgs":
                curv = B @ s
            elif corrected and anchor is not None:
                c = min(1.0, max(0.0, cross / square)) if square > 0 else 0.0
                curv = H @ (s - c * anchor[0]) + c * anchor[1]
            else:
                curv = H @ s
            if curvature_bound is not None:
                # A product steeper than any batch Hessian: the model is wrong.
                if np.linalg.norm(curv) > curvature_bound * np.linalg.norm(s):
                    curv = None
        if curv is None:
            n_exact += 1
            g_new = grad(new, w) / b_new
            if curvature == "lbfgs" and exact_in[t] and b_old > 0:
                y = grad(old, w) / b_old - gradients[t] + alpha * mask * s
                if pair_is_usable(s, y):
                    # At most one pair per parameter (more cannot be independent).
                    memory = min(lbfgs_memory, s.shape[0])
                    pairs = (pairs + [(s.copy(), y)])[-memory:]
                    first, _, B = lbfgs_model(pairs, alpha, lbfgs_form)
            if corrected and exact_in[t] and b_old > 0 and s @ s > MIN_PAIR_NORM2:
                # The kept rows' secant (the removed rows' gradients at w_t).
                at_w = grad(kept, w) + grad(removed, w_old)
                y = at_w / b_old - gradients[t] + alpha * mask * s
                if scheduled and anchor is not None:
                    control = anchor[1] - H @ anchor[0]
                    cross += (y - H @ s) @ control
                    square += control @ control
                anchor = (s.copy(), y)
            exact_out[t] = True
        else:
            estimate = gradients[t] + alpha * mask * w_old + curv
            removed_at = w_old if curvature == "hessian" else w
            g_new = (
                b_old * (estimate - alpha * mask * w)
                - grad(removed, removed_at)
                + grad(added, w)
            ) / b_new
            exact_out[t] = False
        weights[t] = w
        gradients[t] = g_new
        w = w - lr[t] * (g_new + alpha * mask * w)
    return {
        "weights": weights,
        "gradients": gradients,
        "exact": exact_out,
        "final": w,
        "first_iteration": t0,
        "n_exact": n_exact,
        "n_skipped": n_skipped,
    }


# ------------------------------------------------------------- estimator helpers
def resolved_curvature(est):
    """The model ``curvature="auto"`` stands for (the documented rule)."""
    if est.curvature != "auto":
        return est.curvature
    model = est._model
    columns = model.n_features + int(model.fit_intercept)
    n_params = columns * model.n_outputs
    if model.loss == SQUARED and columns <= 64:
        return "gram"
    # Each Gram: q + 1 rows of q (the last its pending centring), single precision.
    gram_bytes = est._schedule.n_iterations * (columns + 1) * columns * 4
    if model.loss == BINARY_LOGISTIC and columns <= 128 and gram_bytes <= 2**27:
        return "gram"
    if hessian_rows_of(est) * model.n_outputs >= 2 * n_params:
        return "hessian"
    if est.batch_size is None and est.secant_correction:
        return "hessian"
    return "lbfgs"


def hessian_rows_of(est, referenced=False):
    """The rows ``hessian_rows="auto"`` stands for (the documented rule), with the
    reference correction when ``referenced``: then one per 256 rows of a full
    batch, 16 to 64, and 64 (the whole batch) for batches of at most 64 rows."""
    if est.hessian_rows != "auto":
        return est.hessian_rows
    model = est._model
    if model.n_outputs > 1:
        if not referenced:
            return 128
        n_rows = len(est.sample_ids_)
        batch = n_rows if est.batch_size is None else min(est.batch_size, n_rows)
        return 64 if batch <= 64 else int(np.clip(batch // 256, 16, 64))
    n_params = model.n_features + int(model.fit_intercept)
    return min(512, max(256, 4 * n_params))


def lbfgs_memory_of(est):
    """The pairs ``lbfgs_memory="auto"`` stands for (the documented rule): 32, or
    fewer (at least 2) so that ``4 m d <= K e / 2`` for ``e`` non-zeros of a batch
    (``est._batch_nonzeros``: the mean batch's at fit)."""
    if est.lbfgs_memory != "auto":
        return est.lbfgs_memory
    model = est._model
    d = (model.n_features + int(model.fit_intercept)) * model.n_outputs
    return int(min(32, max(2, est._batch_nonzeros * model.n_outputs // (8 * d))))


def uses_reference_of(est):
    """Whether ``est``'s replay has the reference correction (the documented rule:
    the ``"hessian"`` model of at most 2,048 parameters)."""
    model = est._model
    n_params = (model.n_features + int(model.fit_intercept)) * model.n_outputs
    return (
        bool(est.reference_correction)
        and resolved_curvature(est) == "hessian"
        and n_params <= 2048
    )


def state_of(est):
    """A snapshot of an estimator's internal state as plain arrays (``X`` dense
    float64, ``sample_weight`` the rows' weights)."""
    rows, schedule, cache = est._rows, est._schedule, est._cache
    row_weights = getattr(rows, "weights", None)
    if row_weights is None:
        row_weights = np.ones(rows.ids.shape[0])
    return {
        "X": dense(rows.X).copy(),
        "Y": rows.Y.copy(),
        "ids": rows.ids.copy(),
        "sample_weight": np.array(row_weights, dtype=np.float64),
        "batch_ptr": schedule.batch_ptr.copy(),
        "batch_ids": schedule.batch_ids.copy(),
        "learning_rates": schedule.learning_rates.copy(),
        "weights": cache.weights.copy(),
        "gradients": cache.gradients.copy(),
        "exact": cache.exact.copy(),
        "final": cache.final.copy(),
        "reference_point": (
            None if cache.reference_point is None else cache.reference_point.copy()
        ),
    }


def union_rows(*states):
    """Rows of several snapshots merged by stable id (sorted): ``(X, Y, ids,
    sample_weight)``."""
    X = np.concatenate([s["X"] for s in states])
    Y = np.concatenate([s["Y"] for s in states])
    ids = np.concatenate([s["ids"] for s in states])
    sample_weight = np.concatenate(
        [s.get("sample_weight", np.ones(s["ids"].shape[0])) for s in states]
    )
    ids, first = np.unique(ids, return_index=True)
    return X[first], Y[first], ids, sample_weight[first]


def replay_request(
    before, after, model, est, *, lbfgs_form="recursive", curvature_bound=None
):
    """The NumPy replay of the request that took snapshot ``before`` to ``after``,
    with the replay settings of ``est`` and the rows' weights."""
    X, Y, ids, sample_weight = union_rows(before, after)
    reference = None
    if uses_reference_of(est):
        # The original rows' Hessian at the fitted model, or where a request
        # built it: the new rows' at the old final parameters.
        reference = (before["reference_point"], before["ids"])
        if reference[0] is None:
            reference = (before["final"], after["ids"])
    return deltagrad_replay(
        X,
        Y,
        ids,
        model,
        (before["batch_ptr"], before["batch_ids"], before["learning_rates"]),
        (after["batch_ptr"], after["batch_ids"], after["learning_rates"]),
        before["weights"],
        before["gradients"],
        before["exact"],
        burn_in=est.burn_in,
        exact_period=est.exact_period,
        curvature=resolved_curvature(est),
        lbfgs_memory=lbfgs_memory_of(est),
        hessian_rows=hessian_rows_of(est, reference is not None),
        secant_correction=bool(est.secant_correction),
        lbfgs_form=lbfgs_form,
        sample_weight=sample_weight,
        curvature_bound=curvature_bound,
        reference=reference,
    )
