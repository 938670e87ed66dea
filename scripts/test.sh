#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the doctest unit tests and the
# integration scripts against a SoftHSM token, openssl and gpgsm.
set -euo pipefail

source_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$source_dir/build}

"$source_dir/scripts/install-deps.sh"
"$source_dir/scripts/build.sh"
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)"
