"""Backend dispatch: which device runs the training and replay loops.

The one place that maps a device to its kernels: the CPU loops are the Numba
``@njit`` functions of :mod:`sklearn_deltagrad._training` and
:mod:`sklearn_deltagrad._replay`; the CUDA loops (:mod:`sklearn_deltagrad._cuda_loops`
over :mod:`sklearn_deltagrad._kernels.cuda`) take the same arguments. Both read dense
rows in the dtype they are stored in (float64 or float32) and CSR rows. ``numba.cuda``
is imported only when CUDA is requested (``device="cuda"``, or ``"auto"`` at ``fit``
and at each request): importing the package never touches a GPU.
"""

import importlib
import os


def cuda_simulated():
    """Whether Numba runs CUDA kernels in its simulator (``NUMBA_ENABLE_CUDASIM``)."""
    from numba import config

    return bool(config.ENABLE_CUDASIM)


def _gpu_present():
    """Whether a real CUDA GPU can run kernels (the simulator does not count)."""
    if cuda_simulated():
        return False
    try:
        from numba import cuda
    except ImportError:  # pragma: no cover - numba without its CUDA target
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # pragma: no cover - a broken driver counts as no GPU
        return False


def resolve_device(device):
    """``"cpu"`` or ``"cuda"``: the backend that will run for ``device``, or raise.

    ``"auto"`` is CUDA when a real GPU is present, else the CPU. ``"cuda"`` needs a
    GPU, or Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, set before numba is
    imported), which runs the same kernels on the CPU, slowly, for testing.
    """
    if device == "cpu":
        return "cpu"
    if device == "auto":
        return "cuda" if _gpu_present() else "cpu"
    if cuda_simulated() or _gpu_present():
        return "cuda"
    raise RuntimeError(
        "device='cuda' needs an NVIDIA GPU with a working CUDA driver and the "
        "numba-cuda package (pip install 'sklearn_deltagrad[cuda]'); none was found "
        f"(NUMBA_ENABLE_CUDASIM={os.environ.get('NUMBA_ENABLE_CUDASIM', 'unset')}). "
        "Use device='cpu' or device='auto'."
    )


def cuda_loops():
    """The module of the CUDA training and replay loops (imports ``numba.cuda``)."""
    return importlib.import_module("sklearn_deltagrad._cuda_loops")
