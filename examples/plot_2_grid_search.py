"""
==============================================
Grid search, then serve deletion requests
==============================================

The estimators are ordinary scikit-learn estimators: they can be tuned with
:class:`~sklearn.model_selection.GridSearchCV`. The refitted best model then serves
deletion requests with DeltaGrad.
"""

# %%
# Tune ``alpha``
# --------------
import copy

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split

from sklearn_deltagrad import DeltaGradLogisticRegression

X, y = load_digits(return_X_y=True)
X = X / 16.0  # a fixed scaling: nothing fitted on rows that may be deleted
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)

search = GridSearchCV(
    DeltaGradLogisticRegression(batch_size=256, max_iter=20, random_state=0),
    {"alpha": [1e-5, 1e-4, 1e-3, 1e-2]},
    cv=3,
)
search.fit(X_train, y_train)
model = search.best_estimator_
print(f"best alpha: {search.best_params_['alpha']}")
print(f"test accuracy: {model.score(X_test, y_test):.3f}")

# %%
# ``best_estimator_`` was refitted on all of ``X_train`` (``refit=True``), so its
# stable ids are the positions in ``X_train``.
#
# Serve deletion requests
# -----------------------
# Five requests of 1 to 10 rows each. Every request is also applied to a copy
# with ``method="exact"`` to measure the fidelity of DeltaGrad.


def parameters(estimator):
    return np.concatenate([estimator.coef_.ravel(), estimator.intercept_.ravel()])


rng = np.random.default_rng(0)
original = parameters(model)
exact = copy.deepcopy(model)
ratios = []
for request in range(5):
    ids = rng.choice(model.sample_ids_, size=rng.integers(1, 11), replace=False)
    model.partial_unfit(indices=ids)
    exact.partial_unfit(indices=ids, method="exact")
    w_dg, w_u = parameters(model), parameters(exact)
    ratios.append(np.linalg.norm(w_dg - w_u) / np.linalg.norm(original - w_u))
    print(f"request {request}: removed {ids.size} rows, fidelity {ratios[-1]:.4f}")

# %%
# The model selection itself also saw the deleted rows: the chosen ``alpha`` and
# ``cv_results_`` were computed with them. If that matters, rerun the search on the
# remaining rows from time to time.
mean = search.cv_results_["mean_test_score"]
std = search.cv_results_["std_test_score"]
alphas = np.array(search.cv_results_["param_alpha"], dtype=float)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
ax1.errorbar(alphas, mean, yerr=std, marker="o")
ax1.set_xscale("log")
ax1.set_xlabel("alpha")
ax1.set_ylabel("cross-validated accuracy")
ax1.set_title("GridSearchCV")
ax2.bar(np.arange(len(ratios)), ratios)
ax2.set_xlabel("deletion request")
ax2.set_ylabel(r"$\|w_{DG} - w_U\| / \|w - w_U\|$")
ax2.set_title("Fidelity after each request")
fig.tight_layout()
