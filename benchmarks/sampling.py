"""Study of the Hessian model's row sample and of the exact schedule, in NumPy.

A self-contained replay of binary logistic regression (centred features, constant
step, mini-batches of 4,096 rows, 50 epochs) with the sub-sampled Hessian model and
the secant control variate, as the library does it, and variants the library does
*not* use, each measured by its fidelity ratio ``||w_DG - w_U|| / ||w - w_U||``
against the exact retrain without the removed rows:

- ``fresh`` (the library's rule): the first rows of each iteration's own batch;
- ``reuse``: the rows of the last exact iteration's batch, for every approximate
  iteration up to the next exact one;
- ``gram``: fresh rows plus a control variate: the batch's exact Gram matrix times
  the sample's mean curvature, with the sample's deviation from it added;
- ``reference``: fresh rows plus a control variate: each sampled row's Hessian at a
  fixed reference point (the fitted model) is subtracted, and the whole training
  set's Hessian at that point (one ``d x d`` matrix, scaled to the batch) added;
- ``importance``: rows drawn with probability proportional to their curvature at the
  cached iterate times their squared norm, weighted back to an unbiased sum;
- ``period 5`` / ``period 20``: fresh rows with another fixed exact period (10 is the
  default);
- ``adaptive``: the next exact iteration 5 to 40 iterations ahead (on a grid of 5),
  inversely to the last check's residual, tuned to spend as many exact iterations
  as ``period 10`` (``adaptive-`` spends fewer).

No timing: this compares fidelity at equal cost (rows and exact iterations).
Run ``python -m benchmarks.sampling`` (about 70 s on a 2-core machine; ``--quick``:
one data set, one removal, about 20 s).
"""

import argparse
import time
from functools import partial

import numpy as np

from .datasets import data_dir, load_a9a, load_covtype

BATCH = 4096
EPOCHS = 50
ALPHA = 1e-4
BURN_IN = 10
GRID = 5
ROWS = {"covtype_binary": 256, "a9a": 496}  # the library's "auto" sample sizes


def sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class Problem:
    """Centred features with an intercept column, a fixed schedule of batches."""

    def __init__(self, X, y, seed=0):
        X = X - X.mean(axis=0)
        self.A = np.hstack([X, np.ones((X.shape[0], 1))])
        self.y = y.astype(np.float64)
        self.n, self.d = self.A.shape
        self.square_norms = (self.A**2).sum(axis=1)
        self.mask = np.ones(self.d)
        self.mask[-1] = 0.0
        rng = np.random.default_rng(seed)
        self.batches = []
        for _ in range(EPOCHS):
            order = rng.permutation(self.n)
            for start in range(0, self.n - BATCH + 1, BATCH):
                self.batches.append(order[start : start + BATCH])
        # A constant step, four times 1/L of a single row (batches average rows).
        self.step = 4.0 / (self.square_norms.max() / 4.0 + ALPHA)

    def gradient(self, rows, w):
        a = self.A[rows]
        return a.T @ (sigmoid(a @ w) - self.y[rows])

    def hessian_product(self, rows, w, v, weights=None):
        a = self.A[rows]
        p = sigmoid(a @ w)
        scale = p * (1.0 - p) * (a @ v)
        if weights is not None:
            scale = scale * weights
        return a.T @ scale

    def set_reference(self, w):
        """The reference point of the ``reference`` variant, and the training set's
        Hessian there."""
        p = sigmoid(self.A @ w)
        self.reference = w
        self.reference_hessian = (self.A.T * (p * (1.0 - p))) @ self.A

    def batch_product(self, sample, weights, kept, gone, point, variant, v):
        """The model's ``(H + alpha P) v`` of the old batch (``kept`` + ``gone``)
        at ``point``, the kept rows' part estimated from ``sample``."""
        out = self.hessian_product(sample, point, v, weights)
        if variant == "reference":
            out -= self.hessian_product(sample, self.reference, v, weights)
            out += kept.size / self.n * (self.reference_hessian @ v)
        if variant == "gram":
            a = self.A[sample]
            p = sigmoid(a @ point)
            mean_curvature = np.mean(p * (1.0 - p))
            out -= mean_curvature * (a.T @ (weights * (a @ v)))
            out += mean_curvature * (self.A[kept].T @ (self.A[kept] @ v))
        out += self.hessian_product(gone, point, v)
        return out / (kept.size + gone.size) + ALPHA * self.mask * v

    def train(self, removed):
        """Exact SGD without ``removed``: final w, iterates, gradients, curvatures."""
        w = np.zeros(self.d)
        iterates, gradients, curvatures = [], [], []
        for batch in self.batches:
            batch = batch[~np.isin(batch, removed)]
            p = sigmoid(self.A[batch] @ w)
            g = self.A[batch].T @ (p - self.y[batch]) / batch.size
            iterates.append(w.copy())
            gradients.append(g)
            curvatures.append(p * (1.0 - p))
            w = w - self.step * (g + ALPHA * self.mask * w)
        return w, np.array(iterates), np.array(gradients), curvatures


def replay(problem, removed, cache, rows, variant, period=10, budget=None):
    """The DeltaGrad replay of the removal; returns (final w, exact iterations)."""
    P = problem
    _, iterates, gradients, curvatures = cache
    rng = np.random.default_rng(123)
    w = iterates[0].copy()
    anchor = None
    cross = square = 0.0
    held = None
    next_exact = 0
    n_exact = 0
    for t, batch in enumerate(P.batches):
        is_removed = np.isin(batch, removed)
        kept, gone = batch[~is_removed], batch[is_removed]
        b_old, b_new = batch.size, kept.size
        s = w - iterates[t]
        midpoint = iterates[t] + 0.5 * s
        scheduled = t < BURN_IN or t == next_exact
        if variant == "importance":
            cached = curvatures[t] * P.square_norms[batch]
            q = cached[~is_removed] + 1e-3 * cached.mean()
            q /= q.sum()
            picks = rng.choice(kept.size, rows, p=q)
            sample, weights = kept[picks], 1.0 / (rows * q[picks])
        elif variant == "reuse" and held is not None:
            sample, weights = held, np.full(held.size, kept.size / held.size)
        else:
            sample = kept[:rows]
            weights = np.full(sample.size, kept.size / sample.size)

        product = partial(
            P.batch_product, sample, weights, kept, gone, midpoint, variant
        )

        c = min(1.0, max(0.0, cross / square)) if square > 0.0 else 0.0
        if scheduled:
            n_exact += 1
            secant = P.gradient(batch, w) / b_old - gradients[t] + ALPHA * P.mask * s
            residual = None
            if anchor is not None and s @ s > 1e-30:
                predicted = product(s - c * anchor[0]) + c * anchor[1]
                residual = np.linalg.norm(predicted - secant)
                control = anchor[1] - product(anchor[0])
                cross += (secant - product(s)) @ control
                square += control @ control
            if s @ s > 1e-30:
                anchor = (s.copy(), secant)
            held = kept[:rows]
            g_new = P.gradient(kept, w) / b_new
            gap = period
            if budget is not None and residual is not None:
                # The stretch's parameter error grows like step * gap * residual.
                gap = budget / (P.step * residual)
                gap = int(min(8, max(1, round(gap / GRID)))) * GRID
            next_exact = max(t + gap, BURN_IN)
        else:
            curvature = product(s - c * anchor[0]) + c * anchor[1]
            modelled = gradients[t] + ALPHA * P.mask * iterates[t] + curvature
            g_new = b_old * (modelled - ALPHA * P.mask * w) - P.gradient(gone, w)
            g_new /= b_new
        w = w - P.step * (g_new + ALPHA * P.mask * w)
    return w, n_exact


def adaptive_budget(problem, removed, cache, rows, n_target):
    """The residual budget whose adaptive schedule spends about ``n_target`` exact
    iterations (from the typical residual of a fixed-period replay)."""
    # Typical step * residual in these runs is 5e-5 to 1.2e-4; gap 10 at the median.
    budget = 7e-4
    for _ in range(3):
        _, n_exact = replay(problem, removed, cache, rows, "fresh", budget=budget)
        if abs(n_exact - n_target) <= 0.05 * n_target:
            break
        budget *= n_exact / n_target
    return budget


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    root = data_dir(args.data_dir)
    if root is None:
        raise SystemExit("data folder not found: pass --data-dir or set the env var")
    datasets = ["covtype_binary"] if args.quick else ["covtype_binary", "a9a"]
    n_removals = 1 if args.quick else 3
    started = time.perf_counter()
    print("| data set | rows | variant | exact iterations | ratio per removal | mean |")
    print("|---|---|---|---|---|---|")
    for name in datasets:
        if name == "a9a":
            X, _, y, _ = load_a9a(root)
        else:
            X, _, y, _ = load_covtype(root, binary=True)
        problem = Problem(X, y)
        rows = ROWS[name]
        cache = problem.train(np.array([], dtype=np.int64))
        problem.set_reference(cache[0])
        results = {}
        budgets = {}
        for seed in range(n_removals):
            pick = np.random.default_rng(10 + seed)
            removed = pick.choice(problem.n, problem.n // 1000, replace=False)
            w_u = problem.train(removed)[0]
            scale = np.linalg.norm(cache[0] - w_u)
            n_default = None
            runs = [("fresh", {}), ("reuse", {}), ("gram", {}), ("reference", {})]
            runs += [("importance", {})]
            runs += [("period 5", {"period": 5}), ("period 20", {"period": 20})]
            for label, options in runs:
                variant = label if not label.startswith("period") else "fresh"
                w, n_exact = replay(problem, removed, cache, rows, variant, **options)
                n_default = n_exact if label == "fresh" else n_default
                results.setdefault(label, []).append(
                    (np.linalg.norm(w - w_u) / scale, n_exact)
                )
            for label, share in [("adaptive", 1.0), ("adaptive-", 0.6)]:
                if label not in budgets:  # tuned on the first removal
                    n_target = int(share * n_default)
                    budgets[label] = adaptive_budget(
                        problem, removed, cache, rows, n_target
                    )
                w, n_exact = replay(
                    problem, removed, cache, rows, "fresh", budget=budgets[label]
                )
                results.setdefault(label, []).append(
                    (np.linalg.norm(w - w_u) / scale, n_exact)
                )
        for label, values in results.items():
            ratios = " / ".join(f"{r:.4f}" for r, _ in values)
            exact = "–".join(str(n) for n in sorted({n for _, n in values}))
            mean = np.mean([r for r, _ in values])
            print(f"| {name} | {rows} | {label} | {exact} | {ratios} | {mean:.4f} |")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
