import os

import pytest

from benchmarks import datasets
from sklearn_deltagrad._backend import cuda_simulated

# The CUDA tests need a GPU or the simulator, which must be switched on before numba
# is imported: they run in their own process (see tests/cuda/conftest.py). Without
# the simulator, they are collected only where "auto" would pick a real GPU.
if not cuda_simulated():
    from sklearn_deltagrad._backend import resolve_device

    if resolve_device("auto") != "cuda":
        collect_ignore = ["cuda"]


@pytest.fixture(scope="session")
def data_root():
    """The shared/data folder; a missing folder skips locally but fails in CI."""
    root = datasets.data_dir()
    if root is None:
        message = (
            f"real data sets not found: set {datasets.DATA_ENV} to the shared/data "
            "folder (see README)"
        )
        if os.environ.get("CI"):
            pytest.fail(message + " -- in CI the data must be present")
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def load_dataset(data_root):
    cache = {}

    def load(name):
        if name not in cache:
            cache[name] = datasets.LOADERS[name](data_root)
        return cache[name]

    return load
