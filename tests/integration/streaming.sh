#!/usr/bin/env bash
# Large messages stream in bounded memory. Sign (detached and opaque), verify, encrypt and
# decrypt a generated message of STREAMING_TEST_MIB MiB (default 256), each with a peak RSS
# under 64 MiB. openssl cms checks the signatures, and the round trips give back the bytes.
# A tampered AES-GCM message leaves no output, and the progress bar appears only on a terminal.
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command openssl python3 base64
make_test_dir
setup_token

: "${STREAMING_TEST_MIB:=256}"
readonly MAX_RSS_KIB=$((64 * 1024))
# AddressSanitizer keeps freed memory in quarantine (256 MiB by default) and adds shadow
# memory, so in the sanitizer run (scripts/test-sanitizers.sh sets ASAN_OPTIONS) the bound says
# nothing about p11smime. The commands and their outputs are checked there all the same.
if [[ -n ${ASAN_OPTIONS:-} ]]; then
    readonly CHECK_RSS=0
else
    readonly CHECK_RSS=1
fi
# Generating, signing and checking a few hundred MiB several times takes minutes.
COMMAND_TIMEOUT=300
KEY=${KEY_URI[rsa2048]}
# --max-size 0 lifts the default limit of 64 MiB, for messages that are streamed from files.
SIGN=("$P11SMIME" sign --max-size 0 --module "$SOFTHSM_MODULE" --key "$KEY" --pin-file "$PIN_FILE")
VERIFY=("$P11SMIME" verify --max-size 0 --ca-file "$CA_FILE" --no-system-ca)
DECRYPT=("$P11SMIME" decrypt --max-size 0 --module "$SOFTHSM_MODULE" --pin-file "$PIN_FILE")

# Writes a message of about MIB MiB: headers, then an attachment in base64 lines of 76
# characters, with the line ending given (crlf or lf).
write_large_message() {
    local file=$1 mib=$2 ending=$3
    {
        printf '%s\n' "From: Test Signer <rsa2048@example.org>" "To: someone@example.net" \
            "Subject: large message" "MIME-Version: 1.0" \
            "Content-Type: application/octet-stream" "Content-Transfer-Encoding: base64" ""
        head -c $((mib * 1024 * 1024 / 78 * 57)) /dev/urandom | base64 -w 76
    } | if [[ $ending == crlf ]]; then sed 's/$/\r/'; else cat; fi >"$file"
}

# Prints the signed entity of a message that write_large_message wrote: all but its first
# four header fields (From, To, Subject, MIME-Version), which stay outside the signature.
signed_entity() {
    tail -n +5 -- "$1"
}

# Runs a command like expect_exit 0 and fails when its peak RSS reaches MAX_RSS_KIB.
# expect_bounded NAME COMMAND [ARG...]
expect_bounded() {
    local name=$1 peak
    shift
    expect_exit 0 python3 - "$TEST_TMP/$name.rss" "$@" <<'PY'
import os
import subprocess
import sys

rss_file, *command = sys.argv[1:]
child = subprocess.Popen(command)
_, status, usage = os.wait4(child.pid, 0)
open(rss_file, "w").write(f"{usage.ru_maxrss}\n")
sys.exit(os.waitstatus_to_exitcode(status))
PY
    peak=$(<"$TEST_TMP/$name.rss")
    echo "    $name: peak RSS $((peak / 1024)) MiB"
    if ((CHECK_RSS)); then
        ((peak < MAX_RSS_KIB)) || fail "$name used a peak RSS of $peak KiB, over $MAX_RSS_KIB KiB"
    fi
}

step "generate a $STREAMING_TEST_MIB MiB message"
write_large_message "$TEST_TMP/large.eml" "$STREAMING_TEST_MIB" crlf

step "detached signing stays under 64 MiB and openssl verifies the result"
expect_bounded sign-detached "${SIGN[@]}" --in "$TEST_TMP/large.eml" --out "$TEST_TMP/signed.eml"
[[ ! -s $LAST_STDERR ]] ||
    fail "signing wrote to stderr, which is not a terminal: $(<"$LAST_STDERR")"
expect_exit 0 openssl cms -verify -CAfile "$CA_FILE" -purpose any -in "$TEST_TMP/signed.eml" \
    -out "$TEST_TMP/openssl-content.eml"

step "verifying the detached signature stays under 64 MiB and gives back the message"
expect_bounded verify-detached "${VERIFY[@]}" --in "$TEST_TMP/signed.eml" \
    --out "$TEST_TMP/verified.eml"
signed_entity "$TEST_TMP/large.eml" | cmp -s -- - "$TEST_TMP/verified.eml" ||
    fail "the verified content differs from the signed message"

step "opaque signing streams BER that openssl verifies, and verify gives back the message"
expect_bounded sign-opaque "${SIGN[@]}" --opaque --in "$TEST_TMP/large.eml" \
    --out "$TEST_TMP/opaque.eml"
expect_exit 0 openssl cms -verify -CAfile "$CA_FILE" -purpose any -in "$TEST_TMP/opaque.eml" \
    -out "$TEST_TMP/openssl-opaque-content.eml"
expect_bounded verify-opaque "${VERIFY[@]}" --in "$TEST_TMP/opaque.eml" \
    --out "$TEST_TMP/verified-opaque.eml"
signed_entity "$TEST_TMP/large.eml" | cmp -s -- - "$TEST_TMP/verified-opaque.eml" ||
    fail "the content of the opaque signature differs from the signed message"
rm -f -- "$TEST_TMP"/openssl-*.eml "$TEST_TMP/verified.eml" "$TEST_TMP/verified-opaque.eml" \
    "$TEST_TMP/opaque.eml"

step "AES-256-GCM encryption and decryption stay under 64 MiB and round-trip byte for byte"
expect_bounded encrypt "$P11SMIME" encrypt --max-size 0 --cipher aes-256-gcm \
    --recipient "$HSM_DIR/certs/rsa2048.pem" --in "$TEST_TMP/large.eml" \
    --out "$TEST_TMP/encrypted.eml"
mkdir -p "$TEST_TMP/decrypted"
expect_bounded decrypt "${DECRYPT[@]}" --in "$TEST_TMP/encrypted.eml" \
    --out "$TEST_TMP/decrypted/large.eml"
cmp -s -- "$TEST_TMP/large.eml" "$TEST_TMP/decrypted/large.eml" ||
    fail "the decrypted message differs from the encrypted one"
rm -f -- "$TEST_TMP/decrypted/large.eml"

step "a tampered AES-GCM message fails after its tag check and leaves no file behind"
python3 - "$TEST_TMP/encrypted.eml" <<'PY'
import sys

path = sys.argv[1]
data = bytearray(open(path, "rb").read())
# A base64 character in the middle of the body stands for ciphertext, far from the tag.
middle = len(data) // 2
while chr(data[middle]) not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
    middle += 1
data[middle] = ord("B") if data[middle] == ord("A") else ord("A")
open(path, "wb").write(data)
PY
expect_exit 1 "${DECRYPT[@]}" --in "$TEST_TMP/encrypted.eml" --out "$TEST_TMP/decrypted/large.eml"
expect_p11smime_error "cannot be decrypted"
leftovers=$(ls -A -- "$TEST_TMP/decrypted")
[[ -z $leftovers ]] || fail "a failed decryption left files behind: $leftovers"

step "standard input over 8 MiB is spooled, and the output goes to standard output"
write_large_message "$TEST_TMP/medium.eml" 24 lf
expect_exit 0 "$P11SMIME" encrypt --recipient "$HSM_DIR/certs/rsa2048.pem" \
    --out "$TEST_TMP/medium-encrypted.eml" <"$TEST_TMP/medium.eml"
expect_exit 0 "${DECRYPT[@]}" <"$TEST_TMP/medium-encrypted.eml"
cmp -s -- "$TEST_TMP/medium.eml" "$LAST_STDOUT" ||
    fail "decrypting standard input to standard output changed an LF message"

step "an LF message signs and verifies across chunk borders with its line endings kept"
expect_exit 0 "${SIGN[@]}" --in "$TEST_TMP/medium.eml" --out "$TEST_TMP/medium-signed.eml"
expect_exit 0 "${VERIFY[@]}" --in "$TEST_TMP/medium-signed.eml" \
    --out "$TEST_TMP/medium-verified.eml"
signed_entity "$TEST_TMP/medium.eml" | cmp -s -- - "$TEST_TMP/medium-verified.eml" ||
    fail "the verified content of an LF message differs from it"
expect_exit 0 openssl cms -verify -CAfile "$CA_FILE" -purpose any \
    -in "$TEST_TMP/medium-signed.eml" -out /dev/null

step "an 8-bit body is re-encoded in bounded memory and verifies"
{
    printf '%s\n' "From: Test Signer <rsa2048@example.org>" "Subject: 8-bit" \
        "Content-Type: text/plain; charset=utf-8" "Content-Transfer-Encoding: 8bit" ""
    for ((i = 0; i < 200000; i++)); do
        printf 'Grüße aus Köln, Zeile %d: naïve café, 東京, ½ €.\n' "$i"
    done
} >"$TEST_TMP/eight-bit.eml"
expect_bounded sign-8bit "${SIGN[@]}" --in "$TEST_TMP/eight-bit.eml" \
    --out "$TEST_TMP/eight-bit-signed.eml"
expect_exit 0 "${VERIFY[@]}" --in "$TEST_TMP/eight-bit-signed.eml"
expect_exit 0 openssl cms -verify -CAfile "$CA_FILE" -purpose any \
    -in "$TEST_TMP/eight-bit-signed.eml" -out /dev/null

step "the progress bar appears on a terminal"
if command -v script >/dev/null; then
    expect_exit 0 script -qec "$(printf '%q ' "${SIGN[@]}" --in "$TEST_TMP/medium.eml" \
        --out "$TEST_TMP/tty-signed.eml")" /dev/null
    expect_stdout_contains "p11smime: ["
else
    echo "    script(1) is missing; the terminal case is not checked"
fi

echo "PASS: $TEST_NAME"
