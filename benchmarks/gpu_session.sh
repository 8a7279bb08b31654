#!/usr/bin/env bash
# The CUDA checks of one session on a GPU machine, as one script (see issue #5):
# the CUDA vs CPU benchmark, then the CUDA tests on the real GPU; each step has its
# own time limit and a failure does not stop the next. Run from the repository root.
# Logs go to $OUT (the device tool's output folder) when it is set. Wheels in .whl/
# (git-ignored; pass it in the device tool's `carry`) are installed first, for a
# machine that cannot download: a numpy < 2.5 (numba-cuda 0.30 fails with numpy 2.5;
# see ../shared/GPU.md), for Python 3.12:
#
#   pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 -d .whl "numpy==2.4.*"
#   bash benchmarks/gpu_session.sh [benchmark options]
#
# BENCH_SECONDS and TEST_SECONDS set the steps' limits (default 240 each). On an
# H200 (2026-12-04) the whole script took about 150 s: the benchmark 70 s (compile
# included), the tests 75 s; starting the machine took about 30 s more.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS="${OUT:-/tmp/gpu_session}"
mkdir -p "$LOGS"
# The GPU machine's Python (numba-cuda preinstalled), else the one on the PATH.
PY=python3
if [ -x /opt/torch/.venv/bin/python ]; then PY=/opt/torch/.venv/bin/python; fi
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv || true
"$PY" -c "from importlib.metadata import version as v
print(*(f'{name} {v(name)}' for name in ('numpy', 'numba', 'numba-cuda', 'scikit-learn')))" || true
timeout "${BENCH_SECONDS:-240}" "$PY" -m benchmarks.cuda \
    --profile "$LOGS/profile.txt" "$@" 2>&1 | tee "$LOGS/benchmark.md"
bench=$?
timeout "${TEST_SECONDS:-240}" "$PY" -m pytest -q -p no:cacheprovider \
    --durations=10 tests/cuda 2>&1 | tee "$LOGS/tests.log"
tests=$?
echo "benchmark exit $bench, tests exit $tests"
[ "$bench" -eq 0 ] && [ "$tests" -eq 0 ]
