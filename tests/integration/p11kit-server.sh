#!/usr/bin/env bash
# The network HSM guide's forwarding set-up: `p11-kit server` serves the SoftHSM token on a
# Unix socket, and p11smime signs through p11-kit's client module, as a container or second
# machine would.
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

readonly CLIENT_MODULE=/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so

require_p11smime
require_command p11-kit openssl
[[ -f $CLIENT_MODULE ]] || skip "$CLIENT_MODULE is not installed"
make_test_dir
setup_token

SOCKET=$TEST_TMP/pkcs11.sock
SERVER_PID=
stop_server() {
    local status=$?
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    # cleanup_test_dir exits with the status it finds in $?, which must be the test's.
    (exit "$status")
    cleanup_test_dir
}
trap stop_server EXIT

step "p11-kit server serves the token on a Unix socket"
p11-kit server --foreground --name "$SOCKET" --provider "$SOFTHSM_MODULE" \
    "pkcs11:token=p11smime-test" >"$TEST_TMP/server.out" 2>"$TEST_TMP/server.err" &
SERVER_PID=$!
for _ in $(seq 50); do
    [[ -S $SOCKET ]] && break
    sleep 0.1
done
[[ -S $SOCKET ]] || fail "p11-kit server made no socket: $(cat "$TEST_TMP/server.err")"

# The client sees the token only through the socket, not through SOFTHSM2_CONF.
unset SOFTHSM2_CONF P11SMIME_MODULE
export P11_KIT_SERVER_ADDRESS=unix:path=$SOCKET

step "the token and its keys are listed through the client module"
expect_exit 0 "$P11SMIME" list --module "$CLIENT_MODULE" --login --pin-file "$PIN_FILE"
expect_stdout_contains "token: p11smime-test"
expect_stdout_contains "object=p256;type=private"

step "a message signed through the forwarded token verifies with p11smime and openssl"
write_sample_message "$TEST_TMP/message.eml" p256@example.org
expect_exit 0 "$P11SMIME" sign --module "$CLIENT_MODULE" --key "${KEY_URI[p256]}" \
    --pin-file "$PIN_FILE" --in "$TEST_TMP/message.eml" --out "$TEST_TMP/signed.eml"
expect_exit 0 "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca --in "$TEST_TMP/signed.eml"
expect_exit 0 openssl smime -verify -in "$TEST_TMP/signed.eml" -CAfile "$CA_FILE" \
    -purpose smimesign -out /dev/null

step "a wrong PIN is reported through the socket"
printf '000000\n' >"$TEST_TMP/wrong-pin.txt"
expect_exit 2 "$P11SMIME" sign --module "$CLIENT_MODULE" --key "${KEY_URI[p256]}" \
    --pin-file "$TEST_TMP/wrong-pin.txt" --in "$TEST_TMP/message.eml"
expect_p11smime_error "CKR_PIN_INCORRECT"

echo "PASS: $TEST_NAME"
