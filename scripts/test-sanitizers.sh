#!/usr/bin/env bash
# Builds p11smime and its tests a second time in SANITIZE_BUILD_DIR (default: build-sanitize)
# with AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer, and runs the whole
# suite. Each report goes to a file in SANITIZE_BUILD_DIR/sanitizer-reports and fails its
# command with exit status 86, so that a test expecting exit status 1 or 2 cannot mistake it.
set -euo pipefail

source_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${SANITIZE_BUILD_DIR:-$source_dir/build-sanitize}
reports=$build_dir/sanitizer-reports

cmake -S "$source_dir" -B "$build_dir" -DP11SMIME_SANITIZE=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build_dir" -j "$(nproc)"

rm -rf -- "$reports"
mkdir -p -- "$reports"
# fast_unwind_on_malloc=0 gives full stacks through Debian's libraries, which have no frame
# pointers, so that the suppressions in tests/lsan.supp can match their frames.
export ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0:exitcode=86:log_path=$reports/asan
export LSAN_OPTIONS=suppressions=$source_dir/tests/lsan.supp:print_suppressions=0:exitcode=86
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=86:log_path=$reports/ubsan

status=0
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" || status=$?

if compgen -G "$reports/*" >/dev/null; then
    echo "FAIL: sanitizer reports in $reports:"
    for report in "$reports"/*; do
        echo "--- $report"
        head -n 80 -- "$report"
    done
    status=1
fi
exit "$status"
