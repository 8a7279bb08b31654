"""
======================================
Save, load, then unlearn
======================================

A fitted estimator is plain NumPy state: it can be saved with :mod:`joblib` (or
:mod:`pickle`) and a loaded copy serves removal and addition requests like the
original. The file holds the training rows and the SGD cache, so it is larger than a
file holding only the coefficients.

.. warning::

   Loading a pickle or joblib file can run arbitrary code. Only load files from
   sources you trust.
"""

# %%
# Fit, save and load
# ------------------
import os
import tempfile

import joblib
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_diabetes, load_digits

from sklearn_deltagrad import DeltaGradLogisticRegression, DeltaGradRidge

X, y = load_digits(return_X_y=True)
X = X / 16.0
model = DeltaGradLogisticRegression(batch_size=256, max_iter=20, random_state=0)
model.fit(X, y)

folder = tempfile.mkdtemp()
path = os.path.join(folder, "model.joblib")
joblib.dump(model, path)
loaded = joblib.load(path)
file_bytes = os.path.getsize(path)
print(f"joblib file: {file_bytes / 1e6:.2f} MB")
print(f"cache_nbytes_: {model.cache_nbytes_ / 1e6:.2f} MB")

# %%
# Unlearn after loading
# ---------------------
# The loaded model and the original give the same result for the same request.
ids = np.arange(0, 40, 2)
model.partial_unfit(indices=ids)
loaded.partial_unfit(indices=ids)
print("same coefficients:", np.array_equal(model.coef_, loaded.coef_))
report = loaded.last_update_
print(f"live rows: {loaded.n_samples_seen_}; last request: {report.method}")
print(f"iterations: {report.n_exact_iterations} exact, ", end="")
print(f"{report.n_approximate_iterations} approximate")

# %%
# Where the bytes go: the training rows (kept for the exact iterations of the
# replay), the cache of iterates and gradients (``2 * T * d * 8`` bytes plus the
# schedule) and the coefficients.
rows_bytes = X.nbytes
coef_bytes = model.coef_.nbytes + model.intercept_.nbytes
fig, ax = plt.subplots(figsize=(6, 3))
labels = ["coefficients", "training rows", "cache_nbytes_", "joblib file"]
sizes = np.array([coef_bytes, rows_bytes, model.cache_nbytes_, file_bytes]) / 1e6
ax.barh(labels, sizes)
ax.set_xlabel("MB")
n_iterations = int(np.ceil(len(y) / 256)) * 20  # batches per epoch x epochs
ax.set_title(f"digits, T = {n_iterations} iterations")
fig.tight_layout()

# %%
# The same with :class:`~sklearn_deltagrad.DeltaGradRidge`
# -----------------------------------------------------------
# For ridge with few features, ``curvature="auto"`` keeps each batch's Gram
# matrix, and the replay of the squared loss is exact up to rounding: the loaded
# model's DeltaGrad update matches the exact retrain.
X_r, y_r = load_diabetes(return_X_y=True)
ridge = DeltaGradRidge(alpha=1e-3, batch_size=64, max_iter=30, random_state=0)
joblib.dump(ridge.fit(X_r, y_r), path)
loaded_ridge = joblib.load(path)
exact_ridge = joblib.load(path)
loaded_ridge.partial_unfit(indices=[5, 50, 150])
exact_ridge.partial_unfit(indices=[5, 50, 150], method="exact")
difference = np.abs(loaded_ridge.coef_ - exact_ridge.coef_).max()
print(f"ridge: largest coefficient difference from the exact retrain {difference:.1e}")
os.remove(path)
os.rmdir(folder)
