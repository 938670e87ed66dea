#!/usr/bin/env bash
# `p11smime encrypt` and `decrypt` on a SoftHSM token. Round trips cover every token key type
# and cipher, and RSAES-OAEP. Further cases: sign-then-encrypt and signed layers around
# encryption, a tampered AES-GCM message, a key that is not a recipient, recipients picked
# with --cert-dir, and recipient certificates that are expired or lack the key usage.
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command openssl python3
make_test_dir
setup_token
setup_software_recipients

readonly CIPHERS=(aes-128-cbc aes-256-cbc aes-128-gcm aes-256-gcm)
# A line of the sample message's body. It must never appear in an encrypted message.
readonly PLAINTEXT_MARKER='This line ends in two spaces.'
readonly ROUTING_HEADERS=(From To Subject Date Message-ID)
decrypt_options=(--module "$SOFTHSM_MODULE" --pin-file "$PIN_FILE")
trusted=(--ca-file "$CA_FILE" --no-system-ca)

# Write the DER CMS of MESSAGE to DER and OpenSSL's dump of it to DER.txt.
dump_cms() {
    local message=$1 der=$2
    extract_opaque_cms "$message" "$der" || fail "cannot decode the CMS of $message"
    openssl cms -cmsout -print -inform DER -in "$der" >"$der.txt" ||
        fail "openssl cannot parse the CMS of $message"
}

# Check that the RecipientInfos of the CMS dump DUMP name exactly the certificates CERT...,
# by issuer and serial number or by subject key identifier.
# expect_cms_recipients DUMP CERT...
expect_cms_recipients() {
    python3 - "$@" <<'PY' || fail "the recipients in $1 are not ${*:2}"
import re
import subprocess
import sys

dump_path, cert_paths = sys.argv[1], sys.argv[2:]
lines = open(dump_path).read().splitlines()
found = []
for index, line in enumerate(lines):
    serial = re.match(r"\s*serialNumber: (0x[0-9A-Fa-f]+|-?[0-9]+)\s*$", line)
    if serial and "issuerAndSerialNumber" in "".join(lines[max(0, index - 2):index]):
        found.append(("serial", int(serial.group(1), 0)))
    elif re.match(r"\s*(d\.)?subjectKeyIdentifier:\s*$", line):
        octets = []
        for dump_line in lines[index + 1:]:
            row = re.match(r"\s*[0-9a-f]{4} - ((?:[0-9a-f]{2}[ -]?)+)", dump_line)
            if not row:
                break
            octets.append(row.group(1).replace("-", " "))
        found.append(("keyid", "".join("".join(octets).split()).lower()))

expected = []
for path in cert_paths:
    def x509(*options):
        return subprocess.run(["openssl", "x509", "-in", path, "-noout", *options],
                              check=True, capture_output=True, text=True).stdout
    serial = int(x509("-serial").strip().split("=", 1)[1], 16)
    key_id = "".join(x509("-ext", "subjectKeyIdentifier").split("\n", 1)[1].split())
    expected.append((serial, key_id.replace(":", "").lower()))

unmatched = list(found)
for serial, key_id in expected:
    for entry in unmatched:
        if entry in (("serial", serial), ("keyid", key_id)):
            unmatched.remove(entry)
            break
    else:
        print(f"no RecipientInfo for serial {serial:x} or key id {key_id}", file=sys.stderr)
        sys.exit(1)
if unmatched:
    print(f"unexpected RecipientInfos: {unmatched}", file=sys.stderr)
    sys.exit(1)
PY
}

# Check that the last command's stderr names the recipient certificate CERT by its issuer
# and serial number (hexadecimal with or without colons, or decimal).
expect_stderr_names_recipient() {
    local cert=$1
    expect_stderr_contains "p11smime test CA"
    python3 - "$cert" "$LAST_STDERR" <<'PY' || fail "stderr does not name the serial of $cert"
import re
import subprocess
import sys

cert, stderr_path = sys.argv[1:3]
output = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-serial"],
                        check=True, capture_output=True, text=True).stdout
serial = int(output.strip().split("=", 1)[1], 16)
text = open(stderr_path, errors="replace").read()
compact = text.replace(":", "").lower()
if f"{serial:x}" in compact or str(serial) in text:
    sys.exit(0)
print(open(stderr_path, errors="replace").read(), file=sys.stderr)
print(f"serial {serial:x} ({serial}) not found", file=sys.stderr)
sys.exit(1)
PY
}

# Flip one bit in the middle of the ciphertext or of the authentication tag of the
# AuthEnvelopedData in the application/pkcs7-mime message FILE. Only one base64 character
# of the file changes.
# tamper_auth_enveloped FILE ciphertext|tag
tamper_auth_enveloped() {
    python3 - "$1" "$2" <<'PY'
import base64
import email
import email.policy
import re
import sys

path, target = sys.argv[1:3]
raw = open(path, "rb").read()
message = email.message_from_bytes(raw, policy=email.policy.compat32)
if message.get_content_type() != "application/pkcs7-mime":
    sys.exit(f"{path}: expected application/pkcs7-mime, got {message.get_content_type()}")
der = bytearray(message.get_payload(decode=True))


def read_element(data, position):
    """Return (tag, content start, content end, element end) of the BER element at position."""
    tag = data[position]
    if tag & 0x1F == 0x1F:
        sys.exit(f"{path}: unexpected multi-byte tag at offset {position}")
    length = data[position + 1]
    position += 2
    if length == 0x80:
        child = position
        while data[child:child + 2] != b"\0\0":
            child = read_element(data, child)[3]
        return tag, position, child, child + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[position:position + count], "big")
        position += count
    return tag, position, position + length, position + length


def children(data, element):
    _, position, end, _ = element
    result = []
    while position < end:
        child = read_element(data, position)
        result.append(child)
        position = child[3]
    return result


# ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT AuthEnvelopedData }. RFC 5083:
# AuthEnvelopedData ::= SEQUENCE { version, originatorInfo [0] OPTIONAL, recipientInfos SET,
# authEncryptedContentInfo SEQUENCE, authAttrs [1] OPTIONAL, mac OCTET STRING, ... }
auth_enveloped = children(der, children(der, read_element(der, 0))[1])[0]
fields = children(der, auth_enveloped)
set_index = next(i for i, field in enumerate(fields) if field[0] == 0x31)
if target == "ciphertext":
    # encryptedContent is [0] IMPLICIT OCTET STRING: primitive, or constructed from chunks.
    encrypted = [c for c in children(der, fields[set_index + 1]) if c[0] in (0x80, 0xA0)]
    if not encrypted:
        sys.exit(f"{path}: AuthEnvelopedData has no encryptedContent")
    chunk = encrypted[0] if encrypted[0][0] == 0x80 else children(der, encrypted[0])[0]
else:
    chunk = next(field for field in fields[set_index + 2:] if field[0] == 0x04)
_, start, end, _ = chunk
if end <= start:
    sys.exit(f"{path}: the {target} is empty")
der[(start + end) // 2] ^= 0x01

# Put the new base64 characters in place of the old ones, so that line breaks stay as they
# were and only the changed character differs.
separator = re.compile(rb"\r?\n\r?\n").search(raw)
encoded = iter(base64.b64encode(bytes(der)))
body = bytes(byte if chr(byte).isspace() else next(encoded) for byte in raw[separator.end():])
if next(encoded, None) is not None:
    sys.exit(f"{path}: the base64 body does not have the length of its decoded CMS")
open(path, "wb").write(raw[:separator.end()] + body)
PY
}

# Check the outer form of the encrypted MESSAGE made from ORIGINAL, and its CMS: content
# type, content cipher, and key transport or key agreement algorithm.
# check_encrypted MESSAGE ORIGINAL CIPHER rsa|rsa-oaep|ec
check_encrypted() {
    local message=$1 original=$2 cipher=$3 key_management=$4
    local content_type smime_type name encoding
    content_type=$(message_content_type "$message" type)
    [[ $content_type == application/pkcs7-mime ]] ||
        fail "$message is $content_type, expected application/pkcs7-mime"
    smime_type=$(message_content_type "$message" smime-type)
    local expected_smime_type=enveloped-data
    [[ $cipher == *-gcm ]] && expected_smime_type=authEnveloped-data
    [[ $smime_type == "$expected_smime_type" ]] ||
        fail "$message has smime-type \"$smime_type\", expected $expected_smime_type"
    name=$(message_content_type "$message" name)
    [[ $name == smime.p7m ]] || fail "$message has name=\"$name\", expected smime.p7m"
    encoding=$(grep -i -m1 '^Content-Transfer-Encoding:' -- "$message" | tr -d '\r' |
        awk '{ print tolower($2) }')
    [[ $encoding == base64 ]] ||
        fail "$message has Content-Transfer-Encoding \"$encoding\", expected base64"
    expect_same_headers "$message" "$original" "${ROUTING_HEADERS[@]}"
    ! grep -qF -- "$PLAINTEXT_MARKER" "$message" || fail "$message contains the plaintext"

    local der=$message.der
    dump_cms "$message" "$der"
    if [[ $cipher == *-gcm ]]; then
        grep -q 'contentType: id-smime-ct-authEnvelopedData' "$der.txt" ||
            fail "$message: $cipher did not make AuthEnvelopedData"
    else
        grep -q 'contentType: pkcs7-envelopedData' "$der.txt" ||
            fail "$message: $cipher did not make EnvelopedData"
    fi
    grep -q "^ *algorithm: $cipher " "$der.txt" ||
        fail "$message: content is not encrypted with $cipher"
    case $key_management in
        rsa)
            grep -q '^ *algorithm: rsaEncryption ' "$der.txt" ||
                fail "$message: key transport is not RSA PKCS#1 v1.5"
            ! grep -q 'rsaesOaep' "$der.txt" || fail "$message: OAEP used without --rsa-oaep"
            ;;
        rsa-oaep)
            grep -q '^ *algorithm: rsaesOaep ' "$der.txt" ||
                fail "$message: --rsa-oaep did not select RSAES-OAEP"
            # RSAES-OAEP-params: hashFunction is [0], absent for the default SHA-1. The
            # first OBJECT after it is the hash.
            awk '/algorithm: rsaesOaep / { oaep = 1 }
                oaep && /cont \[ 0 \]/ { hash = 1; next }
                hash && /OBJECT/ { print $NF; exit }' "$der.txt" | grep -qx ':sha256' ||
                fail "$message: RSAES-OAEP does not use SHA-256"
            ;;
        ec)
            grep -q '^ *algorithm: dhSinglePass-stdDH-sha256kdf-scheme ' "$der.txt" ||
                fail "$message: key agreement is not dhSinglePass-stdDH with a SHA-256 KDF"
            grep -A3 'dhSinglePass-stdDH-sha256kdf-scheme' "$der.txt" |
                grep -q 'OBJECT *:id-aes[0-9]*-wrap' ||
                fail "$message: the content-encryption key is not wrapped with AES key wrap"
            ;;
    esac
}

# Run decrypt on MESSAGE with --out and the extra ARGS, and expect exit status STATUS and
# no output file.
# expect_decrypt_failure STATUS MESSAGE [ARG...]
expect_decrypt_failure() {
    local status=$1 message=$2
    shift 2
    local out=$message.decrypted
    rm -f -- "$out"
    expect_exit "$status" "$P11SMIME" decrypt "${decrypt_options[@]}" "$@" \
        --in "$message" --out "$out"
    expect_p11smime_error ""
    [[ ! -e $out ]] || fail "decrypt failed but wrote $out"
}

# Run encrypt with ARGS on INPUT and expect exit status 2, an error that contains TEXT and
# no output file.
# expect_encrypt_rejected INPUT TEXT [ARG...]
expect_encrypt_rejected() {
    local input=$1 text=$2
    shift 2
    local out=$TEST_TMP/rejected.eml
    rm -f -- "$out"
    expect_exit 2 "$P11SMIME" encrypt --module "$SOFTHSM_MODULE" "$@" --in "$input" \
        --out "$out"
    expect_p11smime_error "$text"
    [[ ! -e $out ]] || fail "encrypt failed but wrote $out"
}

# Check that the last command's stdout or stderr mentions the address of SIGNER, which is
# how a report names a verified signature layer.
expect_report_names_signer() {
    local signer=$1
    if ! grep -qF -- "$signer@example.org" "$LAST_STDOUT" "$LAST_STDERR"; then
        echo "--- stdout" >&2
        head -c 4000 -- "$LAST_STDOUT" >&2
        echo "--- stderr" >&2
        head -c 4000 -- "$LAST_STDERR" >&2
        fail "decrypt did not report the signature of $signer@example.org"
    fi
}

step "encrypt and decrypt are commands"
expect_exit 0 "$P11SMIME" encrypt --help
expect_exit 0 "$P11SMIME" decrypt --help

# Encrypt a sample message to token key NAME with CIPHER, decrypt it on the token without
# --key and compare the result with the input.
# run_round_trip NAME CIPHER pkcs1|oaep
run_round_trip() {
    local name=$1 cipher=$2 padding=$3
    local case_dir=$TEST_TMP/$name-$cipher-$padding
    step "round trip: $name, $cipher, $padding"
    mkdir -p -- "$case_dir"
    write_sample_message "$case_dir/message.eml" sender@example.org

    local args=(encrypt --recipient "$HSM_DIR/certs/$name.pem" --cipher "$cipher"
        --in "$case_dir/message.eml" --out "$case_dir/encrypted.eml")
    [[ $padding == oaep ]] && args+=(--rsa-oaep)
    expect_exit 0 "$P11SMIME" "${args[@]}"

    local key_management=ec
    if [[ $name == rsa* ]]; then
        key_management=rsa
        [[ $padding == oaep ]] && key_management=rsa-oaep
    fi
    check_encrypted "$case_dir/encrypted.eml" "$case_dir/message.eml" "$cipher" \
        "$key_management"
    expect_cms_recipients "$case_dir/encrypted.eml.der.txt" "$HSM_DIR/certs/$name.pem"

    expect_exit 0 "$P11SMIME" decrypt "${decrypt_options[@]}" \
        --in "$case_dir/encrypted.eml" --out "$case_dir/decrypted.eml"
    expect_same_headers "$case_dir/decrypted.eml" "$case_dir/message.eml" \
        "${ROUTING_HEADERS[@]}"
    expect_same_text_body "$case_dir/decrypted.eml" "$case_dir/message.eml"
}

for name in rsa2048 rsa3072 p256 p384; do
    for cipher in "${CIPHERS[@]}"; do
        run_round_trip "$name" "$cipher" pkcs1
        if [[ $name == rsa* ]]; then
            run_round_trip "$name" "$cipher" oaep
        fi
    done
done

step "default cipher is AES-256-CBC with PKCS#1 v1.5"
write_sample_message "$TEST_TMP/default.eml" sender@example.org
expect_exit 0 "$P11SMIME" encrypt --recipient "$HSM_DIR/certs/rsa2048.pem" \
    --in "$TEST_TMP/default.eml" --out "$TEST_TMP/default-encrypted.eml"
check_encrypted "$TEST_TMP/default-encrypted.eml" "$TEST_TMP/default.eml" aes-256-cbc rsa

step "token URIs as recipients, stdin to stdout, and --key"
write_sample_message "$TEST_TMP/uris.eml" sender@example.org
cert_uri="pkcs11:token=p11smime-test;object=rsa3072;type=cert"
expect_exit 0 "$P11SMIME" encrypt --module "$SOFTHSM_MODULE" --recipient "$cert_uri" \
    --recipient "${KEY_URI[p384]}" <"$TEST_TMP/uris.eml"
cp -- "$LAST_STDOUT" "$TEST_TMP/uris-encrypted.eml"
check_encrypted "$TEST_TMP/uris-encrypted.eml" "$TEST_TMP/uris.eml" aes-256-cbc rsa
expect_cms_recipients "$TEST_TMP/uris-encrypted.eml.der.txt" "$HSM_DIR/certs/rsa3072.pem" \
    "$HSM_DIR/certs/p384.pem"
for name in rsa3072 p384; do
    expect_exit 0 "$P11SMIME" decrypt "${decrypt_options[@]}" --key "${KEY_URI[$name]}" \
        <"$TEST_TMP/uris-encrypted.eml"
    cp -- "$LAST_STDOUT" "$TEST_TMP/uris-$name.eml"
    expect_same_text_body "$TEST_TMP/uris-$name.eml" "$TEST_TMP/uris.eml"
done

step "a token key that is not a recipient"
write_sample_message "$TEST_TMP/not-ours.eml" sender@example.org
expect_exit 0 "$P11SMIME" encrypt --recipient "$SOFT_DIR/rsa-recipient.pem" \
    --recipient "$SOFT_DIR/ec-recipient.pem" \
    --in "$TEST_TMP/not-ours.eml" --out "$TEST_TMP/not-ours-encrypted.eml"
expect_decrypt_failure 2 "$TEST_TMP/not-ours-encrypted.eml"
expect_stderr_names_recipient "$SOFT_DIR/rsa-recipient.pem"
expect_stderr_names_recipient "$SOFT_DIR/ec-recipient.pem"
# With --key the same rule holds: the key's certificate is not among the recipients.
expect_exit 0 "$P11SMIME" encrypt --recipient "$HSM_DIR/certs/p256.pem" \
    --in "$TEST_TMP/not-ours.eml" --out "$TEST_TMP/to-p256.eml"
expect_decrypt_failure 2 "$TEST_TMP/to-p256.eml" --key "${KEY_URI[rsa2048]}"
expect_stderr_names_recipient "$HSM_DIR/certs/p256.pem"

step "the recipient's own certificate validity is not checked when decrypting"
# p11smime does not encrypt to an expired certificate, so openssl makes the message.
write_sample_message "$TEST_TMP/to-expired.eml" sender@example.org
expect_exit 0 openssl cms -encrypt -aes-256-cbc -recip "$HSM_DIR/certs/expired.pem" \
    -in "$TEST_TMP/to-expired.eml" -out "$TEST_TMP/to-expired-encrypted.eml"
expect_exit 0 "$P11SMIME" decrypt "${decrypt_options[@]}" \
    --in "$TEST_TMP/to-expired-encrypted.eml" --out "$TEST_TMP/to-expired-decrypted.eml"
expect_same_text_body "$TEST_TMP/to-expired-decrypted.eml" "$TEST_TMP/to-expired.eml"

step "tampered AES-GCM ciphertext and tag"
for cipher in aes-128-gcm aes-256-gcm; do
    source_message=$TEST_TMP/p256-$cipher-pkcs1/encrypted.eml
    for target in ciphertext tag; do
        tampered=$TEST_TMP/tampered-$cipher-$target.eml
        cp -- "$source_message" "$tampered"
        tamper_auth_enveloped "$tampered" "$target" || fail "cannot tamper with $tampered"
        [[ $(cmp -l "$source_message" "$tampered" | wc -l) == 1 ]] ||
            fail "$tampered does not differ from $source_message in exactly one byte"
        expect_decrypt_failure 1 "$tampered"
    done
done

step "sign then encrypt with sign --encrypt-to"
write_sample_message "$TEST_TMP/sign-encrypt.eml" rsa2048@example.org
expect_exit 0 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "${KEY_URI[rsa2048]}" \
    --pin-file "$PIN_FILE" --encrypt-to "$HSM_DIR/certs/p256.pem" \
    --encrypt-to "$HSM_DIR/certs/rsa3072.pem" --cipher aes-256-gcm \
    --in "$TEST_TMP/sign-encrypt.eml" --out "$TEST_TMP/signed-encrypted.eml"
check_encrypted "$TEST_TMP/signed-encrypted.eml" "$TEST_TMP/sign-encrypt.eml" aes-256-gcm ec
expect_cms_recipients "$TEST_TMP/signed-encrypted.eml.der.txt" "$HSM_DIR/certs/p256.pem" \
    "$HSM_DIR/certs/rsa3072.pem"
expect_exit 0 "$P11SMIME" decrypt "${decrypt_options[@]}" "${trusted[@]}" \
    --in "$TEST_TMP/signed-encrypted.eml" --out "$TEST_TMP/signed-encrypted.out"
expect_report_names_signer rsa2048
expect_same_headers "$TEST_TMP/signed-encrypted.out" "$TEST_TMP/sign-encrypt.eml" \
    "${ROUTING_HEADERS[@]}"
expect_same_text_body "$TEST_TMP/signed-encrypted.out" "$TEST_TMP/sign-encrypt.eml"

step "a signature that does not verify inside encryption"
expect_decrypt_failure 1 "$TEST_TMP/signed-encrypted.eml" --ca-file "$OTHER_CA_FILE" \
    --no-system-ca
expect_exit 0 "$P11SMIME" decrypt "${decrypt_options[@]}" --no-verify \
    --ca-file "$OTHER_CA_FILE" --no-system-ca \
    --in "$TEST_TMP/signed-encrypted.eml" --out "$TEST_TMP/no-verify.out"
expect_same_text_body "$TEST_TMP/no-verify.out" "$TEST_TMP/sign-encrypt.eml"

step "sign --encrypt-to with --rsa-oaep"
expect_exit 0 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "${KEY_URI[rsa2048]}" \
    --pin-file "$PIN_FILE" --encrypt-to "$HSM_DIR/certs/rsa3072.pem" --rsa-oaep \
    --cipher aes-128-cbc --in "$TEST_TMP/sign-encrypt.eml" --out "$TEST_TMP/signed-oaep.eml"
check_encrypted "$TEST_TMP/signed-oaep.eml" "$TEST_TMP/sign-encrypt.eml" aes-128-cbc rsa-oaep
expect_exit 0 "$P11SMIME" decrypt "${decrypt_options[@]}" "${trusted[@]}" \
    --in "$TEST_TMP/signed-oaep.eml" --out "$TEST_TMP/signed-oaep.out"
expect_report_names_signer rsa2048
expect_same_text_body "$TEST_TMP/signed-oaep.out" "$TEST_TMP/sign-encrypt.eml"

step "a signature around encrypted data"
expect_exit 0 "$P11SMIME" encrypt --recipient "$HSM_DIR/certs/p384.pem" \
    --in "$TEST_TMP/sign-encrypt.eml" --out "$TEST_TMP/encrypted-to-sign.eml"
expect_exit 0 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "${KEY_URI[rsa2048]}" \
    --pin-file "$PIN_FILE" --in "$TEST_TMP/encrypted-to-sign.eml" \
    --out "$TEST_TMP/encrypted-signed.eml"
expect_exit 0 "$P11SMIME" decrypt "${decrypt_options[@]}" "${trusted[@]}" \
    --in "$TEST_TMP/encrypted-signed.eml" --out "$TEST_TMP/encrypted-signed.out"
expect_report_names_signer rsa2048
expect_same_text_body "$TEST_TMP/encrypted-signed.out" "$TEST_TMP/sign-encrypt.eml"
expect_decrypt_failure 1 "$TEST_TMP/encrypted-signed.eml" --ca-file "$OTHER_CA_FILE" \
    --no-system-ca

step "triple wrap: signed, encrypted, signed again"
expect_exit 0 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "${KEY_URI[rsa2048]}" \
    --pin-file "$PIN_FILE" --opaque --in "$TEST_TMP/signed-encrypted.eml" \
    --out "$TEST_TMP/triple.eml"
expect_exit 0 "$P11SMIME" decrypt "${decrypt_options[@]}" "${trusted[@]}" --json \
    --in "$TEST_TMP/triple.eml" --out "$TEST_TMP/triple.out"
python3 -m json.tool "$LAST_STDOUT" >/dev/null || fail "decrypt --json printed invalid JSON"
expect_report_names_signer rsa2048
expect_same_text_body "$TEST_TMP/triple.out" "$TEST_TMP/sign-encrypt.eml"

step "--cert-dir picks recipients from To, Cc and Bcc"
cert_dir=$TEST_TMP/cert-dir
mkdir -p -- "$cert_dir"
cp -- "$HSM_DIR/certs/rsa2048.pem" "$cert_dir/rsa2048.pem"
cp -- "$HSM_DIR/certs/p256.pem" "$cert_dir/p256.crt"
openssl x509 -in "$HSM_DIR/certs/p384.pem" -outform DER -out "$cert_dir/p384.der"
# Certificates of people who are not addressed must not become recipients.
cp -- "$HSM_DIR/certs/rsa3072.pem" "$cert_dir/rsa3072.pem"
write_sample_message "$TEST_TMP/cert-dir.eml" sender@example.org
sed -i -e 's/^To: .*/To: First <rsa2048@example.org>\nCc: p256@example.org/' \
    -e 's/^Subject: /Bcc: Third <p384@example.org>\nSubject: /' "$TEST_TMP/cert-dir.eml"
expect_exit 0 "$P11SMIME" encrypt --cert-dir "$cert_dir" --in "$TEST_TMP/cert-dir.eml" \
    --out "$TEST_TMP/cert-dir-encrypted.eml"
dump_cms "$TEST_TMP/cert-dir-encrypted.eml" "$TEST_TMP/cert-dir-encrypted.der"
expect_cms_recipients "$TEST_TMP/cert-dir-encrypted.der.txt" "$HSM_DIR/certs/rsa2048.pem" \
    "$HSM_DIR/certs/p256.pem" "$HSM_DIR/certs/p384.pem"
for name in rsa2048 p256 p384; do
    expect_exit 0 "$P11SMIME" decrypt "${decrypt_options[@]}" --key "${KEY_URI[$name]}" \
        --in "$TEST_TMP/cert-dir-encrypted.eml" --out "$TEST_TMP/cert-dir-$name.eml"
    expect_same_text_body "$TEST_TMP/cert-dir-$name.eml" "$TEST_TMP/cert-dir.eml"
done
expect_exit 2 "$P11SMIME" decrypt "${decrypt_options[@]}" --key "${KEY_URI[rsa3072]}" \
    --in "$TEST_TMP/cert-dir-encrypted.eml" --out "$TEST_TMP/cert-dir-rsa3072.eml"
[[ ! -e $TEST_TMP/cert-dir-rsa3072.eml ]] || fail "a failed decrypt wrote its --out file"

step "--cert-dir with an address that has no certificate"
sed -e 's/^Cc: .*/Cc: p256@example.org, Nobody <nobody@example.org>/' \
    "$TEST_TMP/cert-dir.eml" >"$TEST_TMP/cert-dir-missing.eml"
expect_encrypt_rejected "$TEST_TMP/cert-dir-missing.eml" "nobody@example.org" \
    --cert-dir "$cert_dir"

step "recipient certificates that must be rejected"
write_sample_message "$TEST_TMP/bad-recipient.eml" sender@example.org
expect_encrypt_rejected "$TEST_TMP/bad-recipient.eml" "expired" \
    --recipient "$HSM_DIR/certs/expired.pem"
expect_encrypt_rejected "$TEST_TMP/bad-recipient.eml" "rsa-sign-only" \
    --recipient "$SOFT_DIR/rsa-sign-only.pem"
expect_stderr_contains "keyEncipherment"
expect_encrypt_rejected "$TEST_TMP/bad-recipient.eml" "ec-sign-only" \
    --recipient "$SOFT_DIR/ec-sign-only.pem"
expect_stderr_contains "keyAgreement"
expect_encrypt_rejected "$TEST_TMP/bad-recipient.eml" "rsa-client-auth" \
    --recipient "$SOFT_DIR/rsa-client-auth.pem"
expect_stderr_contains "emailProtection"
# One bad certificate among good ones rejects the whole message.
expect_encrypt_rejected "$TEST_TMP/bad-recipient.eml" "rsa-sign-only" \
    --recipient "$HSM_DIR/certs/rsa2048.pem" --recipient "$SOFT_DIR/rsa-sign-only.pem"
expect_encrypt_rejected "$TEST_TMP/bad-recipient.eml" "expired" \
    --recipient "pkcs11:token=p11smime-test;object=expired;type=cert"
# The same checks apply to sign --encrypt-to.
rm -f -- "$TEST_TMP/rejected-signed.eml"
expect_exit 2 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "${KEY_URI[rsa2048]}" \
    --pin-file "$PIN_FILE" --encrypt-to "$SOFT_DIR/ec-sign-only.pem" \
    --in "$TEST_TMP/sign-encrypt.eml" --out "$TEST_TMP/rejected-signed.eml"
expect_p11smime_error "ec-sign-only"
[[ ! -e $TEST_TMP/rejected-signed.eml ]] || fail "a failed sign --encrypt-to wrote its output"

echo "PASS: $TEST_NAME"
