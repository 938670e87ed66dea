#!/usr/bin/env bash
# PIN safety: the fault module reports the token's PIN state flags and counts C_Login calls.
# A PIN is never retried. The final try is spent only by a person at a terminal, and a locked
# PIN is not tried. The PIN shows up in no output, and a PIN file that others can read gets a
# warning.
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command pkcs11-tool
make_test_dir
setup_token
[[ -n ${P11FAULT_SO:-} && -f $P11FAULT_SO ]] || skip "P11FAULT_SO names no fault module"

export P11FAULT_MODULE=$SOFTHSM_MODULE
export P11FAULT_CONTROL=$TEST_TMP/fault-control
export P11FAULT_LOG=$TEST_TMP/fault.log
key=${KEY_URI[rsa2048]}
message=$TEST_TMP/message.eml
write_sample_message "$message" rsa2048@example.org

# A PIN that cannot turn up by chance in base64, hexadecimal or the test's own text.
pin='Pq7-zebra-4711'
expect_exit 0 pkcs11-tool --module "$SOFTHSM_MODULE" --token-label p11smime-test --login \
    --pin "$(cat -- "$PIN_FILE")" --change-pin --new-pin "$pin"
printf '%s\n' "$pin" >"$TEST_TMP/pin.txt"
chmod 600 -- "$TEST_TMP/pin.txt"

set_faults() {
    printf '%s\n' "$@" >"$P11FAULT_CONTROL"
    : >"$P11FAULT_LOG"
}

logins() {
    grep -c '^C_Login ' -- "$P11FAULT_LOG" || true
}

# sign_with EXPECTED_STATUS PIN_FILE [ARG...]: sign through the fault module into TEST_TMP/out.
sign_with() {
    local expected=$1 pin_file=$2
    shift 2
    rm -f -- "$TEST_TMP/out.eml"
    expect_exit "$expected" "$P11SMIME" sign --module "$P11FAULT_SO" --key "$key" \
        --pin-file "$pin_file" --in "$message" --out "$TEST_TMP/out.eml" "$@"
}

# Fail when the PIN appears in any file given.
expect_no_pin_in() {
    local file
    for file in "$@"; do
        if grep -qaF -- "$pin" "$file"; then
            fail "the PIN appears in $file"
        fi
    done
}

step "the right PIN logs in once"
set_faults "# no faults"
sign_with 0 "$TEST_TMP/pin.txt"
[[ $(logins) == 1 ]] || fail "signing made $(logins) C_Login calls, expected 1"
expect_no_pin_in "$LAST_STDOUT" "$LAST_STDERR" "$TEST_TMP/out.eml"

step "a wrong PIN is tried once and not retried"
printf 'wrong-pin\n' >"$TEST_TMP/wrong.txt"
set_faults "# no faults"
sign_with 2 "$TEST_TMP/wrong.txt"
expect_p11smime_error "CKR_PIN_INCORRECT"
[[ $(logins) == 1 ]] || fail "a wrong PIN made $(logins) C_Login calls, expected 1"
[[ ! -e $TEST_TMP/out.eml ]] || fail "a failed sign left its --out file"

step "decrypt with a wrong PIN is tried once too"
expect_exit 0 "$P11SMIME" encrypt --recipient "$HSM_DIR/certs/rsa2048.pem" --in "$message" \
    --out "$TEST_TMP/encrypted.eml"
set_faults "# no faults"
expect_exit 2 "$P11SMIME" decrypt --module "$P11FAULT_SO" --pin-file "$TEST_TMP/wrong.txt" \
    --no-verify --in "$TEST_TMP/encrypted.eml" --out "$TEST_TMP/decrypted.eml"
[[ $(logins) == 1 ]] || fail "decrypt with a wrong PIN made $(logins) C_Login calls"
[[ ! -e $TEST_TMP/decrypted.eml ]] || fail "a failed decrypt left its --out file"

step "a token on its final PIN try is refused without a person at a terminal"
set_faults "C_GetTokenInfo flags CKF_USER_PIN_FINAL_TRY"
sign_with 2 "$TEST_TMP/pin.txt"
expect_p11smime_error "CKF_USER_PIN_FINAL_TRY"
[[ $(logins) == 0 ]] || fail "the final try was spent: $(logins) C_Login calls"

step "a PIN in the URI does not spend the final try either"
rm -f -- "$TEST_TMP/out.eml"
expect_exit 2 "$P11SMIME" sign --module "$P11FAULT_SO" --key "$key?pin-value=$pin" \
    --in "$message" --out "$TEST_TMP/out.eml"
expect_p11smime_error "CKF_USER_PIN_FINAL_TRY"
[[ $(logins) == 0 ]] || fail "the final try was spent: $(logins) C_Login calls"

step "a locked PIN is not tried"
set_faults "C_GetTokenInfo flags CKF_USER_PIN_LOCKED"
sign_with 2 "$TEST_TMP/pin.txt"
expect_p11smime_error "CKF_USER_PIN_LOCKED"
[[ $(logins) == 0 ]] || fail "a locked PIN was tried: $(logins) C_Login calls"

step "few tries left gives a warning and signs"
# SoftHSM 2.6.1 sets CKF_USER_PIN_COUNT_LOW itself after a wrong PIN, so this warning alone
# does not show that the fault module's flag arrived. The final-try and locked steps show it.
set_faults "C_GetTokenInfo flags CKF_USER_PIN_COUNT_LOW"
sign_with 0 "$TEST_TMP/pin.txt"
expect_stderr_contains "few PIN tries left"

if command -v script >/dev/null; then
    step "a person at a terminal may spend the final try, after a warning"
    set_faults "C_GetTokenInfo flags CKF_USER_PIN_FINAL_TRY"
    rm -f -- "$TEST_TMP/out.eml"
    # script gives p11smime a terminal. The PIN is typed a second later, because turning
    # echo off flushes what was typed before the prompt.
    command_line=$(printf '%q ' "$P11SMIME" sign --module "$P11FAULT_SO" --key "$key" \
        --in "$message" --out "$TEST_TMP/out.eml")
    expect_exit 0 timeout 30 script -qec "$command_line" "$TEST_TMP/typescript" \
        < <(sleep 1; printf '%s\n' "$pin")
    expect_stdout_contains "one PIN try left"
    [[ $(logins) == 1 ]] || fail "the typed PIN made $(logins) C_Login calls, expected 1"
    [[ -s $TEST_TMP/out.eml ]] || fail "signing with the typed PIN wrote no output"
    # Echo is off, so the typed PIN is not in the terminal output.
    expect_no_pin_in "$LAST_STDOUT" "$TEST_TMP/typescript"
else
    echo "note: script(1) is missing, so the terminal case is not run"
fi

step "a PIN in the URI warns and never appears in messages"
set_faults "# no faults"
expect_exit 0 "$P11SMIME" sign --module "$P11FAULT_SO" --key "$key?pin-value=$pin" \
    --in "$message" --out "$TEST_TMP/out.eml"
expect_stderr_contains "pin-value is visible in the process list"
expect_no_pin_in "$LAST_STDOUT" "$LAST_STDERR"
for wrong in "pkcs11:token=no-such-token;object=x;type=private?pin-value=$pin" \
    "pkcs11:token=p11smime-test;object=no-such-key;type=private?pin-value=$pin" \
    "pkcs11:token=p11smime-test;id=%zz?pin-value=$pin"; do
    expect_exit 2 "$P11SMIME" sign --module "$P11FAULT_SO" --key "$wrong" --in "$message" \
        --out "$TEST_TMP/out.eml"
    expect_p11smime_error "p11smime: error:"
    expect_no_pin_in "$LAST_STDOUT" "$LAST_STDERR"
done

step "no output of any command shows the PIN"
expect_exit 0 "$P11SMIME" list --module "$P11FAULT_SO" --login --pin-file "$TEST_TMP/pin.txt"
expect_no_pin_in "$LAST_STDOUT" "$LAST_STDERR"
# A token that fails C_Decrypt also fails the test decryption after it, so this exits 2.
set_faults "C_Decrypt CKR_DEVICE_ERROR"
P11SMIME_DEBUG=1 expect_exit 2 "$P11SMIME" decrypt --module "$P11FAULT_SO" \
    --pin-file "$TEST_TMP/pin.txt" --no-verify --in "$TEST_TMP/encrypted.eml" \
    --out "$TEST_TMP/decrypted.eml"
expect_no_pin_in "$LAST_STDOUT" "$LAST_STDERR" "$P11FAULT_LOG"

step "a PIN file readable by group or others gets a warning"
set_faults "# no faults"
chmod 640 -- "$TEST_TMP/pin.txt"
sign_with 0 "$TEST_TMP/pin.txt"
expect_stderr_contains "is readable by group or others"
chmod 604 -- "$TEST_TMP/pin.txt"
sign_with 0 "$TEST_TMP/pin.txt"
expect_stderr_contains "is readable by group or others"
chmod 600 -- "$TEST_TMP/pin.txt"
sign_with 0 "$TEST_TMP/pin.txt"
if grep -qF "readable by group or others" -- "$LAST_STDERR"; then
    fail "a PIN file with mode 600 got the warning"
fi

echo "PASS: $TEST_NAME"
