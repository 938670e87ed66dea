#!/usr/bin/env bash
# The whole life of a key on SoftHSM: keygen, csr, a CA issues the certificate with
# `openssl x509 -req`, import, sign, and verify with p11smime and `openssl cms`. Also the
# refusals: taken labels and IDs, bad addresses and subjects, a certificate for no key, and
# a second certificate for a key without --replace.
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command openssl pkcs11-tool
make_test_dir
setup_token

readonly TOKEN_URI='pkcs11:token=p11smime-test'
readonly CA_KEY=$HSM_DIR/ca/ca.key

p11smime_token() {
    local expected=$1 command=$2
    shift 2
    expect_exit "$expected" "$P11SMIME" "$command" --module "$SOFTHSM_MODULE" \
        --pin-file "$PIN_FILE" "$@"
}

# Print pkcs11-tool's description of the token objects of CLASS ("Private Key", "Public
# Key" or "Certificate") whose CKA_ID is ID (lowercase hex), as the token reports it after a login.
# pkcs11-tool 0.23 ignores --id when listing, so awk picks out the block.
object_listing() {
    local class=$1 id=$2
    pkcs11-tool --module "$SOFTHSM_MODULE" --token-label p11smime-test --login \
        --pin 123456 --list-objects 2>/dev/null |
        awk -v class="$class" -v id="$id" '
            /Object;/ { if (block != "" && found) printf "%s", block
                        block = ""; found = 0; keep = index($0, class " Object") == 1 }
            keep { block = block $0 "\n" }
            keep && $1 == "ID:" && $2 == id { found = 1 }
            END { if (block != "" && found) printf "%s", block }'
}

# Issue a certificate for the request REQ with the test CA, copying the requested
# extensions, as a CA that honours a request would: issue_certificate REQ OUT DAYS
issue_certificate() {
    printf '%s\n' 'basicConstraints = critical, CA:false' \
        'subjectKeyIdentifier = hash' 'authorityKeyIdentifier = keyid' >"$TEST_TMP/ca-ext.cnf"
    expect_exit 0 openssl x509 -req -in "$1" -CA "$CA_FILE" -CAkey "$CA_KEY" \
        -set_serial "0x$(openssl rand -hex 8)" -days "$3" -copy_extensions copy \
        -extfile "$TEST_TMP/ca-ext.cnf" -out "$2"
}

# Run the whole cycle for one key type: lifecycle_cycle NAME TYPE
lifecycle_cycle() {
    local name=$1 type=$2 dir=$TEST_TMP/$1
    mkdir -p -- "$dir"

    step "$name: keygen $type"
    p11smime_token 0 keygen --token "$TOKEN_URI" --type "$type" --label "$name"
    local key_uri
    key_uri=$(cat -- "$LAST_STDOUT")
    [[ $key_uri == pkcs11:*"object=$name"*";type=private" ]] ||
        fail "keygen printed '$key_uri', expected the private key's pkcs11: URI"
    [[ $(wc -l <"$LAST_STDOUT") == 1 ]] || fail "keygen printed more than the key URI"
    local id=${key_uri##*id=%}
    id=${id%%;*}

    step "$name: the token keeps the private key sensitive and not extractable"
    object_listing "Private Key" "$id" >"$dir/private-key.txt"
    grep -qF "label:      $name" "$dir/private-key.txt" ||
        fail "pkcs11-tool shows no private key labelled $name with ID $id"
    grep -qE 'Access: +sensitive, always sensitive, never extractable' "$dir/private-key.txt" ||
        fail "the private key of $name is not sensitive and never extractable: " \
            "$(cat "$dir/private-key.txt")"

    step "$name: csr"
    p11smime_token 0 csr --key "$key_uri" --email "$name@example.org" \
        --subject "/CN=$name Example/O=Lifecycle Test" --out "$dir/request.pem"
    [[ ! -s $LAST_STDOUT ]] || fail "csr with --out also wrote to standard output"
    expect_exit 0 openssl req -in "$dir/request.pem" -verify -noout -text
    cp -- "$LAST_STDOUT" "$dir/request.txt"
    grep -qF "email:$name@example.org" "$dir/request.txt" ||
        fail "the request has no rfc822Name $name@example.org"
    grep -qF 'E-mail Protection' "$dir/request.txt" || fail "the request asks for no EKU"
    grep -qE 'Key Usage: critical' "$dir/request.txt" || fail "the request has no keyUsage"
    grep -qF 'Digital Signature, Non Repudiation' "$dir/request.txt" ||
        fail "the request does not ask for digitalSignature and nonRepudiation"
    grep -qF "CN = $name Example" "$dir/request.txt" || fail "the request has another subject"

    step "$name: the request carries the token's public key"
    # Read through libp11's OpenSSL engine: pkcs11-tool 0.23 cannot export P-384 public keys.
    PKCS11_MODULE_PATH=$SOFTHSM_MODULE openssl pkey -engine pkcs11 -inform ENGINE -pubin \
        -in "pkcs11:token=p11smime-test;id=%$id;type=public" -pubout \
        >"$dir/token-public.pem" 2>"$dir/engine.log" ||
        fail "cannot read the public key from the token: $(cat "$dir/engine.log")"
    openssl req -in "$dir/request.pem" -pubkey -noout >"$dir/request-public.pem"
    cmp -s "$dir/token-public.pem" "$dir/request-public.pem" ||
        fail "the request's public key is not the token key's"

    step "$name: a CA issues the certificate and import stores it with the key's CKA_ID"
    issue_certificate "$dir/request.pem" "$dir/cert.pem" 30
    p11smime_token 0 import --token "$TOKEN_URI" --cert "$dir/cert.pem"
    local cert_uri
    cert_uri=$(cat -- "$LAST_STDOUT")
    [[ $cert_uri == *"id=%$id;"*"type=cert" ]] ||
        fail "import printed '$cert_uri', expected a certificate URI with id=%$id"

    step "$name: sign and verify with p11smime and openssl cms"
    write_sample_message "$dir/message.eml" "$name@example.org"
    p11smime_token 0 sign --key "$key_uri" --in "$dir/message.eml" --out "$dir/signed.eml"
    expect_exit 0 "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca \
        --in "$dir/signed.eml"
    expect_stdout_contains "$name@example.org"
    expect_exit 0 openssl cms -verify -CAfile "$CA_FILE" -purpose smimesign \
        -in "$dir/signed.eml" -out "$dir/content.txt"
}

lifecycle_cycle alice-p256 ec:p256
lifecycle_cycle bob-rsa2048 rsa:2048
lifecycle_cycle carol-p384 ec:p384
lifecycle_cycle dave-rsa3072 rsa:3072

step "keygen takes the lowest free CKA_ID"
# The set-up uses 01 to 04 and 10; the four cycles above took 05 to 08.
p11smime_token 0 keygen --token "$TOKEN_URI" --type ec:p256 --label erin
[[ $(cat -- "$LAST_STDOUT") == *"id=%09;"* ]] ||
    fail "keygen without --id gave $(cat -- "$LAST_STDOUT"), expected id=%09"

step "keygen with --id and rsa:4096"
p11smime_token 0 keygen --token "$TOKEN_URI" --type rsa:4096 --label frank --id 7f
[[ $(cat -- "$LAST_STDOUT") == *"id=%7F;"* || $(cat -- "$LAST_STDOUT") == *"id=%7f;"* ]] ||
    fail "keygen --id 7f gave $(cat -- "$LAST_STDOUT")"
object_listing "Public Key" 7f | grep -qF 'RSA 4096 bits' || fail "no RSA 4096 key pair with ID 7f"
object_listing "Private Key" 7f |
    grep -qE 'Access: +sensitive, always sensitive, never extractable' ||
    fail "the rsa:4096 private key is not sensitive and never extractable"

step "keygen and csr through p11-kit's proxy module, the default"
expect_exit 0 "$P11SMIME" keygen --pin-file "$PIN_FILE" --token "$TOKEN_URI" --type ec:p256 \
    --label proxy-key
proxy_key_uri=$(cat -- "$LAST_STDOUT")
object_listing "Private Key" 0a | grep -qF 'label:      proxy-key' ||
    fail "keygen through the proxy made no private key proxy-key with CKA_ID 0a"
expect_exit 0 "$P11SMIME" csr --pin-file "$PIN_FILE" --key "$proxy_key_uri" \
    --email proxy@example.org --out "$TEST_TMP/proxy.csr"
expect_exit 0 openssl req -in "$TEST_TMP/proxy.csr" -verify -noout

step "keygen rejects a taken label, a taken CKA_ID and unknown types"
p11smime_token 2 keygen --token "$TOKEN_URI" --type ec:p256 --label erin
expect_p11smime_error "already has a private key labelled 'erin'"
p11smime_token 2 keygen --token "$TOKEN_URI" --type ec:p256 --label other --id 01
expect_p11smime_error "CKA_ID 01"
p11smime_token 2 keygen --token "$TOKEN_URI" --type ec:p521 --label other
expect_p11smime_error "p11smime: error:"
p11smime_token 2 keygen --token "$TOKEN_URI" --type ec:p256 --label other --id 0x1
expect_p11smime_error "invalid CKA_ID"
p11smime_token 2 keygen --token "pkcs11:token=p11smime-test;object=x" --type ec:p256 \
    --label other
expect_p11smime_error "names an object"
p11smime_token 2 keygen --token "pkcs11:token=no-such-token" --type ec:p256 --label other
expect_p11smime_error "no initialised token"

step "keygen with a wrong PIN fails and makes no key"
printf '000000\n' >"$TEST_TMP/wrong-pin.txt"
expect_exit 2 "$P11SMIME" keygen --module "$SOFTHSM_MODULE" --pin-file "$TEST_TMP/wrong-pin.txt" \
    --token "$TOKEN_URI" --type ec:p256 --label wrong-pin
expect_p11smime_error "CKR_PIN_INCORRECT"
if pkcs11-tool --module "$SOFTHSM_MODULE" --token-label p11smime-test --login --pin 123456 \
    --list-objects 2>/dev/null | grep -qF 'label:      wrong-pin'; then
    fail "keygen with a wrong PIN left a key labelled wrong-pin"
fi

step "csr rejects a bad address and a bad subject, and writes no file"
erin_uri='pkcs11:token=p11smime-test;object=erin;type=private'
p11smime_token 2 csr --key "$erin_uri" --email 'not an address' --out "$TEST_TMP/bad.csr"
expect_p11smime_error "invalid email address"
p11smime_token 2 csr --key "$erin_uri" --email erin@example.org --subject 'CN=erin' \
    --out "$TEST_TMP/bad.csr"
expect_p11smime_error "invalid subject"
p11smime_token 2 csr --key "$erin_uri" --email erin@example.org --subject '/XX=erin' \
    --out "$TEST_TMP/bad.csr"
expect_p11smime_error "XX"
[[ ! -e $TEST_TMP/bad.csr ]] || fail "a failed csr left its --out file behind"

step "csr defaults: subject CN=EMAIL, both uses, PEM on standard output"
p11smime_token 0 csr --key "$erin_uri" --email erin@example.org
grep -q -- '-----BEGIN CERTIFICATE REQUEST-----' "$LAST_STDOUT" ||
    fail "csr without --out wrote no PEM request to standard output"
openssl req -in "$LAST_STDOUT" -noout -text >"$TEST_TMP/erin.txt"
grep -qF 'CN = erin@example.org' "$TEST_TMP/erin.txt" || fail "default subject is not CN=EMAIL"
grep -qF 'Digital Signature, Non Repudiation, Key Agreement' "$TEST_TMP/erin.txt" ||
    fail "an EC request does not ask for signing and keyAgreement"
p11smime_token 0 csr --key "$erin_uri" --email erin@example.org --use sign
openssl req -in "$LAST_STDOUT" -noout -text >"$TEST_TMP/erin-sign.txt"
if grep -qF 'Key Agreement' "$TEST_TMP/erin-sign.txt"; then
    fail "csr --use sign asked for keyAgreement"
fi

step "import refuses a certificate that matches no key, and --force stores it"
p11smime_token 2 import --token "$TOKEN_URI" --cert "$OTHER_CA_FILE"
expect_p11smime_error "matches no key"
expect_stderr_contains "--force"
p11smime_token 0 import --token "$TOKEN_URI" --cert "$OTHER_CA_FILE" --force
expect_stderr_contains "matches no key"
# The CA's subjectKeyIdentifier is the SHA-1 hash of its public key, as is the forced CKA_ID.
other_ski=$(openssl x509 -in "$OTHER_CA_FILE" -noout -ext subjectKeyIdentifier | tail -n 1 |
    tr -d ' :' | tr 'A-F' 'a-f')
[[ ${#other_ski} == 40 ]] || fail "cannot read the subjectKeyIdentifier of $OTHER_CA_FILE"
expect_stderr_contains "CKA_ID $other_ski"
[[ $(cat -- "$LAST_STDOUT") == *"type=cert" ]] || fail "import --force printed no certificate URI"

step "import of a certificate already on the token stores nothing"
p11smime_token 0 import --token "$TOKEN_URI" --cert "$TEST_TMP/alice-p256/cert.pem"
expect_stderr_contains "already has this certificate"

step "a renewed certificate needs --replace, which leaves one certificate for the key"
issue_certificate "$TEST_TMP/alice-p256/request.pem" "$TEST_TMP/alice-renewed.pem" 60
p11smime_token 2 import --token "$TOKEN_URI" --cert "$TEST_TMP/alice-renewed.pem"
expect_p11smime_error "already has a certificate for CKA_ID 05"
expect_stderr_contains "--replace"
p11smime_token 0 import --token "$TOKEN_URI" --cert "$TEST_TMP/alice-renewed.pem" --replace \
    --chain "$CHAIN_FILE"
expect_stderr_contains "removed 1 earlier certificate"
expect_stderr_contains "stored 1 issuer certificate"
object_listing Certificate 05 >"$TEST_TMP/alice-certs.txt"
[[ $(grep -c 'Certificate Object' "$TEST_TMP/alice-certs.txt") == 1 ]] ||
    fail "the token has $(grep -c 'Certificate Object' "$TEST_TMP/alice-certs.txt")" \
        "certificates with CKA_ID 05 after --replace, expected 1"
p11smime_token 0 sign --key 'pkcs11:token=p11smime-test;object=alice-p256;type=private' \
    --in "$TEST_TMP/alice-p256/message.eml" --out "$TEST_TMP/alice-renewed-signed.eml"
expect_exit 0 openssl cms -verify -CAfile "$CA_FILE" -in "$TEST_TMP/alice-renewed-signed.eml" \
    -signer "$TEST_TMP/alice-signer.pem" -out /dev/null
cmp -s <(openssl x509 -in "$TEST_TMP/alice-signer.pem" -outform DER) \
    <(openssl x509 -in "$TEST_TMP/alice-renewed.pem" -outform DER) ||
    fail "sign used another certificate than the renewed one"

step "import --chain stores an issuer only once"
issue_certificate "$TEST_TMP/bob-rsa2048/request.pem" "$TEST_TMP/bob-renewed.pem" 60
p11smime_token 0 import --token "$TOKEN_URI" --cert "$TEST_TMP/bob-renewed.pem" --replace \
    --chain "$CHAIN_FILE"
if grep -qF 'issuer certificate' "$LAST_STDERR"; then
    fail "import --chain stored the CA a second time"
fi
ca_subject=$(openssl x509 -in "$CA_FILE" -noout -subject -nameopt RFC2253 | sed 's/^subject=//')
pkcs11-tool --module "$SOFTHSM_MODULE" --token-label p11smime-test --list-objects \
    --type cert 2>/dev/null >"$TEST_TMP/all-certs.txt"
ca_count=$(grep -c "label: *p11smime test CA" "$TEST_TMP/all-certs.txt" || true)
[[ $ca_count == 1 ]] || fail "the token has $ca_count copies of $ca_subject, expected 1"

echo "PASS: $TEST_NAME"
