import os

import pytest

from benchmarks import datasets


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
