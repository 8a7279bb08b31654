"""The CUDA tests run in their own pytest process, on a GPU or in the simulator:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda

(the variable must be set before numba is imported, hence the separate process).
"""

import numpy as np
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


def _allocation_bytes(array):
    """Bytes of the allocation a NumPy view lives in (its outermost base)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array.nbytes


@pytest.fixture(autouse=True)
def simulator_slices_like_a_gpu(monkeypatch):
    """In the simulator, slicing a device array whose allocation is empty raises, as
    numba-cuda does on a real GPU (a null pointer: "non-empty slice into empty
    slice", even for an empty slice); the simulator alone would allow it."""
    if not cuda_simulated():
        return
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    plain_getitem = FakeCUDAArray.__getitem__

    def getitem(self, index):
        result = plain_getitem(self, index)
        if isinstance(result, FakeCUDAArray) and _allocation_bytes(self._ary) == 0:
            raise RuntimeError("non-empty slice into empty slice")
        return result

    monkeypatch.setattr(FakeCUDAArray, "__getitem__", getitem)
