#!/usr/bin/env bash
# `p11smime verify` exits 1 with a clear error, and writes no output file, for a tampered
# body, an untrusted CA, a From mismatch, an expired signer and a missing signer certificate.
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command openssl python3
make_test_dir
setup_token

# Sign a sample message from FROM with token key NAME, detached, into OUT.
sign_on_token() {
    local name=$1 from=$2 out=$3
    write_sample_message "$out.input" "$from"
    expect_exit 0 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "${KEY_URI[$name]}" \
        --pin-file "$PIN_FILE" --in "$out.input" --out "$out"
}

# Run verify on MESSAGE with --out and the extra ARGS, and expect exit status 1, an error
# that mentions WORD and no output file.
# expect_verify_failure MESSAGE WORD [ARG...]
expect_verify_failure() {
    local message=$1 word=$2
    shift 2
    local out=$message.verified
    rm -f -- "$out"
    expect_exit 1 "$P11SMIME" verify "$@" --in "$message" --out "$out"
    expect_p11smime_error "$word"
    [[ ! -e $out ]] || fail "verify failed but wrote $out"
}

trusted=(--ca-file "$CA_FILE" --no-system-ca)

step "a good message verifies and is written to --out"
sign_on_token rsa2048 rsa2048@example.org "$TEST_TMP/good.eml"
expect_exit 0 "$P11SMIME" verify "${trusted[@]}" --in "$TEST_TMP/good.eml" \
    --out "$TEST_TMP/good.verified"
[[ -s $TEST_TMP/good.verified ]] || fail "verify succeeded but wrote no --out file"

step "tampered body"
cp -- "$TEST_TMP/good.eml" "$TEST_TMP/tampered.eml"
tamper_first_body_byte "$TEST_TMP/tampered.eml" multipart ||
    fail "cannot change the signed text of $TEST_TMP/tampered.eml"
[[ $(cmp -l "$TEST_TMP/good.eml" "$TEST_TMP/tampered.eml" | wc -l) == 1 ]] ||
    fail "the tampered copy does not differ from the original in exactly one byte"
expect_verify_failure "$TEST_TMP/tampered.eml" "signature" "${trusted[@]}"

step "signer issued by a CA that is not trusted"
expect_verify_failure "$TEST_TMP/good.eml" "certificate" --ca-file "$OTHER_CA_FILE" \
    --no-system-ca

step "From does not match the signer certificate"
sign_on_token rsa2048 someone-else@example.org "$TEST_TMP/other-from.eml"
expect_verify_failure "$TEST_TMP/other-from.eml" "From" "${trusted[@]}"
expect_stderr_contains "someone-else@example.org"

step "--no-sender-check accepts the From mismatch"
expect_exit 0 "$P11SMIME" verify "${trusted[@]}" --no-sender-check \
    --in "$TEST_TMP/other-from.eml"

step "expired signer certificate"
sign_on_token expired expired@example.org "$TEST_TMP/expired.eml"
expect_verify_failure "$TEST_TMP/expired.eml" "certificate has expired" "${trusted[@]}"

step "signature without the signer certificate"
# A CMS without certificates cannot be made on the token with p11smime, so this signer uses
# a software key that the test CA certifies here.
nocerts_dir=$TEST_TMP/nocerts
mkdir -p -- "$nocerts_dir"
expect_exit 0 openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$nocerts_dir/signer.key"
expect_exit 0 openssl req -new -key "$nocerts_dir/signer.key" \
    -subj "/CN=nocerts test signer" -out "$nocerts_dir/signer.csr"
cat >"$nocerts_dir/signer.ext" <<'EOF'
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, nonRepudiation, keyAgreement
extendedKeyUsage = emailProtection
subjectAltName = email:nocerts@example.org
EOF
expect_exit 0 openssl ca -batch -config "$HSM_DIR/ca/openssl.cnf" \
    -extfile "$nocerts_dir/signer.ext" -days 30 \
    -in "$nocerts_dir/signer.csr" -out "$nocerts_dir/issued.pem"
expect_exit 0 openssl x509 -in "$nocerts_dir/issued.pem" -out "$nocerts_dir/signer.pem"
printf '%s\n' "Content-Type: text/plain; charset=us-ascii" "" \
    "Signed without certificates in the CMS." >"$nocerts_dir/entity.txt"
expect_exit 0 openssl cms -sign -nocerts -md sha256 -signer "$nocerts_dir/signer.pem" \
    -inkey "$nocerts_dir/signer.key" -from nocerts@example.org \
    -to recipient@example.net -subject "p11smime nocerts test" \
    -in "$nocerts_dir/entity.txt" -out "$nocerts_dir/signed.eml"
# The control: OpenSSL itself accepts the message once it is given the certificate.
expect_exit 0 openssl cms -verify -CAfile "$CA_FILE" -certfile "$nocerts_dir/signer.pem" \
    -in "$nocerts_dir/signed.eml" -out /dev/null
expect_verify_failure "$nocerts_dir/signed.eml" "certificate" "${trusted[@]}"

step "--signer-cert supplies the missing certificate"
expect_exit 0 "$P11SMIME" verify "${trusted[@]}" --signer-cert "$nocerts_dir/signer.pem" \
    --in "$nocerts_dir/signed.eml" --out "$nocerts_dir/signed.verified"
[[ -s $nocerts_dir/signed.verified ]] || fail "verify succeeded but wrote no --out file"

step "MD5 digest and a 1024-bit RSA signer are rejected"
# Software signers certified by the test CA: one with a strong key that signs with MD5, and
# one with an RSA-1024 key that signs with SHA-256. OpenSSL accepts both as a control.
weak_dir=$TEST_TMP/weak
mkdir -p -- "$weak_dir"
issue_software_signer() {
    local name=$1 key_options=("${@:2}")
    expect_exit 0 openssl genpkey "${key_options[@]}" -out "$weak_dir/$name.key"
    expect_exit 0 openssl req -new -key "$weak_dir/$name.key" \
        -subj "/CN=$name test signer" -out "$weak_dir/$name.csr"
    printf '%s\n' 'basicConstraints = critical, CA:false' \
        'keyUsage = critical, digitalSignature, nonRepudiation' \
        'extendedKeyUsage = emailProtection' "subjectAltName = email:$name@example.org" \
        >"$weak_dir/$name.ext"
    expect_exit 0 openssl ca -batch -config "$HSM_DIR/ca/openssl.cnf" \
        -extfile "$weak_dir/$name.ext" -days 30 \
        -in "$weak_dir/$name.csr" -out "$weak_dir/$name.issued.pem"
    expect_exit 0 openssl x509 -in "$weak_dir/$name.issued.pem" -out "$weak_dir/$name.pem"
}
sign_in_software() {
    local name=$1 digest=$2
    expect_exit 0 openssl cms -sign -md "$digest" -signer "$weak_dir/$name.pem" \
        -inkey "$weak_dir/$name.key" -from "$name@example.org" -to recipient@example.net \
        -subject "p11smime weak algorithm test" -in "$nocerts_dir/entity.txt" \
        -out "$weak_dir/$name.eml"
    expect_exit 0 openssl cms -verify -CAfile "$CA_FILE" -in "$weak_dir/$name.eml" \
        -out /dev/null
}
issue_software_signer md5signer -algorithm RSA -pkeyopt rsa_keygen_bits:2048
sign_in_software md5signer md5
expect_verify_failure "$weak_dir/md5signer.eml" "broken digest" "${trusted[@]}"
expect_exit 1 "$P11SMIME" verify "${trusted[@]}" --allow-sha1 --in "$weak_dir/md5signer.eml"
issue_software_signer rsa1024 -algorithm RSA -pkeyopt rsa_keygen_bits:1024
sign_in_software rsa1024 sha256
expect_verify_failure "$weak_dir/rsa1024.eml" "1024 bits" "${trusted[@]}"

step "missing input file is an input error"
expect_exit 2 "$P11SMIME" verify "${trusted[@]}" --in "$TEST_TMP/no-such-message.eml"
expect_p11smime_error "$TEST_TMP/no-such-message.eml"

echo "PASS: $TEST_NAME"
