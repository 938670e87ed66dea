#!/usr/bin/env bash
# Builds the libFuzzer targets with clang in FUZZ_BUILD_DIR (default: build-fuzz) and runs
# each for FUZZ_SECONDS (default 60), seeded from the S/MIME corpus, the fuzz seeds and the
# kept regression inputs. A crash, leak, hang (over 10 s on one input) or memory blow-up fails
# the run and leaves the input in FUZZ_BUILD_DIR/artifacts. Once the fault is fixed, copy the
# input to tests/data/fuzz/TARGET/, so that every later run replays it first.
set -euo pipefail

source_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${FUZZ_BUILD_DIR:-$source_dir/build-fuzz}
seconds=${FUZZ_SECONDS:-60}

CC=clang CXX=clang++ cmake -S "$source_dir" -B "$build_dir" -DP11SMIME_FUZZ=ON \
    -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build_dir" -j "$(nproc)" --target fuzz_verify fuzz_decrypt fuzz_uri \
    fuzz_milter_config

data=$source_dir/tests/data
seeds=$source_dir/tests/fuzz/seeds
declare -A seed_dirs=(
    [fuzz_verify]="$data/corpus $data/fuzz/verify"
    [fuzz_decrypt]="$seeds/decrypt $data/corpus $data/fuzz/decrypt"
    [fuzz_uri]="$seeds/uri $data/fuzz/uri"
    [fuzz_milter_config]="$seeds/milter-config $data/fuzz/milter-config"
)

# tests/lsan.supp lists leaks in other projects' code. An entry that must match frames in
# Debian's libraries, which have no frame pointers, needs fast_unwind_on_malloc=0 in
# ASAN_OPTIONS. That makes every allocation slower, so the runs leave it out while the fuzz
# targets meet no such leak.
export ASAN_OPTIONS=detect_leaks=1
export LSAN_OPTIONS=suppressions=$source_dir/tests/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
mkdir -p "$build_dir/artifacts"
passed=0
failed=0
for target in fuzz_verify fuzz_decrypt fuzz_uri fuzz_milter_config; do
    work=$build_dir/fuzz-work/$target
    mkdir -p "$work"
    existing=()
    for dir in ${seed_dirs[$target]}; do
        [[ -d $dir ]] && existing+=("$dir")
    done
    echo "== $target for $seconds s"
    if ! "$build_dir/tests/fuzz/$target" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2560 -print_final_stats=1 \
        -artifact_prefix="$build_dir/artifacts/$target-" "$work" "${existing[@]}" \
        >"$build_dir/artifacts/$target.log" 2>&1; then
        echo "FAIL: $target; the end of its log:"
        tail -n 60 "$build_dir/artifacts/$target.log"
        failed=$((failed + 1))
    else
        grep -E '^stat::(number_of_executed_units|peak_rss_mb)' \
            "$build_dir/artifacts/$target.log" || true
        passed=$((passed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
((failed == 0))
