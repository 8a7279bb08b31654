#!/usr/bin/env bash
# The CUDA checks of one session on a GPU machine, as one script (see issue #5):
# the CUDA tests on the real GPU, then the CUDA vs CPU benchmark. Run from the
# repository root. Wheels in .whl/ (git-ignored; pass it in the device tool's
# `carry`) are installed first, for a machine that cannot download: a numpy < 2.5
# (numba-cuda 0.30 fails with numpy 2.5; see ../shared/GPU.md) and pytest with its
# dependencies, for Python 3.12:
#
#   pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 -d .whl \
#       "numpy==2.4.*" pytest pluggy iniconfig packaging pygments
#   bash benchmarks/gpu_session.sh [benchmark options]
set -euo pipefail
cd "$(dirname "$0")/.."
# The GPU machine's Python (numba-cuda preinstalled), else the one on the PATH.
PY=python3
if [ -x /opt/torch/.venv/bin/python ]; then PY=/opt/torch/.venv/bin/python; fi
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -c "import numpy, numba; print('numpy', numpy.__version__, 'numba', numba.__version__)"
"$PY" -m pytest -q -p no:cacheprovider tests/cuda
"$PY" -m benchmarks.cuda "$@"
