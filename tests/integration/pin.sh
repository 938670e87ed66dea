#!/usr/bin/env bash
# A wrong PIN fails with exit status 2 after exactly one C_Login, so p11smime never spends
# more of the token's PIN tries than one. A missing PIN file is an error naming the file.
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
make_test_dir
setup_token
[[ -f $PKCS11_SPY_MODULE ]] || skip "OpenSC's pkcs11-spy module $PKCS11_SPY_MODULE is missing"

write_sample_message "$TEST_TMP/message.eml" rsa2048@example.org

# Run p11smime sign through pkcs11-spy, which logs every PKCS#11 call to SPY_LOG.
# SoftHSM 2.6.1 never locks the PIN and shows no count of failed logins (only the flag
# CKF_USER_PIN_COUNT_LOW), so the spy log is the proof of a single attempt.
# sign_through_spy EXPECTED_STATUS SPY_LOG PIN_FILE OUT
sign_through_spy() {
    local expected=$1 spy_log=$2 pin_file=$3 out=$4
    PKCS11SPY=$SOFTHSM_MODULE PKCS11SPY_OUTPUT=$spy_log expect_exit "$expected" \
        "$P11SMIME" sign --module "$PKCS11_SPY_MODULE" --key "${KEY_URI[rsa2048]}" \
        --pin-file "$pin_file" --in "$TEST_TMP/message.eml" --out "$out"
}

count_logins() {
    grep -cE '^[0-9]+: C_Login(User)?$' -- "$1" || true
}

step "the right PIN through pkcs11-spy logs in once"
# The control: it shows that the spy log records C_Login calls in the expected form.
sign_through_spy 0 "$TEST_TMP/spy-right.log" "$PIN_FILE" "$TEST_TMP/signed.eml"
logins=$(count_logins "$TEST_TMP/spy-right.log")
[[ $logins == 1 ]] || fail "signing with the right PIN made $logins C_Login calls, expected 1"
expect_exit 0 "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca \
    --in "$TEST_TMP/signed.eml"

step "a wrong PIN fails after one C_Login"
printf '000000\n' >"$TEST_TMP/wrong-pin.txt"
sign_through_spy 2 "$TEST_TMP/spy-wrong.log" "$TEST_TMP/wrong-pin.txt" \
    "$TEST_TMP/wrong-pin-signed.eml"
grep -qE 'Returned: +[0-9]+ CKR_PIN_INCORRECT' -- "$TEST_TMP/spy-wrong.log" ||
    fail "the spy log shows no CKR_PIN_INCORRECT from the token"
logins=$(count_logins "$TEST_TMP/spy-wrong.log")
[[ $logins == 1 ]] || fail "a wrong PIN made $logins C_Login calls, expected 1"
[[ ! -e $TEST_TMP/wrong-pin-signed.eml ]] || fail "a failed sign left its --out file behind"
expect_p11smime_error "CKR_PIN_INCORRECT"

step "a PIN file without a trailing newline works"
printf '123456' >"$TEST_TMP/pin-no-newline.txt"
expect_exit 0 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "${KEY_URI[rsa2048]}" \
    --pin-file "$TEST_TMP/pin-no-newline.txt" --in "$TEST_TMP/message.eml" \
    --out "$TEST_TMP/no-newline-signed.eml"

step "a missing PIN file is an error that names it"
expect_exit 2 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "${KEY_URI[rsa2048]}" \
    --pin-file "$TEST_TMP/no-such-pin.txt" --in "$TEST_TMP/message.eml" \
    --out "$TEST_TMP/missing-pin-signed.eml"
expect_p11smime_error "$TEST_TMP/no-such-pin.txt"
[[ ! -e $TEST_TMP/missing-pin-signed.eml ]] || fail "a failed sign left its --out file behind"

echo "PASS: $TEST_NAME"
