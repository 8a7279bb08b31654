"""Every kernel launch of the CUDA backend compiles to PTX for an H100 (sm_90).

The simulator runs kernels as Python: a kernel that would not type on a GPU passes
there. This test records the argument types of every launch that a set of requests
makes in the simulator, then compiles each signature with NVIDIA's NVVM in a
subprocess without the simulator (no GPU needed). It needs ``numba-cuda`` with
NVVM (``pip install "numba-cuda[cu13]"``) and is skipped without them; on a real
GPU the kernels compile for the device in the other tests.
"""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

from sklearn_deltagrad._backend import cuda_simulated
from sklearn_deltagrad._kernels import cuda as kernels

from .test_cuda_backend import make_data, make_estimator, run_sequence

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
from numba import cuda
from numba.cuda.cudadrv import nvvm
assert cuda.implementation == "NVIDIA", "numba-cuda is not installed"
assert nvvm.is_available(), "NVVM is not available"
"""

_COMPILE = """
import pickle, sys
import numba.cuda.dispatcher as dispatcher
from numba import cuda
from sklearn_deltagrad._kernels import cuda as kernels


class Device:  # no GPU: device functions compile for an H100
    compute_capability = (9, 0)


dispatcher.get_current_device = lambda: Device()
failures = []
for name, types in pickle.load(open(sys.argv[1], "rb")):
    try:
        cuda.compile_ptx(getattr(kernels, name).py_func, types, cc=(9, 0))
    except Exception as error:
        failures.append(f"{name}{types}: {error}")
print("\\n".join(failures))
sys.exit(1 if failures else 0)
"""

SCENARIOS = [
    ("binary", "lbfgs", "dense64"),
    ("multiclass", "hessian", "csr"),
    ("multiclass", "lbfgs", "dense32"),
    ("ridge", "gram", "csr"),
    ("ridge-multi", "hessian", "dense32"),
]


def _without_simulator():
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def nvvm_compiler():
    if not cuda_simulated():
        pytest.skip("on a real GPU the kernels compile in the other tests")
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env=_without_simulator(),
        capture_output=True,
        text=True,
    )
    if probe.returncode:
        pytest.skip(
            'PTX check needs numba-cuda with NVVM (pip install "numba-cuda[cu13]"): '
            + probe.stderr.strip().splitlines()[-1]
        )


def test_every_launched_kernel_compiles_for_sm90(nvvm_compiler, monkeypatch, tmp_path):
    signatures = set()

    def recording(name, kernel):
        class Recording:
            def __getitem__(self, config):
                launch = kernel[config]

                def call(*args):
                    types = tuple(numba.typeof(getattr(a, "_ary", a)) for a in args)
                    signatures.add((name, types))
                    return launch(*args)

                return call

        return Recording()

    for name, value in list(vars(kernels).items()):
        if getattr(value, "_device", True) is False:  # a simulated kernel
            monkeypatch.setattr(kernels, name, recording(name, value))
    for kind, curvature, layout in SCENARIOS:
        X, y = make_data(kind, layout=layout)
        est = make_estimator(kind, curvature=curvature, lbfgs_memory=3, hessian_rows=8)
        run_sequence(est, X, y, "cuda")
    X, y = make_data("multiclass", layout="csr")
    run_sequence(make_estimator("binary"), X.astype(np.float32), y > 0, "cuda")
    # Many checks: the secant control variate's weight is fitted and used.
    est = make_estimator(
        "multiclass", curvature="hessian", hessian_rows=8, max_iter=5, exact_period=2
    )
    run_sequence(est, X, y, "cuda")
    launched = {name for name, _ in signatures}
    assert len(launched) >= 20
    assert {"_combine_kernel", "_secant_control_kernel"} <= launched
    path = tmp_path / "signatures.pkl"
    path.write_bytes(pickle.dumps(sorted(signatures, key=str)))
    done = subprocess.run(
        [sys.executable, "-c", _COMPILE, str(path)],
        env=_without_simulator(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
