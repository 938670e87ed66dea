#!/usr/bin/env bash
# A small run of bench/run.sh: the benchmark sets up its token, runs every measurement and
# prints one result row per target. Its numbers are not checked; speed is measured by running
# bench/run.sh itself (see docs/benchmarks.md).
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command openssl python3
make_test_dir
[[ -f $SOFTHSM_MODULE ]] || skip "SoftHSM module $SOFTHSM_MODULE is not installed"
[[ -f /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so ]] ||
    skip "libengine-pkcs11-openssl is not installed"
SIGN_THROUGHPUT=$(dirname -- "$P11SMIME")/../bench/sign-throughput
[[ -x $SIGN_THROUGHPUT ]] || skip "bench/sign-throughput was not built next to $P11SMIME"
export SIGN_THROUGHPUT

step "bench/run.sh --smoke prints a row for every target"
COMMAND_TIMEOUT=300 expect_exit 0 bash "$SOURCE_DIR/bench/run.sh" --smoke \
    --work-dir "$TEST_TMP/bench"
rows=$(grep -c '^| [1-5]\. ' -- "$LAST_STDOUT" || true)
[[ $rows == 12 ]] || fail "the benchmark printed $rows result rows instead of 12"
for target in ">= 0.9" ">= 8" "<= 0.7" ">= 1.8" "<= 1.3, RSS < 64 MiB" "<= 1.5, RSS < 64 MiB"; do
    expect_stdout_contains "| $target |"
done
[[ -s $TEST_TMP/bench/timings.txt ]] || fail "the benchmark kept no timings"

echo "PASS: $TEST_NAME"
