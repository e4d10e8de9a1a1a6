#!/usr/bin/env bash
# The project's test command (README, CI): the main suite, then the numba.cuda kernels
# under the CUDA simulator in a separate process so NUMBA_ENABLE_CUDASIM cannot leak.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d tests/cudasim ] && ls tests/cudasim/test_*.py >/dev/null 2>&1; then
  NUMBA_ENABLE_CUDASIM=1 pytest -q -p no:cacheprovider tests/cudasim "$@"
fi
pytest -q -p no:cacheprovider --ignore=tests/cudasim tests "$@"
