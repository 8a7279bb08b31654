"""
============================================
Speed-up and fidelity against deletion rate
============================================

DeltaGrad computes exact gradients only every ``exact_period`` iterations (after a
``burn_in``) and on the removed rows; the rest is approximated with a curvature
model. Its error grows with the share of rows removed, and its advantage shrinks.
This example removes growing shares of a synthetic data set and compares DeltaGrad
with the exact retrain on the same schedule.
"""

# %%
# Fit once
# --------
import copy
import time

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import make_classification

from sklearn_deltagrad import DeltaGradLogisticRegression

X, y = make_classification(
    n_samples=30000, n_features=100, n_informative=30, n_classes=5, random_state=0
)
model = DeltaGradLogisticRegression(
    alpha=1e-3, batch_size=2048, max_iter=20, random_state=0
)
model.fit(X, y)
n_iterations = int(np.ceil(len(y) / 2048)) * 20
print(f"{n_iterations} iterations, cache {model.cache_nbytes_ / 1e6:.1f} MB")

# Compile the replay kernels before timing (Numba caches them on disk).
copy.deepcopy(model).partial_unfit(indices=[0])
copy.deepcopy(model).partial_unfit(indices=[0], method="exact")


def parameters(estimator):
    return np.concatenate([estimator.coef_.ravel(), estimator.intercept_.ravel()])


def best_time(estimator, ids, method, repeats=2):
    """Best of a few runs, each on a fresh copy; returns (seconds, last copy)."""
    best = np.inf
    for _ in range(repeats):
        copied = copy.deepcopy(estimator)
        start = time.perf_counter()
        copied.partial_unfit(indices=ids, method=method)
        best = min(best, time.perf_counter() - start)
    return best, copied


# %%
# Remove growing shares of the rows
# ---------------------------------
rng = np.random.default_rng(0)
original = parameters(model)
rates = [0.001, 0.01, 0.03, 0.1, 0.3]
speedups, ratios = [], []
for rate in rates:
    ids = rng.choice(len(y), size=int(rate * len(y)), replace=False)
    exact_seconds, exact = best_time(model, ids, "exact")
    dg_seconds, deltagrad = best_time(model, ids, "deltagrad")
    w_u, w_dg = parameters(exact), parameters(deltagrad)
    speedups.append(exact_seconds / dg_seconds)
    ratios.append(np.linalg.norm(w_dg - w_u) / np.linalg.norm(original - w_u))
    print(
        f"rate {rate:6.1%}: exact {exact_seconds:.3f} s, DeltaGrad {dg_seconds:.3f} s"
        f" ({speedups[-1]:.1f}x), fidelity {ratios[-1]:.4f}"
    )

# %%
# Results
# -------
# The speed-up is capped by the share of exact iterations (here ``burn_in=10`` and
# ``exact_period=10`` out of 300 iterations); it falls as removed rows appear in
# every batch and their gradients must be computed at every iteration. When a
# request changes a large share of the data, use ``method="exact"`` (or ``fit``);
# the ``max_change_share`` parameter (default 0.5) does so automatically for
# requests that change more than that share of the rows.
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
ax1.semilogx(np.array(rates) * 100, speedups, "o-")
ax1.set_xlabel("rows removed (%)")
ax1.set_ylabel("time(exact) / time(DeltaGrad)")
ax1.set_ylim(bottom=0)
ax1.set_title("Speed-up")
ax2.semilogx(np.array(rates) * 100, ratios, "o-", color="C1")
ax2.set_xlabel("rows removed (%)")
ax2.set_ylabel(r"$\|w_{DG} - w_U\| / \|w - w_U\|$")
ax2.set_ylim(bottom=0)
ax2.set_title("Fidelity (smaller is better)")
fig.tight_layout()
