#!/usr/bin/env bash
# `p11smime decrypt` on the encrypted messages of tests/data/corpus, with the corpus keys
# imported into a throwaway SoftHSM token, checked against the table below: exit status,
# the decrypted text and the signers that the report names.
#
# Every message is decrypted without --key, so p11smime has to find the key among all the
# corpus keys on the token. Some keys are RSA-1024 and most recipient certificates have
# expired, because decryption does not check the recipient's own certificate.
# Not covered: S/MIME parts nested in a multipart (thunderbird/multipart-alternative.eml,
# kde/smime-encrypted-ambiguous-mime.mbox), because whether decrypt opens them is not decided.
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command openssl pkcs11-tool softhsm2-util python3
[[ -f $SOFTHSM_MODULE ]] || skip "SoftHSM module $SOFTHSM_MODULE is not installed"
make_test_dir

readonly CORPUS=$SOURCE_DIR/tests/data/corpus
readonly TOKEN_LABEL=corpus-keys
readonly USER_PIN=123456

(cd -- "$CORPUS" && sha256sum --quiet -c SHA256SUMS) ||
    fail "tests/data/corpus differs from SHA256SUMS (were line endings converted?)"

# --- A token with the corpus keys --------------------------------------------------------

export SOFTHSM2_CONF=$TEST_TMP/softhsm2.conf
mkdir -p -- "$TEST_TMP/tokens" "$TEST_TMP/keys"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
    "$TEST_TMP/tokens" >"$SOFTHSM2_CONF"
printf '%s\n' "$USER_PIN" >"$TEST_TMP/pin.txt"
expect_exit 0 softhsm2-util --init-token --free --label "$TOKEN_LABEL" --pin "$USER_PIN" \
    --so-pin 12345678

# Import the PKCS#8 PEM key KEY and the certificate CERT (PEM) under NAME with CKA_ID ID.
# import_key NAME ID KEY CERT
import_key() {
    local name=$1 id=$2 key=$3 cert=$4
    if openssl pkey -in "$key" -noout -text | grep -q '^ASN1 OID:'; then
        # softhsm2-util 2.6.1 imports an EC key without CKA_DERIVE, so ECDH then fails with
        # CKR_KEY_FUNCTION_NOT_PERMITTED. pkcs11-tool can set it.
        openssl pkey -in "$key" -outform DER -out "$TEST_TMP/keys/$name.key.der" ||
            fail "cannot convert $key to DER"
        expect_exit 0 pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$TOKEN_LABEL" \
            --login --pin "$USER_PIN" --write-object "$TEST_TMP/keys/$name.key.der" \
            --type privkey --usage-derive --id "$id" --label "$name"
    else
        expect_exit 0 softhsm2-util --import "$key" --token "$TOKEN_LABEL" --pin "$USER_PIN" \
            --id "$id" --label "$name"
    fi
    openssl x509 -in "$cert" -outform DER -out "$TEST_TMP/keys/$name.der" ||
        fail "cannot convert the certificate of $name to DER"
    expect_exit 0 pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$TOKEN_LABEL" \
        --login --pin "$USER_PIN" --write-object "$TEST_TMP/keys/$name.der" --type cert \
        --id "$id" --label "$name"
}

# Split the PKCS#12 file P12 (password "nss") into a PKCS#8 PEM key and a certificate, and
# import both under NAME.
import_p12() {
    local name=$1 id=$2 p12=$3
    local key=$TEST_TMP/keys/$name.key cert=$TEST_TMP/keys/$name.pem
    openssl pkcs12 -in "$p12" -nodes -nocerts -passin pass:nss | openssl pkey -out "$key" ||
        fail "cannot read the key in $p12"
    openssl pkcs12 -in "$p12" -nokeys -clcerts -passin pass:nss | openssl x509 -out "$cert" ||
        fail "cannot read the certificate in $p12"
    import_key "$name" "$id" "$key" "$cert"
}

# Convert KEY (PEM or DER, PKCS#1 or PKCS#8) to PKCS#8 PEM and import it with CERT.
import_key_file() {
    local name=$1 id=$2 key=$3 cert=$4 form=${5:-PEM}
    openssl pkey -inform "$form" -in "$key" -out "$TEST_TMP/keys/$name.key" ||
        fail "cannot convert $key to PKCS#8"
    import_key "$name" "$id" "$TEST_TMP/keys/$name.key" "$cert"
}

step "import the corpus keys"
import_p12 bob 01 "$CORPUS/thunderbird/Bob.p12"
import_p12 fran 02 "$CORPUS/thunderbird/Fran.p12"
import_p12 fran-ec 03 "$CORPUS/thunderbird/Fran-ec.p12"
import_key_file kde 04 "$CORPUS/kde/unittest-key.pem" "$CORPUS/kde/unittest-cert.pem"
openssl x509 -inform DER -in "$CORPUS/rfc4134/BobRSASignByCarl.cer" \
    -out "$TEST_TMP/keys/rfc4134-bob.pem" || fail "cannot read BobRSASignByCarl.cer"
import_key_file rfc4134-bob 05 "$CORPUS/rfc4134/BobPrivRSAEncrypt.pri" \
    "$TEST_TMP/keys/rfc4134-bob.pem" DER
import_key_file pyca 06 "$CORPUS/pyca/rsa_key.pem" "$CORPUS/pyca/rsa_ca.pem"
import_key_file bouncycastle 07 "$CORPUS/bouncycastle/key.pem" "$CORPUS/bouncycastle/cert.pem"

# --- Expected outcomes ---------------------------------------------------------------------

readonly KDE_CERT=$CORPUS/kde/unittest-cert.pem
declare -A TRUST=(
    [tb]="--ca-file $CORPUS/thunderbird/TestCA.pem --no-system-ca"
    [tb-nosender]="--ca-file $CORPUS/thunderbird/TestCA.pem --no-system-ca --no-sender-check"
    [kde]="--ca-file $KDE_CERT --signer-cert $KDE_CERT --no-system-ca"
    [other]="--ca-file $CORPUS/pyca/rsa_ca.pem --no-system-ca"
    [none]="--no-system-ca"
    [no-verify]="--no-verify"
)
declare -A TEXT=(
    [alice]="This is a test message from Alice to Bob."
    [fran]="This is a test message to Fran."
    [fox]="The quick brown fox jumped over the lazy dog."
    [kde-signed]="Encrypted and signed mail."
    [sample]="This is some sample content."
    [hello]="Hello, world!"
)

# Columns: allowed exit statuses (comma-separated), trust settings from the list above,
# expected text from the list above (- for none), signers whose NAME@example.com address the
# report must contain (comma-separated, - for none) and the message. An indented line gives
# the reason.
table=$(cat <<'TABLE'
0 tb alice - thunderbird/alice.env.eml
0 tb alice Alice thunderbird/alice.dsig.SHA256.multipart.env.eml
    Sign-then-encrypt: the multipart/signed inside verifies.
1 other - - thunderbird/alice.dsig.SHA256.multipart.env.eml
    The inner signature is verified: with an unrelated anchor Alice is not trusted.
0 tb alice Alice thunderbird/alice.sig.SHA384.opaque.env.eml
0 tb alice Alice thunderbird/alice.env.sig.SHA256.opaque.eml
    Encrypt-then-sign: Alice's outer signature verifies, then the content decrypts.
0 tb-nosender alice Alice,Dave thunderbird/alice.env.sig.SHA256.opaque.dave.sig.SHA256.opaque.eml
    Triple wrap. From is Dave's, so the sender check is off: this row tests both layers, not
    whether the inner signer has to match From.
1 tb - - thunderbird/outer-smime-bad-sig-inner-smime-enc-sig.eml
    The outer signature does not match its content, which Thunderbird ignores.
0 none fran - thunderbird/fran-oaep_ossl.env
0 none fran - thunderbird/fran-oaep-label_ossl.env
    RSAES-OAEP with a non-empty label.
0 none fran - thunderbird/fran-oaep-sha256hash_ossl.env
0 none fran - thunderbird/fran-oaep-sha256hash-sha256mgf_ossl.env
0 none fran - thunderbird/fran-ec_ossl-aes128-sha256.env
    ECDH with an EC P-384 key.
0 none fran - thunderbird/fran-ec_ossl-aes256-sha512.env
    ECDH with a SHA-512 KDF.
0 none fox - kde/smime-encrypted-octet-stream.mbox
    application/octet-stream named smime.p7m, RSA-1024 recipient whose certificate expired 2013.
1 kde - - kde/smime-opaque-enc+sign.mbox
    The inner opaque signature is good, but its self-signed certificate expired 2013.
0 no-verify kde-signed - kde/smime-opaque-enc+sign.mbox
0 none sample - rfc4134/5.3.eml
    3DES content encryption.
0 none hello - pyca/enveloped-rsa-oaep.pem
    Bare PEM CMS with no MIME headers.
1,2 none - - bouncycastle/test128.message
    The algorithm says AES-128-CBC but the wrapped key has 24 bytes. It must fail cleanly.
TABLE
)

# Print "found" if TEXT occurs in the decrypted output OUT: in its raw bytes, in a decoded
# MIME part, or in the content of an application/pkcs7-mime signed-data part inside it.
find_text() {
    python3 - "$1" "$2" <<'PY'
import email
import email.policy
import subprocess
import sys

out_path, text = sys.argv[1], sys.argv[2].encode()


def contents(raw, depth=0):
    yield raw
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True) or b""
        yield payload
        if part.get_content_type() in ("application/pkcs7-mime",
                                       "application/x-pkcs7-mime") and depth < 3:
            # Content of opaque signed-data that was not unwrapped, signature unchecked.
            result = subprocess.run(["openssl", "cms", "-verify", "-noverify", "-inform", "DER"],
                                    input=payload, capture_output=True)
            if result.returncode == 0:
                yield from contents(result.stdout, depth + 1)


raw = open(out_path, "rb").read()
print("found" if any(text in content for content in contents(raw)) else "missing")
PY
}

# Write a MIME message around the bare PEM or DER CMS in FILE to OUT.
wrap_bare_cms() {
    local file=$1 out=$2 form=DER
    grep -q -- '-----BEGIN' "$file" && form=PEM
    openssl cms -cmsout -inform "$form" -in "$file" -outform DER -out "$out.der" ||
        return 1
    wrap_cms_message "$out.der" "$out"
}

failures=0
row_failed() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

# Decrypt MESSAGE with the trust settings and check the row. Returns nothing; failures are
# counted so that one run reports every row.
# check_row STATUSES TRUST TEXT SIGNERS MESSAGE
check_row() {
    local statuses=$1 trust=$2 text=$3 signers=$4 message=$5
    local input=$CORPUS/$message
    local row_dir
    row_dir=$(mktemp -d "$TEST_TMP/row.XXXXXX")
    local out=$row_dir/decrypted
    local -a trust_options
    read -r -a trust_options <<<"${TRUST[$trust]}"
    step "$message ($trust): expect exit $statuses"

    if [[ $message == *.pem ]]; then
        # A bare CMS is not a mail message. If decrypt rejects it, the row continues with a
        # minimal MIME message around it and prints a note.
        local status=0
        timeout -k 5 "$COMMAND_TIMEOUT" "$P11SMIME" decrypt --module "$SOFTHSM_MODULE" \
            --pin-file "$TEST_TMP/pin.txt" "${trust_options[@]}" --in "$input" \
            --out "$row_dir/bare" >"$row_dir/bare.stdout" 2>"$row_dir/bare.stderr" ||
            status=$?
        if [[ $status == 0 ]]; then
            echo "note: decrypt accepts the bare CMS in $message"
        else
            echo "note: decrypt does not accept the bare CMS in $message (exit $status:" \
                "$(head -n1 "$row_dir/bare.stderr")), so it is wrapped in a MIME message"
            wrap_bare_cms "$input" "$row_dir/wrapped.eml" ||
                { row_failed "$message: cannot wrap the CMS in MIME"; return; }
            input=$row_dir/wrapped.eml
        fi
    fi

    local status=0
    timeout -k 5 "$COMMAND_TIMEOUT" "$P11SMIME" decrypt --module "$SOFTHSM_MODULE" \
        --pin-file "$TEST_TMP/pin.txt" "${trust_options[@]}" --in "$input" --out "$out" \
        >"$row_dir/stdout" 2>"$row_dir/stderr" || status=$?
    if ! [[ ,$statuses, == *,"$status",* ]]; then
        row_failed "$message ($trust): exit status $status, expected $statuses"
        echo "--- command: $P11SMIME decrypt --module $SOFTHSM_MODULE" \
            "--pin-file $TEST_TMP/pin.txt ${trust_options[*]} --in $input --out $out" >&2
        echo "--- stderr" >&2
        head -c 3000 -- "$row_dir/stderr" >&2
        echo "--- stdout" >&2
        head -c 2000 -- "$row_dir/stdout" >&2
        return
    fi

    if [[ $status != 0 ]]; then
        [[ ! -e $out ]] || row_failed "$message: decrypt exited $status but wrote --out"
        grep -qF 'p11smime: error:' "$row_dir/stderr" ||
            row_failed "$message: exit $status without a \"p11smime: error:\" line"
        echo "error: $(grep -m1 -F 'p11smime: error:' "$row_dir/stderr")"
        return
    fi

    if [[ ! -s $out ]]; then
        row_failed "$message: decrypt exited 0 but wrote no --out file"
        return
    fi
    if [[ $text != - && $(find_text "$out" "${TEXT[$text]}") != found ]]; then
        row_failed "$message: the output does not contain \"${TEXT[$text]}\""
        head -c 2000 -- "$out" >&2
    fi
    local signer
    if [[ $signers != - ]]; then
        for signer in ${signers//,/ }; do
            grep -qiF -- "$signer@example.com" "$row_dir/stdout" "$row_dir/stderr" ||
                row_failed "$message: the report does not name the signer $signer"
        done
    fi
}

rows=0
while read -r statuses trust text signers message; do
    [[ -z $statuses ]] && continue
    rows=$((rows + 1))
    check_row "$statuses" "$trust" "$text" "$signers" "$message"
done < <(grep -v '^ ' <<<"$table")

((rows >= 19)) || fail "the table has $rows rows; was it cut short?"
((failures == 0)) || fail "$failures of $rows rows failed"
echo "PASS: $TEST_NAME"
