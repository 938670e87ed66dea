#!/usr/bin/env bash
# Batch mode: sign, verify, encrypt and decrypt many files with one module load and one
# C_Login, counted in a pkcs11-spy log. A failure on one file names that file while the others
# go on, the exit status is the worst of all files, and the outputs do not depend on --jobs.
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command openssl python3
make_test_dir
setup_token
[[ -f $PKCS11_SPY_MODULE ]] || skip "OpenSC's pkcs11-spy module $PKCS11_SPY_MODULE is missing"

readonly MESSAGE_COUNT=24
KEY=${KEY_URI[rsa2048]}
VERIFY_OPTIONS=(--ca-file "$CA_FILE" --no-system-ca)

count_calls() {
    grep -cE "^[0-9]+: $1\$" -- "$2" || true
}

mkdir -p "$TEST_TMP/in"
for ((i = 1; i <= MESSAGE_COUNT; i++)); do
    write_sample_message "$TEST_TMP/in/message-$i.eml" rsa2048@example.org
    printf 'Message number %d.\n' "$i" >>"$TEST_TMP/in/message-$i.eml"
done
INPUTS=("$TEST_TMP"/in/message-*.eml)

step "a batch of $MESSAGE_COUNT signatures loads the module once and logs in once"
mkdir -p "$TEST_TMP/signed-spy"
PKCS11SPY=$SOFTHSM_MODULE PKCS11SPY_OUTPUT=$TEST_TMP/spy-sign.log expect_exit 0 \
    "$P11SMIME" sign --module "$PKCS11_SPY_MODULE" --key "$KEY" --pin-file "$PIN_FILE" \
    --jobs 2 --out-dir "$TEST_TMP/signed-spy" "${INPUTS[@]}"
logins=$(count_calls C_Login "$TEST_TMP/spy-sign.log")
[[ $logins == 1 ]] || fail "a batch of $MESSAGE_COUNT made $logins C_Login calls, expected 1"
initializations=$(count_calls C_Initialize "$TEST_TMP/spy-sign.log")
[[ $initializations == 1 ]] ||
    fail "a batch of $MESSAGE_COUNT made $initializations C_Initialize calls, expected 1"
signatures=$(count_calls C_Sign "$TEST_TMP/spy-sign.log")
[[ $signatures == "$MESSAGE_COUNT" ]] ||
    fail "a batch of $MESSAGE_COUNT made $signatures C_Sign calls"

step "every signed output verifies with openssl cms"
for input in "${INPUTS[@]}"; do
    output=$TEST_TMP/signed-spy/$(basename -- "$input")
    [[ -f $output ]] || fail "no output $output for $input"
    expect_exit 0 openssl cms -verify -CAfile "$CA_FILE" -purpose any -in "$output" \
        -out "$TEST_TMP/openssl-content.eml"
done

# Replaces the random multipart boundary and drops the signature part, which differs between
# runs because of signingTime. What remains is every byte that does not depend on the time.
mask_signature() {
    python3 - "$1" <<'PY'
import re
import sys

raw = open(sys.argv[1], "rb").read()
boundary = re.search(rb'boundary="([^"]+)"', raw).group(1)
masked = raw.replace(boundary, b"BOUNDARY")
sys.stdout.buffer.write(masked[:masked.index(b"--BOUNDARY", masked.index(b"--BOUNDARY") + 1)])
PY
}

step "signing with --jobs 1 and --jobs 4 gives the same bytes apart from the signature"
mkdir -p "$TEST_TMP/signed-1" "$TEST_TMP/signed-4"
expect_exit 0 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "$KEY" --pin-file "$PIN_FILE" \
    --jobs 1 --out-dir "$TEST_TMP/signed-1" "${INPUTS[@]}"
expect_exit 0 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "$KEY" --pin-file "$PIN_FILE" \
    --jobs 4 --out-dir "$TEST_TMP/signed-4" "${INPUTS[@]}"
for input in "${INPUTS[@]}"; do
    name=$(basename -- "$input")
    mask_signature "$TEST_TMP/signed-1/$name" >"$TEST_TMP/masked-1"
    mask_signature "$TEST_TMP/signed-4/$name" >"$TEST_TMP/masked-4"
    cmp -s -- "$TEST_TMP/masked-1" "$TEST_TMP/masked-4" ||
        fail "$name differs between --jobs 1 and --jobs 4 outside the signature"
done

# Checks that two messages have the same decoded body. The 8-bit body of the sample message
# is signed in a 7-bit transfer encoding, so the verified content is not the input's bytes.
same_decoded_body() {
    python3 - "$1" "$2" <<'PY'
import email
import email.policy
import sys

bodies = [email.message_from_bytes(open(path, "rb").read(), policy=email.policy.compat32)
          .get_payload(decode=True) for path in sys.argv[1:3]]
sys.exit(0 if bodies[0] == bodies[1] else 1)
PY
}

step "verify of a batch writes each content, the same whatever --jobs"
mkdir -p "$TEST_TMP/content-1" "$TEST_TMP/content-4"
expect_exit 0 "$P11SMIME" verify "${VERIFY_OPTIONS[@]}" --jobs 1 --out-dir "$TEST_TMP/content-1" \
    "$TEST_TMP"/signed-1/*.eml
expect_exit 0 "$P11SMIME" verify "${VERIFY_OPTIONS[@]}" --jobs 4 --out-dir "$TEST_TMP/content-4" \
    "$TEST_TMP"/signed-4/*.eml
for ((i = 1; i <= MESSAGE_COUNT; i++)); do
    name=message-$i.eml
    same_decoded_body "$TEST_TMP/in/$name" "$TEST_TMP/content-1/$name" ||
        fail "verified content of $name does not decode to the body that was signed"
    cmp -s -- "$TEST_TMP/content-1/$name" "$TEST_TMP/content-4/$name" ||
        fail "verified content of $name differs between --jobs 1 and --jobs 4"
done

step "verify reports each file in command-line order"
expect_exit 0 "$P11SMIME" verify "${VERIFY_OPTIONS[@]}" --jobs 4 "$TEST_TMP"/signed-4/*.eml
expected_order=$(printf '%s:\n' "$TEST_TMP"/signed-4/*.eml)
actual_order=$(grep -E '^/.*:$' -- "$LAST_STDOUT")
[[ $actual_order == "$expected_order" ]] || fail "reports are out of order: $actual_order"
valid_count=$(grep -c '^Signature is valid' -- "$LAST_STDOUT" || true)
[[ $valid_count == "$MESSAGE_COUNT" ]] || fail "$valid_count of $MESSAGE_COUNT reports say valid"

step "a failure on one file names it, the others go on, and the status is the worst"
cp -- "$TEST_TMP/signed-1/message-2.eml" "$TEST_TMP/tampered.eml"
tamper_first_body_byte "$TEST_TMP/tampered.eml" multipart
mkdir -p "$TEST_TMP/content-mixed"
expect_exit 1 "$P11SMIME" verify "${VERIFY_OPTIONS[@]}" --out-dir "$TEST_TMP/content-mixed" \
    "$TEST_TMP/signed-1/message-1.eml" "$TEST_TMP/tampered.eml" \
    "$TEST_TMP/signed-1/message-3.eml"
expect_p11smime_error "$TEST_TMP/tampered.eml: verification failed"
[[ -f $TEST_TMP/content-mixed/message-1.eml && -f $TEST_TMP/content-mixed/message-3.eml ]] ||
    fail "the valid files of a batch with a tampered file got no output"
[[ ! -e $TEST_TMP/content-mixed/tampered.eml ]] || fail "a tampered file got an output"

expect_exit 2 "$P11SMIME" verify "${VERIFY_OPTIONS[@]}" "$TEST_TMP/signed-1/message-1.eml" \
    "$TEST_TMP/tampered.eml" "$TEST_TMP/no-such-message.eml"
expect_p11smime_error "$TEST_TMP/no-such-message.eml"
expect_stderr_contains "2 of 3 files failed"

printf 'not a mail message\n' >"$TEST_TMP/in/garbage.eml"
mkdir -p "$TEST_TMP/signed-mixed"
expect_exit 2 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "$KEY" --pin-file "$PIN_FILE" \
    --out-dir "$TEST_TMP/signed-mixed" "${INPUTS[0]}" "$TEST_TMP/in/garbage.eml" "${INPUTS[1]}"
expect_p11smime_error "$TEST_TMP/in/garbage.eml: the input is not a mail message"
[[ ! -e $TEST_TMP/signed-mixed/garbage.eml ]] || fail "a failed file left an output behind"
[[ -f $TEST_TMP/signed-mixed/$(basename -- "${INPUTS[1]}") ]] ||
    fail "the file after a failed one was not signed"

step "verify --json prints one line per file, errors included"
expect_exit 2 "$P11SMIME" verify "${VERIFY_OPTIONS[@]}" --json "$TEST_TMP/signed-1/message-1.eml" \
    "$TEST_TMP/tampered.eml" "$TEST_TMP/no-such-message.eml"
python3 - "$LAST_STDOUT" "$TEST_TMP" <<'PY' || fail "verify --json lines are wrong"
import json
import sys

lines = [json.loads(line) for line in open(sys.argv[1])]
folder = sys.argv[2]
expected = [(f"{folder}/signed-1/message-1.eml", 0), (f"{folder}/tampered.eml", 1),
            (f"{folder}/no-such-message.eml", 2)]
actual = [(line["file"], line["exit_status"]) for line in lines]
if actual != expected:
    sys.exit(f"expected {expected}, got {actual}")
if lines[0]["verification"]["valid"] is not True or lines[1]["verification"]["valid"]:
    sys.exit("the valid flags do not match the exit statuses")
if "error" not in lines[2]:
    sys.exit("the missing file has no error")
PY

step "encrypt and decrypt a batch, with one login, the same bytes whatever --jobs"
mkdir -p "$TEST_TMP/encrypted" "$TEST_TMP/decrypted-1" "$TEST_TMP/decrypted-4"
expect_exit 0 "$P11SMIME" encrypt --recipient "$HSM_DIR/certs/rsa2048.pem" \
    --out-dir "$TEST_TMP/encrypted" "${INPUTS[@]}"
PKCS11SPY=$SOFTHSM_MODULE PKCS11SPY_OUTPUT=$TEST_TMP/spy-decrypt.log expect_exit 0 \
    "$P11SMIME" decrypt --module "$PKCS11_SPY_MODULE" --pin-file "$PIN_FILE" --jobs 1 \
    --out-dir "$TEST_TMP/decrypted-1" "$TEST_TMP"/encrypted/*.eml
logins=$(count_calls C_Login "$TEST_TMP/spy-decrypt.log")
[[ $logins == 1 ]] || fail "decrypting a batch made $logins C_Login calls, expected 1"
expect_exit 0 "$P11SMIME" decrypt --module "$SOFTHSM_MODULE" --key "$KEY" \
    --pin-file "$PIN_FILE" --jobs 4 --out-dir "$TEST_TMP/decrypted-4" "$TEST_TMP"/encrypted/*.eml
for input in "${INPUTS[@]}"; do
    name=$(basename -- "$input")
    same_decoded_body "$input" "$TEST_TMP/decrypted-1/$name" ||
        fail "decrypted $name does not decode to the body that was encrypted"
    cmp -s -- "$TEST_TMP/decrypted-1/$name" "$TEST_TMP/decrypted-4/$name" ||
        fail "decrypted $name differs between --jobs 1 and --jobs 4"
done

step "usage errors: missing folder, clashing names, --in with files"
expect_exit 2 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "$KEY" --pin-file "$PIN_FILE" \
    --out-dir "$TEST_TMP/no-such-folder" "${INPUTS[0]}"
expect_p11smime_error "$TEST_TMP/no-such-folder"
mkdir -p "$TEST_TMP/other"
cp -- "${INPUTS[0]}" "$TEST_TMP/other/"
expect_exit 2 "$P11SMIME" encrypt --recipient "$HSM_DIR/certs/rsa2048.pem" \
    --out-dir "$TEST_TMP/encrypted" "${INPUTS[0]}" "$TEST_TMP/other/$(basename -- "${INPUTS[0]}")"
expect_p11smime_error "would both be written to"
expect_exit 2 "$P11SMIME" encrypt --recipient "$HSM_DIR/certs/rsa2048.pem" \
    --out-dir "$TEST_TMP/in" "${INPUTS[0]}"
expect_p11smime_error "would replace the input"
expect_exit 2 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "$KEY" --pin-file "$PIN_FILE" \
    --in "${INPUTS[0]}" --out-dir "$TEST_TMP/signed-mixed" "${INPUTS[1]}"
expect_p11smime_error "--in and --out cannot be combined with input files"
expect_exit 2 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "$KEY" --pin-file "$PIN_FILE" \
    "${INPUTS[0]}"
expect_p11smime_error "--out-dir"
expect_exit 2 "$P11SMIME" sign --module "$SOFTHSM_MODULE" --key "$KEY" --pin-file "$PIN_FILE" \
    --jobs 0 --out-dir "$TEST_TMP/signed-mixed" "${INPUTS[0]}"

echo "PASS: $TEST_NAME"
