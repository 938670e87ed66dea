#!/usr/bin/env bash
# Messages signed by `p11smime sign` on a SoftHSM token verify with p11smime, OpenSSL, gpgsm
# and NSS cmsutil (the engine of Thunderbird), for every key type, detached and opaque, and
# with each digest and RSA-PSS.
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command openssl gpgsm gpgconf python3 certutil cmsutil
make_test_dir
setup_token
setup_gpgsm_home "$CA_FILE"

# Print the header parameter PARAM of the top-level Content-Type of MESSAGE, or nothing.
content_type_param() {
    python3 - "$1" "$2" <<'PY'
import email
import email.policy
import sys

message = email.message_from_bytes(open(sys.argv[1], "rb").read(),
                                   policy=email.policy.compat32)
value = message.get_content_type() if sys.argv[2] == "type" else message.get_param(sys.argv[2])
print(value or "")
PY
}

# Print "digest NAME" and "signature NAME" for the signerInfo of a DER CMS file, with
# OpenSSL's short names (sha384, ecdsa-with-SHA384, rsassaPss, ...).
print_signer_algorithms() {
    openssl cms -cmsout -print -inform DER -in "$1" | awk '
        /signerInfos:/ { in_signer = 1 }
        in_signer && /digestAlgorithm:/ { field = "digest" }
        in_signer && /signatureAlgorithm:/ { field = "signature" }
        field != "" && /^ *algorithm:/ { print field, $2; field = "" }'
}

# Check that the text/plain body of ENTITY, after transfer decoding, equals that of
# ORIGINAL apart from line ends. A signer that re-encodes the body (quoted-printable, say)
# passes, one that strips trailing spaces or mangles UTF-8 does not.
check_body_preserved() {
    python3 - "$1" "$2" <<'PY' || fail "the verified content differs from the input body"
import email
import email.policy
import sys

def text_body(path):
    message = email.message_from_bytes(open(path, "rb").read(), policy=email.policy.compat32)
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            return part.get_payload(decode=True).replace(b"\r\n", b"\n")
    sys.exit(f"{path}: no text/plain part")

verified, original = text_body(sys.argv[1]), text_body(sys.argv[2])
if verified != original:
    print(f"expected: {original!r}", file=sys.stderr)
    print(f"got:      {verified!r}", file=sys.stderr)
    sys.exit(1)
PY
}

# The outer headers must survive signing, or recipients (and the sender check) lose them.
check_outer_headers() {
    local signed=$1 name=$2
    grep -q "^From: .*<$name@example.org>" -- "$signed" || fail "$signed lost its From header"
    grep -q '^To: ' -- "$signed" || fail "$signed lost its To header"
    grep -q '^Subject: p11smime integration test' -- "$signed" ||
        fail "$signed lost its Subject header"
}

# Sign a sample message with key NAME and check the result with all three verifiers.
# run_case NAME detached|opaque DIGEST|default pss|pkcs1
run_case() {
    local name=$1 mode=$2 digest=$3 padding=$4
    local case_dir=$TEST_TMP/$name-$mode-$digest-$padding
    step "$name, $mode, digest $digest, $padding"
    mkdir -p -- "$case_dir"
    write_sample_message "$case_dir/message.eml" "$name@example.org"

    local args=(sign --module "$SOFTHSM_MODULE" --key "${KEY_URI[$name]}"
        --pin-file "$PIN_FILE" --in "$case_dir/message.eml" --out "$case_dir/signed.eml")
    [[ $mode == opaque ]] && args+=(--opaque)
    [[ $digest != default ]] && args+=(--digest "$digest")
    [[ $padding == pss ]] && args+=(--rsa-pss)
    expect_exit 0 "$P11SMIME" "${args[@]}"
    check_outer_headers "$case_dir/signed.eml" "$name"

    # Without --digest the signer must pick SHA-256, or SHA-384 for P-384 because gpgsm
    # 2.2.40 rejects a P-384 signature over a 256-bit hash.
    local expected_digest=$digest
    if [[ $digest == default ]]; then
        expected_digest=sha256
        [[ $name == p384 ]] && expected_digest=sha384
    fi

    local cms=$case_dir/signature.der content_type
    content_type=$(content_type_param "$case_dir/signed.eml" type)
    if [[ $mode == detached ]]; then
        [[ $content_type == multipart/signed ]] ||
            fail "detached signing made $content_type, expected multipart/signed"
        local micalg
        micalg=$(content_type_param "$case_dir/signed.eml" micalg)
        [[ $micalg == "sha-${expected_digest#sha}" ]] ||
            fail "micalg is \"$micalg\", expected sha-${expected_digest#sha}"
        extract_detached_parts "$case_dir/signed.eml" "$case_dir/content.crlf" "$cms" ||
            fail "cannot split $case_dir/signed.eml into content and signature"
    else
        [[ $content_type == application/pkcs7-mime ]] ||
            fail "opaque signing made $content_type, expected application/pkcs7-mime"
        local smime_type
        smime_type=$(content_type_param "$case_dir/signed.eml" smime-type)
        [[ $smime_type == signed-data ]] ||
            fail "smime-type is \"$smime_type\", expected signed-data"
        extract_opaque_cms "$case_dir/signed.eml" "$cms" ||
            fail "cannot decode the CMS of $case_dir/signed.eml"
    fi

    local algorithms
    algorithms=$(print_signer_algorithms "$cms")
    grep -qx "digest $expected_digest" <<<"$algorithms" ||
        fail "signer digest algorithm is not $expected_digest: $algorithms"
    if [[ $padding == pss ]]; then
        grep -qx 'signature rsassaPss' <<<"$algorithms" ||
            fail "--rsa-pss did not make an RSASSA-PSS signature: $algorithms"
    else
        ! grep -qx 'signature rsassaPss' <<<"$algorithms" ||
            fail "RSASSA-PSS signature made without --rsa-pss"
    fi

    expect_exit 0 "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca \
        --in "$case_dir/signed.eml"

    expect_exit 0 openssl cms -verify -CAfile "$CA_FILE" -in "$case_dir/signed.eml" \
        -out "$case_dir/openssl-content.eml"
    check_body_preserved "$case_dir/openssl-content.eml" "$case_dir/message.eml"

    # gpgsm 2.2.40 accepts RSASSA-PSS only with a salt as long as the digest. With another
    # salt length it reports "rejected due to salt length" and aborts with a double free.
    if [[ $mode == detached ]]; then
        gpgsm_verify "$cms" "$case_dir/content.crlf" || fail "gpgsm rejected $case_dir"
        nss_verify "$cms" "$case_dir/content.crlf" || fail "NSS cmsutil rejected $case_dir"
    else
        gpgsm_verify "$cms" || fail "gpgsm rejected $case_dir"
        nss_verify "$cms" || fail "NSS cmsutil rejected $case_dir"
    fi
}

# NSS is the engine of Thunderbird; cmsutil verifies with the test CA as its only trusted CA.
readonly NSS_DB=$TEST_TMP/nss
mkdir -p "$NSS_DB"
certutil -N -d "sql:$NSS_DB" --empty-password
certutil -A -d "sql:$NSS_DB" -n p11smime-test-ca -t C,C,C -i "$CA_FILE"

# Verify the CMS in $1 with NSS, over the detached content in $2 when given.
nss_verify() {
    local cms=$1 content=${2:-} arguments=(-D -i "$1" -d "sql:$NSS_DB" -u 4 -o /dev/null)
    if [[ -n $content ]]; then
        arguments+=(-c "$content")
    fi
    cmsutil "${arguments[@]}" 2>"$TEST_TMP/cmsutil.err" ||
        { cat -- "$TEST_TMP/cmsutil.err" >&2; return 1; }
}

step "check that the gpgsm harness rejects a tampered message"
# Without this control, a gpgsm set-up that accepts anything would pass every case below.
write_sample_message "$TEST_TMP/control.eml" rsa2048@example.org
expect_exit 0 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "${KEY_URI[rsa2048]}" \
    --pin-file "$PIN_FILE" --in "$TEST_TMP/control.eml" --out "$TEST_TMP/control-signed.eml"
extract_detached_parts "$TEST_TMP/control-signed.eml" "$TEST_TMP/control.crlf" \
    "$TEST_TMP/control.der" || fail "cannot split the control message"
gpgsm_verify "$TEST_TMP/control.der" "$TEST_TMP/control.crlf" ||
    fail "gpgsm rejected the untampered control message"
cp -- "$TEST_TMP/control.crlf" "$TEST_TMP/control-tampered.crlf"
tamper_first_body_byte "$TEST_TMP/control-tampered.crlf" entity ||
    fail "cannot change the control content"
! cmp -s "$TEST_TMP/control.crlf" "$TEST_TMP/control-tampered.crlf" ||
    fail "the control content was not changed"
if gpgsm_verify "$TEST_TMP/control.der" "$TEST_TMP/control-tampered.crlf" 2>/dev/null; then
    fail "gpgsm accepted tampered content, so its results below would mean nothing"
fi
nss_verify "$TEST_TMP/control.der" "$TEST_TMP/control.crlf" ||
    fail "NSS cmsutil rejected the untampered control message"
if nss_verify "$TEST_TMP/control.der" "$TEST_TMP/control-tampered.crlf" 2>/dev/null; then
    fail "NSS cmsutil accepted tampered content, so its results below would mean nothing"
fi

for name in rsa2048 rsa3072 p256 p384; do
    run_case "$name" detached default pkcs1
    run_case "$name" opaque default pkcs1
    run_case "$name" detached sha384 pkcs1
    run_case "$name" detached sha512 pkcs1
done

for name in rsa2048 rsa3072; do
    run_case "$name" detached default pss
    run_case "$name" detached sha512 pss
    run_case "$name" opaque sha384 pss
done

step "sign from stdin to stdout"
write_sample_message "$TEST_TMP/stdin.eml" p256@example.org
expect_exit 0 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "${KEY_URI[p256]}" \
    --pin-file "$PIN_FILE" <"$TEST_TMP/stdin.eml"
cp -- "$LAST_STDOUT" "$TEST_TMP/stdout-signed.eml"
check_outer_headers "$TEST_TMP/stdout-signed.eml" p256
expect_exit 0 "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca \
    <"$TEST_TMP/stdout-signed.eml"
expect_exit 0 openssl cms -verify -CAfile "$CA_FILE" -in "$TEST_TMP/stdout-signed.eml" \
    -out "$TEST_TMP/stdout-content.eml"
check_body_preserved "$TEST_TMP/stdout-content.eml" "$TEST_TMP/stdin.eml"

step "--rsa-pss with an EC key is a usage error"
expect_exit 2 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "${KEY_URI[p256]}" \
    --pin-file "$PIN_FILE" --rsa-pss --in "$TEST_TMP/stdin.eml" --out "$TEST_TMP/pss-ec.eml"
expect_p11smime_error "PSS"
[[ ! -e $TEST_TMP/pss-ec.eml ]] || fail "a failed sign left $TEST_TMP/pss-ec.eml behind"

echo "PASS: $TEST_NAME"
