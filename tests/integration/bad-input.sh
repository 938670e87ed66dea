#!/usr/bin/env bash
# Hostile and malformed input: each case of the table below must make p11smime exit 2 with
# an error on stderr, within COMMAND_TIMEOUT, without a crash and without an --out file.
# The cases are made from a good signed message and a good encrypted message, so each one
# breaks exactly one thing. docs/security.md lists the limits that some cases hit.
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command python3
make_test_dir
setup_token

cases=$TEST_TMP/cases
mkdir -p -- "$cases"
write_sample_message "$TEST_TMP/message.eml" rsa2048@example.org
expect_exit 0 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "${KEY_URI[rsa2048]}" \
    --pin-file "$PIN_FILE" --in "$TEST_TMP/message.eml" --out "$cases/good-signed.eml"
expect_exit 0 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "${KEY_URI[rsa2048]}" \
    --pin-file "$PIN_FILE" --opaque --in "$TEST_TMP/message.eml" \
    --out "$cases/good-opaque.eml"
expect_exit 0 "$P11SMIME" encrypt --recipient "$HSM_DIR/certs/rsa2048.pem" \
    --in "$TEST_TMP/message.eml" --out "$cases/good-encrypted.eml"

# Write one file per case into the cases folder; each name is the case.
python3 - "$cases" <<'PY'
import base64
import os
import re
import sys

folder = sys.argv[1]
signed = open(os.path.join(folder, "good-signed.eml"), "rb").read()
opaque = open(os.path.join(folder, "good-opaque.eml"), "rb").read()
encrypted = open(os.path.join(folder, "good-encrypted.eml"), "rb").read()


def write(name, data):
    open(os.path.join(folder, name), "wb").write(data)


def signature_block(message):
    """Return (start, end) of the base64 body of the signature part."""
    match = re.search(rb"(?s)Content-Type: application/pkcs7-signature.*?\n\r?\n(.*?)\r?\n--",
                      message)
    return match.start(1), match.end(1)


def replace_signature(der=None, body=None, headers=None):
    start, end = signature_block(signed)
    if body is None:
        body = base64.encodebytes(der)
    message = signed[:start] + body + signed[end:]
    if headers:
        message = message.replace(b"Content-Transfer-Encoding: base64", headers, 1)
    return message


start, end = signature_block(signed)
der = base64.b64decode(signed[start:end])
headers = b"From: rsa2048@example.org\nTo: r@example.net\nSubject: bad input\n"

write("empty", b"")
write("truncated-signed", signed[: len(signed) * 2 // 3])
write("truncated-opaque", opaque[: len(opaque) // 2])
write("truncated-encrypted", encrypted[: len(encrypted) // 2])
write("headers-only", headers)
write("cms-truncated", replace_signature(der=der[: len(der) // 2]))
write("cms-garbage", replace_signature(der=bytes(range(256)) * 8))
write("cms-wrong-type", replace_signature(der=base64.b64decode(
    re.search(rb"(?s)\n\r?\n(MI.*)", encrypted).group(1))))
write("base64-malformed", replace_signature(body=b"!!!! not base64 at all ****\n@@@@\n"))
write("quoted-printable-malformed", replace_signature(
    body=b"=ZZ=0=\n=G1 broken soft break =\n=",
    headers=b"Content-Transfer-Encoding: quoted-printable"))
write("signature-part-text-plain",
      signed.replace(b"Content-Type: application/pkcs7-signature", b"Content-Type: text/plain", 1))
write("signature-part-no-content-type",
      re.sub(rb"Content-Type: application/pkcs7-signature[^\n]*\n", b"", signed, count=1))
write("content-type-missing", headers + b"\nNo content type, so this is plain text.\n")
write("content-type-wrong", re.sub(rb"(?m)^Content-Type: multipart/signed",
                                   b"Content-Type: multipart/mixed", signed, count=1))
write("multipart-signed-one-part", headers + b"MIME-Version: 1.0\nContent-Type: multipart/"
      b"signed; protocol=\"application/pkcs7-signature\"; boundary=b\n\n--b\n"
      b"Content-Type: text/plain\n\nonly one part\n--b--\n")
write("multipart-without-boundary", headers + b"Content-Type: multipart/signed\n\nbody\n")

depth = 40
nested = headers + b"MIME-Version: 1.0\n"
for level in range(depth):
    nested += b"Content-Type: multipart/mixed; boundary=n%d\n\n--n%d\n" % (level, level)
nested += signed[signed.index(b"Content-Type: multipart/signed"):]
for level in reversed(range(depth)):
    nested += b"\n--n%d--\n" % level
write("nested-too-deep", nested)

write("header-huge", headers + b"X-Huge: " + b"x" * (100 * 1024) + b"\n\nbody\n")
write("header-folded-huge", headers + b"X-Folded: start\n" + b" more\n" * 20000 + b"\nbody\n")
write("header-unterminated", b"From: a@example.org\nSubject: " + b"y" * 5000)
write("header-flood", headers + b"X-A: b\n" * 60000 + b"\nbody\n")
write("header-nul", signed.replace(b"Subject: ", b"Subject: \x00", 1))
write("header-name-nul", signed.replace(b"To: ", b"T\x00o: ", 1))
write("binary-random", bytes((i * 7919 + 13) % 256 for i in range(65536)))
write("binary-der-certificate", open(os.path.join(folder, "..", "hsm", "certs", "rsa2048.pem"),
                                     "rb").read().replace(b"CERTIFICATE", b"NOT A MESSAGE"))
write("binary-zeros", b"\x00" * 4096)
PY

# Oversized: one byte more than the 64 MiB limit, as a file and on standard input.
python3 -c "import sys; sys.stdout.buffer.write(b'Subject: big\n\n' + b'a' * (64 * 1024 * 1024))" \
    >"$cases/oversized"

rm -f -- "$cases"/good-*

# Run one command on one case and check the contract: exit 2, an error, no --out file.
# check_case NAME COMMAND...
check_case() {
    local name=$1 out=$TEST_TMP/out
    shift
    rm -f -- "$out"
    expect_exit 2 "$@" --out "$out"
    expect_p11smime_error "p11smime: error:"
    [[ ! -e $out ]] || fail "$name: the command wrote its --out file"
    if compgen -G "$out.p11smime-*" >/dev/null; then
        fail "$name: a temporary output file was left behind"
    fi
    if grep -qE 'AddressSanitizer|runtime error|Segmentation|Aborted' -- "$LAST_STDERR"; then
        fail "$name: stderr shows a crash"
    fi
}

count=0
for file in "$cases"/*; do
    name=$(basename -- "$file")
    step "$name: verify"
    check_case "$name" "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca --in "$file"
    step "$name: decrypt"
    check_case "$name" "$P11SMIME" decrypt --module "$SOFTHSM_MODULE" --pin-file "$PIN_FILE" \
        --no-system-ca --in "$file"
    count=$((count + 1))
done

step "oversized input on standard input"
check_case oversized-stdin "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca <"$cases/oversized"
expect_stderr_contains "standard input is larger than the limit of 64 MiB"

step "errors name the limit that was hit"
expect_exit 2 "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca --in "$cases/nested-too-deep"
expect_stderr_contains "more than 32 levels deep"
expect_exit 2 "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca --in "$cases/header-flood"
expect_stderr_contains "more than 50000 lines that start like a header field"
expect_exit 2 "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca --in "$cases/header-huge"
expect_stderr_contains "header field X-Huge is longer than 65536 bytes"
expect_exit 2 "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca --in "$cases/header-nul"
expect_stderr_contains "NUL byte in a header field"
expect_exit 2 "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca --in "$cases/signature-part-text-plain"
expect_stderr_contains "text/plain instead of application/pkcs7-signature"

step "sign rejects input that is not a message"
for name in empty binary-random binary-zeros header-flood header-nul oversized; do
    check_case "$name" "$P11SMIME" sign --module "$SOFTHSM_MODULE" \
        --key "${KEY_URI[rsa2048]}" --pin-file "$PIN_FILE" --in "$cases/$name"
done

echo "PASS: $TEST_NAME ($count cases, each through verify and decrypt)"
