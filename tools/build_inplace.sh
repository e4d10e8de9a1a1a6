#!/usr/bin/env bash
# Developer build: compiles fastconv/_native*.so in place so `PYTHONPATH=. pytest` works
# without an install. Usage: tools/build_inplace.sh [build-dir] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bdir=${1:-build/dev}; shift || true
cmake -S . -B "$bdir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$(command -v python3)" "$@" >/dev/null
cmake --build "$bdir" -j "${FASTCONV_BUILD_JOBS:-2}"
