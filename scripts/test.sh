#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the doctest unit tests and the
# integration scripts against a SoftHSM token, openssl and gpgsm; then the same suite under
# AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer; then each fuzz target for
# FUZZ_SECONDS (default 60). Set SKIP_SANITIZERS=1 or SKIP_FUZZ=1 to leave a stage out.
set -euo pipefail

source_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$source_dir/build}

"$source_dir/scripts/install-deps.sh"
"$source_dir/scripts/build.sh"
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)"

if [[ ${SKIP_SANITIZERS:-0} != 1 ]]; then
    echo "== The suite under AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer"
    "$source_dir/scripts/test-sanitizers.sh"
fi
if [[ ${SKIP_FUZZ:-0} != 1 ]]; then
    echo "== Fuzzing"
    "$source_dir/scripts/fuzz.sh"
fi
