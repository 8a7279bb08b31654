"""
======================
The GPU backend
======================

The estimators take ``device="cpu" | "cuda" | "auto"``. ``device="cuda"`` runs the
training loop and the replay as Numba CUDA kernels on an NVIDIA GPU (install the
``cuda`` extra); without a GPU it raises a :class:`RuntimeError`, and
``device="auto"`` runs on the GPU when there is one, else on the CPU. This example
runs on any machine: it uses the GPU where it finds one.
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
except RuntimeError as error:
    print(f"GPU run skipped: {error}")

# %%
# ``device="auto"`` uses the GPU if there is one, else the CPU. The two backends
# sum in different orders, so their models agree to rounding (about 1e-15
# relative), not bitwise.
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
gap = abs(models["cpu"].coef_ - models["auto"].coef_).max()
print(f"largest coefficient difference between 'cpu' and 'auto': {gap:.2g}")

fig, ax = plt.subplots(figsize=(5, 2.5))
ax.barh([f"device={name!r}" for name in seconds], list(seconds.values()))
ax.set_xlabel("fit + removal of 3 rows (s)")
ax.set_title("digits: fit and a removal per device")
fig.tight_layout()
