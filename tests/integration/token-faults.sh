#!/usr/bin/env bash
# Token faults: the fault module (tests/fault/fault_module.cpp) forwards to SoftHSM and fails
# chosen calls. A one-shot command exits 2 with an error naming the fault and leaves no output
# file; an altered message on a healthy token still gets the uniform decryption failure. A
# RecoveringTokenKey, signing in a loop, reopens the token and carries on.
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
make_test_dir
setup_token
[[ -n ${P11FAULT_SO:-} && -f $P11FAULT_SO ]] || skip "P11FAULT_SO names no fault module"
[[ -n ${RECOVERY_TEST:-} && -x $RECOVERY_TEST ]] || skip "RECOVERY_TEST names no program"

export P11FAULT_MODULE=$SOFTHSM_MODULE
export P11FAULT_CONTROL=$TEST_TMP/fault-control
export P11FAULT_LOG=$TEST_TMP/fault.log
key=${KEY_URI[rsa2048]}
lost_codes=(CKR_DEVICE_REMOVED CKR_SESSION_HANDLE_INVALID CKR_TOKEN_NOT_PRESENT CKR_DEVICE_ERROR)

write_sample_message "$TEST_TMP/message.eml" rsa2048@example.org

# Set the fault rules, one argument a line, and start a new call log.
set_faults() {
    printf '%s\n' "$@" >"$P11FAULT_CONTROL"
    : >"$P11FAULT_LOG"
}

count_calls() {
    grep -c "^$1 " -- "$P11FAULT_LOG" || true
}

# Sign through the fault module and expect exit status 2, TEXT in stderr and no --out file.
expect_sign_fault() {
    local text=$1 out=$TEST_TMP/faulty-signed.eml
    rm -f -- "$out"
    expect_exit 2 "$P11SMIME" sign --module "$P11FAULT_SO" --key "$key" \
        --pin-file "$PIN_FILE" --in "$TEST_TMP/message.eml" --out "$out"
    expect_p11smime_error "$text"
    [[ ! -e $out ]] || fail "a failed sign left its --out file behind"
    if compgen -G "$out.p11smime-*" >/dev/null; then
        fail "a failed sign left a temporary output file behind"
    fi
}

step "the fault module passes calls through when no rule is set"
set_faults "# no faults"
expect_exit 0 "$P11SMIME" sign --module "$P11FAULT_SO" --key "$key" --pin-file "$PIN_FILE" \
    --in "$TEST_TMP/message.eml" --out "$TEST_TMP/signed.eml"
expect_exit 0 "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca \
    --in "$TEST_TMP/signed.eml"
[[ $(count_calls C_Sign) == 1 ]] || fail "the call log shows $(count_calls C_Sign) C_Sign calls"

for code in "${lost_codes[@]}"; do
    step "sign: C_Sign fails with $code and the sessions are gone"
    set_faults "C_Sign $code close-sessions"
    expect_sign_fault "$code"
    [[ $(count_calls C_Sign) == 1 ]] || fail "sign called C_Sign $(count_calls C_Sign) times"

    step "sign: C_Login fails with $code"
    set_faults "C_Login $code"
    expect_sign_fault "$code"

    step "sign: finding the key fails with $code"
    set_faults "C_FindObjectsInit $code"
    expect_sign_fault "$code"
done

step "list: C_GetSlotList fails with CKR_DEVICE_ERROR"
set_faults "C_GetSlotList CKR_DEVICE_ERROR"
expect_exit 2 "$P11SMIME" list --module "$P11FAULT_SO"
expect_p11smime_error "p11smime: error:"
[[ ! -s $LAST_STDOUT ]] || fail "a failed list printed a partial listing"

step "decrypt: the token goes away during C_Decrypt"
set_faults "# no faults"
expect_exit 0 "$P11SMIME" encrypt --recipient "$HSM_DIR/certs/rsa2048.pem" \
    --in "$TEST_TMP/message.eml" --out "$TEST_TMP/encrypted.eml"
for code in "${lost_codes[@]}"; do
    set_faults "C_Decrypt $code close-sessions"
    rm -f -- "$TEST_TMP/decrypted.eml"
    expect_exit 2 "$P11SMIME" decrypt --module "$P11FAULT_SO" --pin-file "$PIN_FILE" \
        --no-verify --in "$TEST_TMP/encrypted.eml" --out "$TEST_TMP/decrypted.eml"
    # The sessions were closed, so the probe after the failure gets the handle error.
    expect_p11smime_error "CKR_SESSION_HANDLE_INVALID"
    [[ ! -e $TEST_TMP/decrypted.eml ]] || fail "a failed decrypt ($code) wrote its --out file"
    [[ $(count_calls C_Decrypt) == 1 ]] || fail "decrypt called C_Decrypt more than once"
done

step "decrypt: device error, sessions alive"
# OpenSSL clears the token's error on purpose, so the failure looks like a bad message until
# a test decryption shows that the token no longer decrypts.
set_faults "C_Decrypt CKR_DEVICE_ERROR"
expect_exit 2 "$P11SMIME" decrypt --module "$P11FAULT_SO" --pin-file "$PIN_FILE" \
    --no-verify --in "$TEST_TMP/encrypted.eml" --out "$TEST_TMP/decrypted.eml"
expect_p11smime_error "failed a test decryption after a message failed to decrypt"
[[ ! -e $TEST_TMP/decrypted.eml ]] || fail "a failed decrypt wrote its --out file"

step "decrypt: altered message, healthy token"
set_faults "# no faults"
# AES-GCM, so that any altered byte fails the tag check, where a CBC padding might pass.
expect_exit 0 "$P11SMIME" encrypt --recipient "$HSM_DIR/certs/rsa2048.pem" \
    --cipher aes-256-gcm --in "$TEST_TMP/message.eml" --out "$TEST_TMP/encrypted-gcm.eml"
python3 - "$TEST_TMP/encrypted-gcm.eml" "$TEST_TMP/altered.eml" <<'PY'
import base64
import email
import sys

message = email.message_from_binary_file(open(sys.argv[1], "rb"))
der = bytearray(message.get_payload(decode=True))
# The authentication tag is the last OCTET STRING of 16 bytes, before the end-of-contents
# octets of the indefinite-length encoding.
tag = der.rfind(b"\x04\x10") + 2
assert len(der) - tag >= 16, "no authentication tag found"
der[tag] ^= 0x01
message.set_payload(base64.encodebytes(bytes(der)).decode())
open(sys.argv[2], "wb").write(message.as_bytes())
PY
expect_exit 1 "$P11SMIME" decrypt --module "$P11FAULT_SO" --pin-file "$PIN_FILE" \
    --no-verify --in "$TEST_TMP/altered.eml" --out "$TEST_TMP/decrypted.eml"
expect_stderr_contains "cannot be decrypted"
[[ ! -e $TEST_TMP/decrypted.eml ]] || fail "a failed decrypt wrote its --out file"

step "decrypt: OAEP without CKM_RSA_X_509"
set_faults "# no faults"
expect_exit 0 "$P11SMIME" encrypt --recipient "$HSM_DIR/certs/rsa2048.pem" --rsa-oaep \
    --in "$TEST_TMP/message.eml" --out "$TEST_TMP/encrypted-oaep.eml"
# libp11 decrypts OAEP as raw RSA. The token refuses that mechanism once and lists it as
# unknown, while the test decryption with PKCS#1 v1.5 still works.
set_faults "C_DecryptInit CKR_MECHANISM_INVALID count 1" \
    "C_GetMechanismInfo CKR_MECHANISM_INVALID"
expect_exit 2 "$P11SMIME" decrypt --module "$P11FAULT_SO" --pin-file "$PIN_FILE" \
    --no-verify --in "$TEST_TMP/encrypted-oaep.eml" --out "$TEST_TMP/decrypted.eml"
expect_p11smime_error "does not offer CKM_RSA_X_509"
[[ ! -e $TEST_TMP/decrypted.eml ]] || fail "a failed decrypt wrote its --out file"

step "decrypt: OAEP on a token with CKM_RSA_X_509"
set_faults "# no faults"
expect_exit 0 "$P11SMIME" decrypt --module "$P11FAULT_SO" --pin-file "$PIN_FILE" \
    --no-verify --in "$TEST_TMP/encrypted-oaep.eml" --out "$TEST_TMP/decrypted.eml"

# Run the recovery test program: SIGNATURES signatures, the rules set before number FAULT_AT.
# recover EXPECTED_STATUS SIGNATURES FAULT_AT RULE...
recover() {
    local expected=$1
    shift
    set_faults "# no faults"
    expect_exit "$expected" "$RECOVERY_TEST" "$P11FAULT_SO" "$key" "$TEST_TMP/recovery-pin.txt" \
        "$P11FAULT_CONTROL" "$@"
}

cp -- "$PIN_FILE" "$TEST_TMP/recovery-pin.txt"
for code in "${lost_codes[@]}"; do
    step "recovery: C_Sign fails with $code mid-run and the sessions are gone"
    recover 0 40 15 "C_Sign $code count 1 close-sessions"
    expect_stderr_contains "40 of 40 signatures verified, 1 recoveries"
    expect_stderr_contains "$code"
    # A fresh libp11 context means a second C_Initialize and a second login.
    [[ $(count_calls C_Initialize) == 2 ]] ||
        fail "recovery made $(count_calls C_Initialize) C_Initialize calls, expected 2"
    [[ $(count_calls C_Login) == 2 ]] || fail "recovery made $(count_calls C_Login) logins"
done

step "recovery: the token is absent for two reopen attempts, then back"
recover 0 40 15 "C_Sign CKR_DEVICE_REMOVED count 1 close-sessions" \
    "C_Login CKR_TOKEN_NOT_PRESENT count 2"
expect_stderr_contains "40 of 40 signatures verified, 1 recoveries"
[[ $(count_calls C_Initialize) == 4 ]] ||
    fail "expected 4 C_Initialize calls (start and 3 reopens), got $(count_calls C_Initialize)"

step "recovery: the token is lost twice in one run"
recover 0 60 10 "C_Sign CKR_DEVICE_ERROR skip 5 count 1" \
    "C_Sign CKR_SESSION_HANDLE_INVALID skip 20 count 1 close-sessions"
expect_stderr_contains "60 of 60 signatures verified, 2 recoveries"

step "recovery: a token that never comes back ends in an error"
recover 1 20 5 "C_Sign CKR_DEVICE_REMOVED count 1 close-sessions" \
    "C_Login CKR_TOKEN_NOT_PRESENT"
expect_stderr_contains "was not found again after 5 reopen attempts"

step "recovery: a PIN rejected at reopen is not retried"
recover 1 20 5 "C_Sign CKR_DEVICE_REMOVED count 1 close-sessions" wrong-pin
expect_stderr_contains "CKR_PIN_INCORRECT"
[[ $(count_calls C_Login) == 2 ]] ||
    fail "expected 2 C_Login calls (start, rejected reopen), got $(count_calls C_Login)"

step "recovery: a failure that is not a token fault is not retried"
cp -- "$PIN_FILE" "$TEST_TMP/recovery-pin.txt"
recover 1 20 5 "C_Sign CKR_FUNCTION_FAILED count 1"
expect_stderr_contains "signing on the token failed"
[[ $(count_calls C_Initialize) == 1 ]] || fail "a plain C_Sign failure reopened the token"

echo "PASS: $TEST_NAME"
