"""The CUDA tests run in their own pytest process, on a GPU or in the simulator:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda

(the variable must be set before numba is imported, hence the separate process).
"""

import pytest

from sklearn_deltagrad._backend import cuda_simulated, resolve_device


def pytest_configure(config):
    try:
        resolve_device("cuda")
    except RuntimeError as error:
        raise pytest.UsageError(
            "tests/cuda need a CUDA GPU or NUMBA_ENABLE_CUDASIM=1 set before the "
            f"run: {error}"
        ) from error


@pytest.fixture(scope="session")
def on_gpu():
    """Whether the kernels run on a real GPU (sizes can grow) or the simulator."""
    return not cuda_simulated()
