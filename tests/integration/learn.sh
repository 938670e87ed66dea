#!/usr/bin/env bash
# `verify --learn` stores signer certificates with their SMIMECapabilities, `certs` lists,
# shows and removes them, and `encrypt --cert-dir` finds recipients there and takes the
# cipher their capabilities prefer. Messages are signed and decrypted with `openssl cms`.
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command openssl python3 faketime
make_test_dir

CA=$TEST_TMP/ca
LEARNED=$TEST_TMP/learned
MAIL=$TEST_TMP/mail
mkdir -p -- "$CA/newcerts" "$MAIL"
cat >"$CA/ca.cnf" <<EOF
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = $CA
database = $CA/index.txt
new_certs_dir = $CA/newcerts
serial = $CA/serial
default_md = sha256
policy = any_name
unique_subject = no
[ any_name ]
commonName = supplied
[ signer ]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, nonRepudiation, keyAgreement
extendedKeyUsage = emailProtection
subjectAltName = email:\$ENV::SIGNER_EMAIL
EOF
touch "$CA/index.txt"
echo 2000 >"$CA/serial"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$CA/ca.key" 2>/dev/null
# The CA starts five days back, so that a signer it issued three days ago is valid then.
faketime -f -5d openssl req -x509 -new -key "$CA/ca.key" -out "$CA/ca.pem" -days 30 \
    -subj "/CN=Learn Test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null

# issue NAME EMAIL [FAKETIME [DAYS]]: an EC signer certificate, issued now or at a faketime
# offset, valid for DAYS days (default 10).
issue() {
    local name=$1 email=$2 offset=${3:-} days=${4:-10} runner=()
    [[ -n $offset ]] && runner=(faketime -f "$offset")
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$CA/$name.key" \
        2>/dev/null
    openssl req -new -key "$CA/$name.key" -subj "/CN=$name" -out "$CA/$name.csr"
    SIGNER_EMAIL=$email "${runner[@]}" openssl ca -batch -config "$CA/ca.cnf" \
        -cert "$CA/ca.pem" -keyfile "$CA/ca.key" -extensions signer -days "$days" \
        -in "$CA/$name.csr" -out "$CA/$name.pem" 2>/dev/null
}

# sign NAME EMAIL [FAKETIME]: a message from EMAIL signed by NAME's key.
sign() {
    local name=$1 email=$2 offset=${3:-} runner=()
    [[ -n $offset ]] && runner=(faketime -f "$offset")
    printf 'Content-Type: text/plain\n\nLearn test from %s.\n' "$name" >"$TEST_TMP/body.txt"
    {
        echo "Date: $("${runner[@]}" date -R)"
        "${runner[@]}" openssl cms -sign -in "$TEST_TMP/body.txt" -signer "$CA/$name.pem" \
            -inkey "$CA/$name.key" -from "$email" -to "carol@example.org" -subject learn
    } >"$MAIL/$name.eml"
}

step "making signers and messages"
issue alice alice@example.org
sign alice alice@example.org
# notBefore has a resolution of one second, so the renewal is newer.
sleep 1
issue alice-renewed alice@example.org
sign alice-renewed Alice@Example.org
issue expired bob@example.org -3d 1
sign expired bob@example.org -3d
issue dave dave@example.org
sign dave mallory@example.org
trust=(--no-system-ca --ca-file "$CA/ca.pem")
fingerprint() { openssl x509 -in "$1" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d : |
    tr 'A-F' 'a-f'; }

step "learn: a verified signer is stored with its SMIMECapabilities"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --learn "$LEARNED" --in "$MAIL/alice.eml"
expect_stderr_contains "p11smime: stored the certificate of alice@example.org in $LEARNED/alice@example.org.pem"
[[ -f $LEARNED/alice@example.org.pem && -f $LEARNED/alice@example.org.json ]] ||
    fail "learn did not write alice@example.org.pem and .json"
[[ $(fingerprint "$LEARNED/alice@example.org.pem") == $(fingerprint "$CA/alice.pem") ]] ||
    fail "the stored certificate is not alice's"
python3 - "$LEARNED/alice@example.org.json" "$(fingerprint "$CA/alice.pem")" <<'PY' ||
import json
import sys

info = json.load(open(sys.argv[1]))
# OpenSSL's signer lists AES-256-CBC first (CMS_add_standard_smimecap).
assert info["capabilities"][0] == "2.16.840.1.101.3.4.1.42", info["capabilities"]
assert info["email"] == "alice@example.org", info
assert info["fingerprint"] == sys.argv[2], info
PY
    fail "the side file does not hold the signer's capabilities"

step "learn: the same certificate again updates, an older one is kept, a newer one replaces"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --learn "$LEARNED" --in "$MAIL/alice.eml"
expect_stderr_contains "updated the SMIMECapabilities of alice@example.org"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --learn "$LEARNED" --in "$MAIL/alice-renewed.eml"
expect_stderr_contains "replaced the certificate of Alice@Example.org"
[[ $(fingerprint "$LEARNED/alice@example.org.pem") == $(fingerprint "$CA/alice-renewed.pem") ]] ||
    fail "the renewed certificate did not replace the older one"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --learn "$LEARNED" --in "$MAIL/alice.eml"
expect_stderr_contains "did not store the certificate of alice@example.org: the stored certificate is as new or newer"
[[ $(fingerprint "$LEARNED/alice@example.org.pem") == $(fingerprint "$CA/alice-renewed.pem") ]] ||
    fail "an older certificate replaced the newer one"

step "learn: nothing is stored for a failed check, an expired certificate or another From"
openssl req -x509 -new -key "$CA/ca.key" -out "$CA/other-ca.pem" -days 1 \
    -subj "/CN=Other Test CA" 2>/dev/null
expect_exit 1 "$P11SMIME" verify --no-system-ca --ca-file "$CA/other-ca.pem" \
    --learn "$LEARNED" --in "$MAIL/dave.eml"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --no-sender-check --learn "$LEARNED" \
    --in "$MAIL/dave.eml"
expect_stderr_contains "the From address is not one of its email addresses"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --at-time signing --learn "$LEARNED" \
    --in "$MAIL/expired.eml"
expect_stderr_contains "did not store the certificate of bob@example.org: the certificate is not valid now"
stored=$(cd "$LEARNED" && ls)
[[ $stored == $'alice@example.org.json\nalice@example.org.pem' ]] ||
    fail "the folder holds more than alice's files: $stored"

step "certs list and show"
cp -- "$CA/dave.pem" "$LEARNED/dave.crt"
expect_exit 0 "$P11SMIME" certs list --cert-dir "$LEARNED"
expect_stdout_contains "alice@example.org  CN=alice-renewed"
expect_stdout_contains "cipher aes-256-cbc  $LEARNED/alice@example.org.pem"
expect_stdout_contains "dave@example.org  CN=dave"
expect_exit 0 "$P11SMIME" certs show alice@example.org --cert-dir "$LEARNED"
expect_stdout_contains "capabilities: aes-256-cbc"
expect_exit 0 "$P11SMIME" certs show dave@example.org --cert-dir "$LEARNED" --json
python3 - "$LAST_STDOUT" <<'PY' || fail "certs show --json is not as expected"
import json
import sys

certificates = json.load(open(sys.argv[1]))["certificates"]
assert len(certificates) == 1, certificates
assert certificates[0]["emails"] == ["dave@example.org"], certificates
assert "learned" not in certificates[0], certificates
PY
expect_exit 2 "$P11SMIME" certs show nobody@example.org --cert-dir "$LEARNED"
expect_p11smime_error "no certificate for 'nobody@example.org'"
expect_exit 2 "$P11SMIME" certs show --cert-dir "$LEARNED"
expect_p11smime_error "needs an email address"

step "encrypt --cert-dir takes the recipient's preferred cipher"
printf 'From: carol@example.org\nTo: alice@example.org\nSubject: secret\nContent-Type: text/plain\n\nFor Alice.\n' \
    >"$TEST_TMP/plain.eml"
content_cipher() {
    openssl cms -cmsout -print -in "$1" 2>/dev/null |
        sed -n '/contentEncryptionAlgorithm:/{n;p;q}' | sed 's/.*algorithm: //'
}
expect_exit 0 "$P11SMIME" encrypt --cert-dir "$LEARNED" --in "$TEST_TMP/plain.eml" \
    --out "$TEST_TMP/cbc.eml"
[[ $(content_cipher "$TEST_TMP/cbc.eml") == "aes-256-cbc (2.16.840.1.101.3.4.1.42)" ]] ||
    fail "expected AES-256-CBC, got $(content_cipher "$TEST_TMP/cbc.eml")"
openssl cms -decrypt -in "$TEST_TMP/cbc.eml" -recip "$CA/alice-renewed.pem" \
    -inkey "$CA/alice-renewed.key" | grep -q "For Alice." || fail "alice cannot decrypt"
# A signer that prefers AES-128-GCM, as the side file would record it.
python3 - "$LEARNED/alice@example.org.json" <<'PY'
import json
import sys

info = json.load(open(sys.argv[1]))
info["capabilities"] = ["1.2.840.113549.3.7", "2.16.840.1.101.3.4.1.6",
                        "2.16.840.1.101.3.4.1.42"]
json.dump(info, open(sys.argv[1], "w"))
PY
expect_exit 0 "$P11SMIME" encrypt --cert-dir "$LEARNED" --in "$TEST_TMP/plain.eml" \
    --out "$TEST_TMP/gcm.eml"
grep -q 'smime-type=authEnveloped-data' "$TEST_TMP/gcm.eml" ||
    fail "AES-128-GCM should give authEnveloped-data"
[[ $(content_cipher "$TEST_TMP/gcm.eml") == "aes-128-gcm (2.16.840.1.101.3.4.1.6)" ]] ||
    fail "expected AES-128-GCM, got $(content_cipher "$TEST_TMP/gcm.eml")"
openssl cms -decrypt -in "$TEST_TMP/gcm.eml" -recip "$CA/alice-renewed.pem" \
    -inkey "$CA/alice-renewed.key" | grep -q "For Alice." || fail "alice cannot decrypt GCM"
expect_exit 0 "$P11SMIME" encrypt --cert-dir "$LEARNED" --cipher aes-256-cbc \
    --in "$TEST_TMP/plain.eml" --out "$TEST_TMP/explicit.eml"
[[ $(content_cipher "$TEST_TMP/explicit.eml") == "aes-256-cbc (2.16.840.1.101.3.4.1.42)" ]] ||
    fail "--cipher did not win over the learned capabilities"

step "certs remove"
expect_exit 0 "$P11SMIME" certs remove ALICE@example.org --cert-dir "$LEARNED"
expect_stderr_contains "p11smime: removed $LEARNED/alice@example.org.pem"
[[ ! -e $LEARNED/alice@example.org.pem && ! -e $LEARNED/alice@example.org.json ]] ||
    fail "certs remove left alice's files"
expect_exit 2 "$P11SMIME" certs remove alice@example.org --cert-dir "$LEARNED"
expect_exit 2 "$P11SMIME" encrypt --cert-dir "$LEARNED" --in "$TEST_TMP/plain.eml" \
    --out "$TEST_TMP/none.eml"
expect_p11smime_error "recipient 'alice@example.org' has no usable certificate"

echo "PASS: $TEST_NAME"
