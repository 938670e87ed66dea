#!/usr/bin/env bash
# A key with CKA_ALWAYS_AUTHENTICATE (as in PIV slot 9c) signs with the PIN given once: the
# context-specific login reuses it instead of asking the person again.
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command pkcs11-tool openssl
make_test_dir
setup_token

step "generate a key that needs a login before each use"
pin=$(head -n 1 -- "$PIN_FILE")
pkcs11-tool --module "$SOFTHSM_MODULE" --token-label p11smime-test --login --pin "$pin" \
    --keypairgen --key-type rsa:2048 --id 20 --label always --always-auth \
    >"$TEST_TMP/keygen.log" 2>&1 ||
    fail "pkcs11-tool could not make the key: $(<"$TEST_TMP/keygen.log")"
pkcs11-tool --module "$SOFTHSM_MODULE" --token-label p11smime-test --read-object \
    --type pubkey --id 20 -o "$TEST_TMP/always.pub.der" >/dev/null 2>&1 ||
    fail "cannot read the public key"

step "issue its certificate from the test CA"
openssl pkey -pubin -inform DER -in "$TEST_TMP/always.pub.der" -out "$TEST_TMP/always.pub.pem"
# The request only carries the subject; -force_pubkey puts the token key in the certificate.
openssl req -new -newkey rsa:2048 -nodes -keyout /dev/null -subj /CN=always \
    -out "$TEST_TMP/always.csr" 2>/dev/null
printf '%s\n' 'subjectAltName=email:always@example.org' \
    'keyUsage=critical,digitalSignature' 'extendedKeyUsage=emailProtection' \
    >"$TEST_TMP/always.ext"
openssl x509 -req -in "$TEST_TMP/always.csr" -force_pubkey "$TEST_TMP/always.pub.pem" \
    -CA "$CA_FILE" -CAkey "$HSM_DIR/ca/ca.key" -days 30 -extfile "$TEST_TMP/always.ext" \
    -out "$TEST_TMP/always.pem" 2>/dev/null || fail "the test CA could not issue the certificate"

step "sign through pkcs11-spy with no terminal to ask"
write_sample_message "$TEST_TMP/message.eml" always@example.org
PKCS11SPY=$SOFTHSM_MODULE PKCS11SPY_OUTPUT=$TEST_TMP/spy.log expect_exit 0 \
    setsid "$P11SMIME" sign --module "$PKCS11_SPY_MODULE" --pin-file "$PIN_FILE" \
    --key 'pkcs11:token=p11smime-test;id=%20;type=private' --cert "$TEST_TMP/always.pem" \
    --in "$TEST_TMP/message.eml" --out "$TEST_TMP/signed.eml"

user_logins=$(grep -A3 'C_Login' "$TEST_TMP/spy.log" | grep -c 'userType = CKU_USER$' || true)
context_logins=$(grep -A3 'C_Login' "$TEST_TMP/spy.log" | grep -c 'CKU_CONTEXT_SPECIFIC' || true)
[[ $user_logins == 1 ]] || fail "expected 1 user login, saw $user_logins"
[[ $context_logins -ge 1 ]] || fail "no context-specific login before the signature"

step "the signature verifies"
expect_exit 0 "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca \
    --in "$TEST_TMP/signed.eml"
expect_exit 0 openssl cms -verify -CAfile "$CA_FILE" -in "$TEST_TMP/signed.eml" -out /dev/null

echo "PASS: $TEST_NAME"
