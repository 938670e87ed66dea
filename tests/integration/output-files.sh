#!/usr/bin/env bash
# `--out` writes through links, FIFOs and devices, keeps an existing file's mode, and fails
# before the token login when the output folder is missing; input problems fail first too.
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
make_test_dir
setup_token

message=$TEST_TMP/message.eml
write_sample_message "$message" rsa2048@example.org

# Sign with the rsa2048 key through pkcs11-spy, so the test can count C_Login calls.
sign_to() {
    local out=$1 spy_log=$2
    shift 2
    PKCS11SPY=$SOFTHSM_MODULE PKCS11SPY_OUTPUT=$spy_log \
        "$P11SMIME" sign --module "$PKCS11_SPY_MODULE" --pin-file "$PIN_FILE" \
        --key "${KEY_URI[rsa2048]}" --in "$message" --out "$out" "$@"
}

login_count() {
    if [[ -f $1 ]]; then
        grep -c 'C_Login' -- "$1" || true
    else
        echo 0
    fi
}

step "a symbolic link is followed, not replaced"
touch "$TEST_TMP/target.eml"
ln -s target.eml "$TEST_TMP/link.eml"
expect_exit 0 sign_to "$TEST_TMP/link.eml" "$TEST_TMP/spy-link.log"
[[ -L $TEST_TMP/link.eml ]] || fail "--out replaced the symbolic link with a file"
grep -q 'multipart/signed' "$TEST_TMP/target.eml" || fail "the link's target was not written"

step "an existing file keeps its mode"
printf 'old\n' >"$TEST_TMP/shared.eml"
chmod 0644 "$TEST_TMP/shared.eml"
expect_exit 0 sign_to "$TEST_TMP/shared.eml" "$TEST_TMP/spy-mode.log"
mode=$(stat -c %a "$TEST_TMP/shared.eml")
[[ $mode == 644 ]] || fail "--out changed the file mode from 644 to $mode"

step "a FIFO is written through"
mkfifo "$TEST_TMP/pipe"
cat "$TEST_TMP/pipe" >"$TEST_TMP/from-pipe.eml" &
reader=$!
expect_exit 0 sign_to "$TEST_TMP/pipe" "$TEST_TMP/spy-fifo.log"
wait "$reader"
[[ -p $TEST_TMP/pipe ]] || fail "--out replaced the FIFO with a file"
grep -q 'multipart/signed' "$TEST_TMP/from-pipe.eml" || fail "the FIFO's reader got no message"

step "a missing output folder fails before the login"
expect_exit 2 sign_to "$TEST_TMP/missing/signed.eml" "$TEST_TMP/spy-missing.log"
expect_stderr_contains "output folder '$TEST_TMP/missing/' does not exist"
count=$(login_count "$TEST_TMP/spy-missing.log")
[[ $count == 0 ]] || fail "p11smime logged in $count times for a run that cannot write"

step "an input without headers fails before the login"
message=$TEST_TMP/empty.eml
: >"$message"
expect_exit 2 sign_to "$TEST_TMP/signed-empty.eml" "$TEST_TMP/spy-empty.log"
count=$(login_count "$TEST_TMP/spy-empty.log")
[[ $count == 0 ]] || fail "p11smime logged in $count times for input it cannot sign"
[[ ! -e $TEST_TMP/signed-empty.eml ]] || fail "a failed sign left an output file"

step "a directory as output fails before the login"
message=$TEST_TMP/message.eml
expect_exit 2 sign_to "$TEST_TMP" "$TEST_TMP/spy-dir.log"
expect_stderr_contains "is a directory"
count=$(login_count "$TEST_TMP/spy-dir.log")
[[ $count == 0 ]] || fail "p11smime logged in $count times for a run that cannot write"

echo "PASS: $TEST_NAME"
