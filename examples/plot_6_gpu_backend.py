"""
======================
The GPU backend
======================

The estimators take ``device="cpu" | "cuda" | "auto"``. Only the CPU backend
(Numba ``@njit`` kernels) exists in this version: ``device="cuda"`` raises
:class:`NotImplementedError` and ``device="auto"`` runs on the CPU. This example
shows both behaviours, so it runs (and is skipped gracefully) on any machine.
"""

# %%
import time

import matplotlib.pyplot as plt
from sklearn.datasets import load_digits

from sklearn_deltagrad import DeltaGradLogisticRegression

X, y = load_digits(return_X_y=True)
X = X / 16.0

try:
    DeltaGradLogisticRegression(device="cuda", max_iter=5).fit(X, y)
    print("device='cuda' ran on the GPU")
except NotImplementedError as error:
    print(f"GPU run skipped: {error}")

# %%
# ``device="auto"`` falls back to the CPU, with the same results as
# ``device="cpu"``.
seconds, models = {}, {}
for device in ["cpu", "auto"]:
    model = DeltaGradLogisticRegression(
        device=device, batch_size=256, max_iter=20, random_state=0
    )
    start = time.perf_counter()
    model.fit(X, y).partial_unfit(indices=[0, 1, 2])
    seconds[device] = time.perf_counter() - start
    models[device] = model
    print(f"device={device!r}: fit + removal in {seconds[device]:.3f} s")
same = (models["cpu"].coef_ == models["auto"].coef_).all()
print(f"same coefficients on 'cpu' and 'auto': {same}")

fig, ax = plt.subplots(figsize=(5, 2.5))
ax.barh([f"device={name!r}" for name in seconds], list(seconds.values()))
ax.set_xlabel("fit + removal of 3 rows (s)")
ax.set_title("digits on the CPU (no CUDA backend yet)")
fig.tight_layout()
