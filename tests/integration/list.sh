#!/usr/bin/env bash
# `p11smime list` shows the test token, its keys and certificates with usable pkcs11: URIs.
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command python3
make_test_dir
setup_token

readonly NAMES=(rsa2048 rsa3072 p256 p384 expired)

# Print the pkcs11: URI in FILE whose attributes include object=NAME and type=TYPE.
# Attributes may come in any order and with others (token=, id=, ...) between them.
find_uri() {
    local file=$1 name=$2 type=$3 uri
    while read -r uri; do
        if [[ ";${uri#pkcs11:};" == *";object=$name;"* &&
            ";${uri#pkcs11:};" == *";type=$type;"* ]]; then
            printf '%s\n' "$uri"
            return 0
        fi
    done < <(grep -oE 'pkcs11:[^[:space:]"<>]+' -- "$file")
    return 1
}

# Check that FILE names the token and shows a private-key and a certificate URI per key.
check_listing() {
    local file=$1 name
    grep -qF p11smime-test -- "$file" || fail "$file does not name the token p11smime-test"
    for name in "${NAMES[@]}"; do
        find_uri "$file" "$name" private >/dev/null ||
            fail "no pkcs11: URI with object=$name;type=private in $file"
        find_uri "$file" "$name" cert >/dev/null ||
            fail "no pkcs11: URI with object=$name;type=cert in $file"
    done
}

step "list without a login hides private keys and says how to show them"
expect_exit 0 "$P11SMIME" list --module "$SOFTHSM_MODULE"
grep -qF p11smime-test -- "$LAST_STDOUT" || fail "list does not name the token p11smime-test"
find_uri "$LAST_STDOUT" rsa2048 cert >/dev/null || fail "list shows no rsa2048 certificate URI"
if find_uri "$LAST_STDOUT" rsa2048 private >/dev/null; then
    fail "list showed a private key of SoftHSM without a login"
fi
grep -qF -- '--login' "$LAST_STDOUT" || fail "list does not say that --login shows private keys"

step "list as text after a login"
expect_exit 0 "$P11SMIME" list --module "$SOFTHSM_MODULE" --login --pin-file "$PIN_FILE"
cp -- "$LAST_STDOUT" "$TEST_TMP/list.txt"
check_listing "$TEST_TMP/list.txt"

step "list as JSON after a login"
expect_exit 0 "$P11SMIME" list --module "$SOFTHSM_MODULE" --login --pin-file "$PIN_FILE" --json
cp -- "$LAST_STDOUT" "$TEST_TMP/list.json"
expect_exit 0 python3 -m json.tool "$TEST_TMP/list.json"
check_listing "$TEST_TMP/list.json"

step "sign with the key URI that list printed"
key_uri=$(find_uri "$TEST_TMP/list.txt" rsa2048 private)
write_sample_message "$TEST_TMP/message.eml" rsa2048@example.org
expect_exit 0 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "$key_uri" \
    --pin-file "$PIN_FILE" --in "$TEST_TMP/message.eml" --out "$TEST_TMP/signed.eml"
expect_exit 0 "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca \
    --in "$TEST_TMP/signed.eml"

step "list with a module that does not exist"
expect_exit 2 "$P11SMIME" list --module "$TEST_TMP/missing-module.so"
expect_p11smime_error "$TEST_TMP/missing-module.so"

echo "PASS: $TEST_NAME"
