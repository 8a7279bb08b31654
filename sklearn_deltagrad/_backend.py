"""Device resolution: which backend runs the kernels.

Only the CPU backend (Numba ``@njit`` kernels) exists so far. ``numba.cuda`` is never
imported here unless CUDA is requested.
"""


def resolve_device(device):
    """Map the ``device`` parameter to the backend that will run, or raise."""
    if device == "cpu":
        return "cpu"
    if device == "auto":
        # No CUDA backend yet: "auto" always means the CPU.
        return "cpu"
    raise NotImplementedError(
        f"device={device!r} is not available yet: the CUDA backend is not implemented "
        "in this version of sklearn_deltagrad; use device='cpu' or device='auto'."
    )
