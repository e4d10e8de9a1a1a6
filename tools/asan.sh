#!/usr/bin/env bash
# The native-backend tests under AddressSanitizer, in one command:
#   bash tools/asan.sh                      # the default native-backend test files below
#   bash tools/asan.sh tests/test_pool.py   # or any test files and pytest options
#   bash tools/asan.sh -x -k winograd       # options alone: the default files
# Builds an ASan copy of _native in build/asan (-O1 -g -fsanitize=address) next to a staged
# copy of the Python package in build/asan/pkg, so the developer build in fastconv/ is left
# as it is, then runs pytest against the staged package. Python is not built with ASan, so
# libasan (and libstdc++, which it must precede) is preloaded; leak checking is off because
# the interpreter itself leaks at exit. allocator_may_return_null keeps a refused huge
# allocation a MemoryError, as without ASan. Any ASan report aborts the test process, and
# its stack names the kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bdir=build/asan
pkg=$root/$bdir/pkg
python3 - "$pkg" <<'EOF'
import shutil, sys
shutil.copytree("fastconv", sys.argv[1] + "/fastconv", dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("_native*", "__pycache__"))
EOF
bash tools/build_inplace.sh "$bdir" -DFASTCONV_ASAN=ON -DFASTCONV_MODULE_DIR="$pkg/fastconv" \
  ${FASTCONV_ASAN_CMAKE_ARGS:-}

# No test path among the arguments: the native-backend test files (options still apply).
have_path=0
for a in "$@"; do case $a in tests/*|*.py|*::*) have_path=1 ;; esac; done
if [ $have_path -eq 0 ]; then
  set -- "$@" tests/test_conv.py tests/test_conv1d.py tests/test_conv_depthwise.py \
    tests/test_conv_direct_native.py tests/test_conv_epilogue.py tests/test_conv_im2col.py \
    tests/test_conv_pointwise.py tests/test_conv_transpose.py tests/test_conv_winograd.py \
    tests/test_pool.py tests/test_native_ops.py tests/test_norms.py tests/test_batchnorm.py \
    tests/test_gemm.py tests/test_ndimage.py tests/test_signal.py tests/test_reliability.py \
    tests/test_fuzz_extreme.py tests/test_fuzz_ops.py
fi
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(g++ -print-file-name=libstdc++.so)" \
ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:abort_on_error=1:${ASAN_OPTIONS:-}" \
FASTCONV_ASAN=1 PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}" \
  python3 -m pytest -q -p no:cacheprovider "$@"
