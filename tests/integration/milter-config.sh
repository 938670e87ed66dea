#!/usr/bin/env bash
# p11smime-milter start-up without an MTA. Configuration errors name the file, line and fix.
# --check opens the keys with one C_Login, and a wrong PIN stops the milter after one
# C_Login. The PIN file can be in systemd's credentials directory. A token that is missing
# at start-up is opened once it appears.
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname -- "${BASH_SOURCE[0]}")/lib-postfix.sh"

require_milter
make_test_dir
setup_token

# write_config FILE MODULE PIN_FILE: sign and decrypt rules on the test token.
write_config() {
    cat >"$1" <<EOF
socket = inet:$(free_port)@127.0.0.1
module = $2
token = pkcs11:token=p11smime-test
pin_file = $3
retry_initial = 1
retry_max = 1

[sign]
senders = rsa2048@example.org
key = pkcs11:object=rsa2048

[decrypt]
recipients = example.org
key = pkcs11:object=rsa3072
EOF
}

count_logins() {
    grep -cE '^[0-9]+: C_Login(User)?$' -- "$1" || true
}

step "a configuration error names the file, the line and the fix"
write_config "$TEST_TMP/bad.conf" "$SOFTHSM_MODULE" "$PIN_FILE"
sed -i 's/^\[decrypt\]$/[decrypt]\ncipher = aes/' "$TEST_TMP/bad.conf"
expect_exit 2 "$P11SMIME_MILTER" --config "$TEST_TMP/bad.conf" --check
expect_stderr_contains "p11smime-milter: error: $TEST_TMP/bad.conf:13: unknown setting 'cipher'"
expect_stderr_contains "p11smime-milter: hint: the settings here are certificate, key, recipients"

step "a missing configuration file is named"
expect_exit 2 "$P11SMIME_MILTER" --config "$TEST_TMP/none.conf" --check
expect_stderr_contains "$TEST_TMP/none.conf: cannot read the configuration file"

step "--check opens both keys with one C_Login"
[[ -f $PKCS11_SPY_MODULE ]] || skip "OpenSC's pkcs11-spy module $PKCS11_SPY_MODULE is missing"
write_config "$TEST_TMP/spy.conf" "$PKCS11_SPY_MODULE" "$PIN_FILE"
PKCS11SPY=$SOFTHSM_MODULE PKCS11SPY_OUTPUT=$TEST_TMP/spy-right.log \
    expect_exit 0 "$P11SMIME_MILTER" --config "$TEST_TMP/spy.conf" --check
expect_stderr_contains "event=token-open keys=2"
expect_stderr_contains "configuration $TEST_TMP/spy.conf is valid"
logins=$(count_logins "$TEST_TMP/spy-right.log")
[[ $logins == 1 ]] || fail "opening two keys made $logins C_Login calls, expected 1"

step "a wrong PIN stops the milter after one C_Login"
printf '000000\n' >"$TEST_TMP/wrong-pin.txt"
write_config "$TEST_TMP/wrong.conf" "$PKCS11_SPY_MODULE" "$TEST_TMP/wrong-pin.txt"
PKCS11SPY=$SOFTHSM_MODULE PKCS11SPY_OUTPUT=$TEST_TMP/spy-wrong.log \
    expect_exit 2 "$P11SMIME_MILTER" --config "$TEST_TMP/wrong.conf"
expect_stderr_contains "CKR_PIN_INCORRECT"
expect_stderr_contains "retry=never"
expect_stderr_contains "p11smime-milter: hint: correct the PIN file"
logins=$(count_logins "$TEST_TMP/spy-wrong.log")
[[ $logins == 1 ]] || fail "a wrong PIN made $logins C_Login calls, expected 1"
grep -q 000000 "$LAST_STDERR" && fail "the PIN appears in the milter's output"

step "the PIN file can come from systemd's credentials directory"
mkdir -p "$TEST_TMP/credentials"
cp "$PIN_FILE" "$TEST_TMP/credentials/token-pin"
write_config "$TEST_TMP/credentials.conf" "$SOFTHSM_MODULE" \
    '${CREDENTIALS_DIRECTORY}/token-pin'
CREDENTIALS_DIRECTORY=$TEST_TMP/credentials \
    expect_exit 0 "$P11SMIME_MILTER" --config "$TEST_TMP/credentials.conf" --check
expect_exit 2 env -u CREDENTIALS_DIRECTORY \
    "$P11SMIME_MILTER" --config "$TEST_TMP/credentials.conf" --check
expect_stderr_contains "credentials.conf:4: pin_file uses \${CREDENTIALS_DIRECTORY}"

step "a token missing at start-up is opened once it appears"
token_folder=$(find "$HSM_DIR/tokens" -mindepth 1 -maxdepth 1 -type d)
mv "$token_folder" "$HSM_DIR/token-away"
write_config "$TEST_TMP/late.conf" "$SOFTHSM_MODULE" "$PIN_FILE"
expect_exit 2 "$P11SMIME_MILTER" --config "$TEST_TMP/late.conf" --check
expect_stderr_contains "event=token-open-failed"
expect_stderr_contains "keys could not be opened"

MILTER_LOG=$TEST_TMP/late.log
"$P11SMIME_MILTER" --config "$TEST_TMP/late.conf" >"$MILTER_LOG" 2>&1 &
MILTER_PID=$!
trap 'stop_milter; cleanup_test_dir' EXIT
deadline=$((SECONDS + 20))
until grep -q 'event=token-retry' "$MILTER_LOG"; do
    ((SECONDS < deadline)) || fail "the milter did not retry the missing token"
    kill -0 "$MILTER_PID" || fail "the milter exited while the token was missing"
    sleep 0.2
done
mv "$HSM_DIR/token-away" "$token_folder"
deadline=$((SECONDS + 20))
until grep -q 'event=token-recovered' "$MILTER_LOG"; do
    ((SECONDS < deadline)) || fail "the milter did not open the token once it appeared"
    sleep 0.2
done
kill -TERM "$MILTER_PID"
status=0
wait "$MILTER_PID" || status=$?
MILTER_PID=
[[ $status == 0 ]] || fail "the milter exited with $status on SIGTERM"

echo "PASS: $TEST_NAME"
