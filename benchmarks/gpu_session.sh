#!/usr/bin/env bash
# The CUDA checks of one session on a GPU machine, as one script (see issue #5):
# the CUDA tests on the real GPU, then the CUDA vs CPU benchmark. Run from the
# repository root, with a numpy < 2.5 wheel in .whl/ when the machine's numpy is
# newer (numba-cuda 0.30 fails with numpy 2.5; see ../shared/GPU.md):
#
#   bash benchmarks/gpu_session.sh [benchmark options]
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/numpy-*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/numpy-*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 -c "import numpy, numba; print('numpy', numpy.__version__, 'numba', numba.__version__)"
python3 -m pytest -q -p no:cacheprovider tests/cuda
python3 -m benchmarks.cuda "$@"
