#!/usr/bin/env bash
# `p11smime doctor` on SoftHSM tokens and on a virtual reader (vsmartcard-vpcd) with and
# without a card, in the test's own mount and network namespaces. The SoftHSM cases are a
# ready token, hidden keys, a wrong PIN, a key without a certificate, a certificate not for
# S/MIME, a user PIN never set and a broken p11-kit module. Each case checks the exit status,
# the [ok], [warning] and [problem] lines, and that each problem comes with a fix.
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

enter_private_namespace "$@"
require_p11smime
require_command openssl pkcs11-tool softhsm2-util
[[ -f $OPENSC_MODULE ]] || skip "OpenSC's PKCS#11 module $OPENSC_MODULE is missing"
make_test_dir
setup_token

readonly P11KIT_MODULE_DIR=/usr/share/p11-kit/modules

doctor() {
    expect_exit "$1" "$P11SMIME" doctor "${@:2}"
}

# Check that the last doctor output has a line with STATUS (ok, note, warning or problem)
# containing TEXT, and for a warning or problem, a fix line right after it.
expect_finding() {
    local status=$1 text=$2
    if ! grep -qF -- "[$status] " "$LAST_STDOUT" ||
        ! grep -F -- "[$status] " "$LAST_STDOUT" | grep -qF -- "$text"; then
        echo "--- doctor output" >&2
        cat -- "$LAST_STDOUT" >&2
        fail "doctor printed no [$status] line containing \"$text\""
    fi
    [[ $status == ok || $status == note ]] && return 0
    awk -v status="[$status] " -v text="$text" '
        found { exit($1 == "fix:" ? 0 : 1) }
        index($0, status) && index($0, text) { found = 1 }
        END { if (!found) exit 1 }' "$LAST_STDOUT" ||
        fail "the [$status] line containing \"$text\" has no fix line after it"
}

expect_no_finding() {
    if grep -F -- "[$1] " "$LAST_STDOUT" | grep -qF -- "$2"; then
        cat -- "$LAST_STDOUT" >&2
        fail "doctor printed a [$1] line containing \"$2\""
    fi
}

step "SoftHSM after a login: ready to sign, the expired certificate is a warning"
doctor 0 --module "$SOFTHSM_MODULE" --login --pin-file "$PIN_FILE"
expect_finding note "pcscd is not running"
expect_finding ok "certificate 'rsa2048' (CKA_ID 01"
expect_finding ok "has its private key"
expect_finding warning "certificate 'expired' (CKA_ID 10"
expect_finding ok "is for S/MIME signing as p384@example.org"
expect_finding ok "the PIN is not locked"
expect_stdout_contains "result: ready to sign with 4 certificate(s)"
expect_stdout_contains "id=%01;type=private (rsa2048@example.org)"
expect_no_finding problem ""
titles=$(grep -E '^[A-Za-z]' "$LAST_STDOUT" | grep -v '^result:' | paste -sd '|')
[[ $titles == "PKCS#11 modules|pcscd, readers and cards|tokens|certificates and keys|"* ]] ||
    fail "doctor printed its checks in the order $titles"
[[ $titles == *"|certificate validity and S/MIME usage|PIN state" ]] ||
    fail "doctor printed its checks in the order $titles"

step "SoftHSM without a login: the private keys are hidden, the public keys match"
doctor 0 --module "$SOFTHSM_MODULE"
expect_finding note "hidden until a login"
expect_stdout_contains "result: ready to sign"

step "a wrong PIN blocks signing"
printf '000000\n' >"$TEST_TMP/wrong-pin.txt"
doctor 2 --module "$SOFTHSM_MODULE" --login --pin-file "$TEST_TMP/wrong-pin.txt"
expect_finding problem "login failed"
expect_finding problem "CKR_PIN_INCORRECT"
expect_stdout_contains "result: signing is blocked"

step "a module that does not exist blocks signing"
doctor 2 --module "$TEST_TMP/no-such-module.so"
expect_finding problem "$TEST_TMP/no-such-module.so"

step "a second token: a key without a certificate, then a certificate not for S/MIME"
second=$TEST_TMP/second
mkdir -p -- "$second/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\n' "$second/tokens" \
    >"$second/softhsm2.conf"
SOFTHSM2_CONF=$second/softhsm2.conf expect_exit 0 softhsm2-util --init-token --free \
    --label second --so-pin 12345678 --pin 123456
export SOFTHSM2_CONF=$second/softhsm2.conf
expect_exit 0 "$P11SMIME" keygen --module "$SOFTHSM_MODULE" --pin-file "$PIN_FILE" \
    --token pkcs11:token=second --type ec:p256 --label web
key_uri=$(cat -- "$LAST_STDOUT")
doctor 2 --module "$SOFTHSM_MODULE" --login --pin-file "$PIN_FILE"
expect_finding problem "private key 'web' (CKA_ID 01) has no certificate"
expect_stdout_contains "p11smime csr --key"

expect_exit 0 "$P11SMIME" csr --module "$SOFTHSM_MODULE" --pin-file "$PIN_FILE" \
    --key "$key_uri" --email web@example.org --out "$TEST_TMP/web.csr"
printf '%s\n' 'basicConstraints = critical, CA:false' 'keyUsage = critical, digitalSignature' \
    'extendedKeyUsage = serverAuth' 'subjectAltName = email:web@example.org' \
    >"$TEST_TMP/server-ext.cnf"
expect_exit 0 openssl x509 -req -in "$TEST_TMP/web.csr" -CA "$CA_FILE" \
    -CAkey "$HSM_DIR/ca/ca.key" -set_serial 7 -days 10 -extfile "$TEST_TMP/server-ext.cnf" \
    -out "$TEST_TMP/web.pem"
expect_exit 0 "$P11SMIME" import --module "$SOFTHSM_MODULE" --pin-file "$PIN_FILE" \
    --token pkcs11:token=second --cert "$TEST_TMP/web.pem"
doctor 2 --module "$SOFTHSM_MODULE" --login --pin-file "$PIN_FILE"
expect_finding ok "certificate 'web' (CKA_ID 01"
expect_finding problem "is not for S/MIME signing"
expect_finding problem "expires in"
expect_stdout_contains "result: signing is blocked"

step "a token whose user PIN was never set"
expect_exit 0 pkcs11-tool --module "$SOFTHSM_MODULE" --slot-index 1 --init-token \
    --label no-user-pin --so-pin 12345678
doctor 2 --module "$SOFTHSM_MODULE" --token pkcs11:token=no-user-pin
expect_finding problem "token 'no-user-pin': the user PIN is not set"
export SOFTHSM2_CONF=$HSM_DIR/softhsm2.conf

step "p11-kit's proxy with a registered module that fails to load"
mkdir -p -- "$TEST_TMP/p11-kit-modules"
cp -- "$P11KIT_MODULE_DIR"/*.module "$TEST_TMP/p11-kit-modules/"
printf 'module: %s\n' "$TEST_TMP/missing/libbroken.so" >"$TEST_TMP/p11-kit-modules/broken.module"
mount --bind "$TEST_TMP/p11-kit-modules" "$P11KIT_MODULE_DIR" ||
    fail "cannot put a test module list over $P11KIT_MODULE_DIR"
doctor 0 --login --pin-file "$PIN_FILE" --token pkcs11:token=p11smime-test
expect_finding warning "couldn't load module: $TEST_TMP/missing/libbroken.so"
expect_finding ok "softhsm2 ($SOFTHSM_MODULE) loads"
expect_stdout_contains "result: ready to sign"
umount "$P11KIT_MODULE_DIR"

step "a virtual reader without a card"
start_pcscd
doctor 2 --module "$OPENSC_MODULE"
expect_finding ok "pcscd is running"
expect_finding problem "no card in any of 2 reader(s)"
expect_finding problem "no initialised token"

step "a virtual reader with a card that OpenSC does not recognise"
start_virtual_card
expect_exit 0 "$P11SMIME" readers --module "$OPENSC_MODULE" --wait --timeout 30
doctor 2 --module "$OPENSC_MODULE"
expect_finding ok "card in reader '$VIRTUAL_READER', ATR 3b:"
expect_finding problem "the card in reader '$VIRTUAL_READER'"
expect_finding problem "is not recognised by $OPENSC_MODULE"

step "the unrecognised card is a warning while SoftHSM can sign through p11-kit's proxy"
doctor 0 --login --pin-file "$PIN_FILE" --token pkcs11:token=p11smime-test
expect_finding warning "the card in reader '$VIRTUAL_READER'"
expect_stdout_contains "result: ready to sign"

step "pcscd stopped"
stop_virtual_card
stop_pcscd
doctor 2 --module "$OPENSC_MODULE"
expect_finding problem "pcscd is not running"
expect_stdout_contains "systemctl start pcscd.socket"

echo "PASS: $TEST_NAME"
