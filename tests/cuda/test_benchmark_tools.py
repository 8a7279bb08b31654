"""The launch counter of ``benchmarks/cuda.py``: it counts every kernel launch of a
request and gives the kernels back unwrapped (later measurements must not pay for
it)."""

import numpy as np

from benchmarks import cuda as bench
from sklearn_deltagrad import DeltaGradLogisticRegression
from sklearn_deltagrad._kernels import cuda as kernels


def test_kernel_launches_counts_and_restores():
    X, y = bench.make_data(40, 3, 3)
    originals = {name: getattr(kernels, name) for name in ("_fill_kernel",)}
    counter = bench.KernelLaunches(timed=True)
    try:
        model = DeltaGradLogisticRegression(batch_size=20, max_iter=1, device="cuda")
        model.fit(X, y)
        # One epoch of two batches: each batch's gradient and step are launched.
        assert counter.counts["_record_and_step_kernel"] == 2
        assert counter.count >= 2 * 5
        assert all(seconds >= 0.0 for seconds in counter.seconds.values())
        assert set(counter.seconds) == set(counter.counts)
    finally:
        counter.restore()
    assert kernels._fill_kernel is originals["_fill_kernel"]
    assert bench.is_kernel(kernels._fill_kernel)
    assert not bench.is_kernel(kernels.fill)
    assert np.isfinite(model.coef_).all()
