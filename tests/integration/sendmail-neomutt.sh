#!/usr/bin/env bash
# neomutt in batch mode sends through `p11smime sendmail` to a sendmail stand-in that writes
# its arguments and the message to files. The messages are then checked: signed ones with
# p11smime verify and openssl smime, encrypted ones by decrypting on the token. A failed
# signature must stop the message before sendmail, and sendmail's exit status must reach
# neomutt.
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command neomutt openssl
make_test_dir
setup_token

export HOME=$TEST_TMP/home
mkdir -p -- "$HOME"
export P11SMIME_MODULE=$SOFTHSM_MODULE
OUTBOX=$TEST_TMP/outbox
mkdir -p -- "$OUTBOX"

# The stand-in records each call; FAKE_SENDMAIL_STATUS sets its exit status.
cat >"$TEST_TMP/sendmail" <<EOF
#!/bin/sh
n=\$(find "$OUTBOX" -name '*.eml' | wc -l)
printf '%s\n' "\$@" >"$OUTBOX/\$n.args"
cat >"$OUTBOX/\$n.eml"
exit \${FAKE_SENDMAIL_STATUS:-0}
EOF
chmod +x "$TEST_TMP/sendmail"

# Recipient certificates for encryption: the token's own, so the test can decrypt.
CERT_DIR=$TEST_TMP/certs
mkdir -p -- "$CERT_DIR"
cp -- "$HSM_DIR/certs/rsa2048.pem" "$HSM_DIR/certs/p384.pem" "$CERT_DIR/"

# The documented configuration: the wrapper's file and neomutt's $sendmail.
cat >"$TEST_TMP/sendmail.conf" <<EOF
# p11smime sendmail settings for the test
pin-file = $PIN_FILE
sendmail = $TEST_TMP/sendmail
cert-dir = $CERT_DIR
EOF
cat >"$TEST_TMP/muttrc" <<EOF
set from = "Test Signer <p256@example.org>"
set use_from = yes
set sendmail = "$P11SMIME sendmail --config $TEST_TMP/sendmail.conf -oem -oi"
set record = ""
set copy = no
set charset = "utf-8"
set send_charset = "utf-8"
EOF

# The body has 8-bit text, trailing spaces and a line holding a lone "." that must survive.
printf '%s\n' "Grüße aus Köln" "." "line with two trailing spaces  " "end" >"$TEST_TMP/body.txt"

# Send a message with neomutt: send_with_neomutt STATUS SUBJECT [neomutt -e command...] -- RCPT...
send_with_neomutt() {
    local expected=$1 subject=$2
    shift 2
    local commands=()
    while [[ $1 != -- ]]; do
        commands+=(-e "$1")
        shift
    done
    expect_exit "$expected" neomutt -n -F "$TEST_TMP/muttrc" "${commands[@]}" \
        -s "$subject" "$@" <"$TEST_TMP/body.txt"
}

sent_count() {
    find "$OUTBOX" -name '*.eml' | wc -l
}

check_body() {
    local content=$1
    python3 - "$content" "$TEST_TMP/body.txt" <<'PY'
import email
import email.policy
import sys

message = email.message_from_bytes(open(sys.argv[1], "rb").read(), policy=email.policy.default)
expected = open(sys.argv[2], encoding="utf-8").read()
body = message.get_content()
if body.replace("\r\n", "\n") != expected:
    sys.exit(f"body changed: {body!r} != {expected!r}")
PY
}

step "neomutt sends a signed message through the wrapper"
send_with_neomutt 0 "signed by p11smime" -- rsa2048@example.org
[[ $(sent_count) == 1 ]] || fail "the sendmail stand-in was called $(sent_count) times, not once"
[[ $(cat "$OUTBOX/0.args") == $'-oem\n-oi\n--\nrsa2048@example.org' ]] ||
    fail "sendmail got the arguments '$(tr '\n' ' ' <"$OUTBOX/0.args")'"
grep -q '^Content-Type: multipart/signed; protocol="application/pkcs7-signature";' \
    "$OUTBOX/0.eml" || fail "the sent message is not multipart/signed"
grep -q '^Subject: signed by p11smime$' "$OUTBOX/0.eml" || fail "the Subject header is missing"
expect_exit 0 "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca --in "$OUTBOX/0.eml" \
    --out "$TEST_TMP/verified.eml"
expect_stdout_contains "CN=p256 test signer"
check_body "$TEST_TMP/verified.eml" || fail "the verified body differs from what neomutt got"
expect_exit 0 openssl smime -verify -in "$OUTBOX/0.eml" -CAfile "$CA_FILE" -purpose smimesign \
    -out "$TEST_TMP/openssl-content.eml"

step "a header from neomutt asks for encryption, and the wrapper removes it"
send_with_neomutt 0 "encrypted by p11smime" "my_hdr X-P11smime-Encrypt: always" \
    -- rsa2048@example.org p384@example.org
[[ $(sent_count) == 2 ]] || fail "the encrypted message was not sent"
grep -q '^Content-Type: application/pkcs7-mime; smime-type=enveloped-data' "$OUTBOX/1.eml" ||
    fail "the sent message is not enveloped-data"
if grep -qi '^X-P11smime-Encrypt' "$OUTBOX/1.eml"; then
    fail "the X-P11smime-Encrypt header was sent"
fi
if grep -q 'Köln\|R3LDvMOfZSBhdXMgS8O2bG4' "$OUTBOX/1.eml"; then
    fail "the body is readable in the encrypted message"
fi
expect_exit 0 "$P11SMIME" decrypt --key "${KEY_URI[p384]}" --pin-file "$PIN_FILE" \
    --ca-file "$CA_FILE" --no-system-ca --in "$OUTBOX/1.eml" --out "$TEST_TMP/decrypted.eml"
expect_stderr_contains "CN=p256 test signer"
check_body "$TEST_TMP/decrypted.eml" || fail "the decrypted body differs from what neomutt got"

step "encryption is required and a recipient has no certificate: nothing is sent"
send_with_neomutt 1 "not sent" "my_hdr X-P11smime-Encrypt: always" \
    -- rsa2048@example.org stranger@example.net
[[ $(sent_count) == 2 ]] || fail "a message went out without encryption"
expect_stderr_contains "no usable certificate in '$CERT_DIR' for stranger@example.net"

step "a wrong PIN stops the message before sendmail"
printf '000000\n' >"$TEST_TMP/wrong-pin.txt"
send_with_neomutt 1 "wrong PIN" "set sendmail='$P11SMIME sendmail --config $TEST_TMP/sendmail.conf --pin-file $TEST_TMP/wrong-pin.txt -oem -oi'" \
    -- rsa2048@example.org
[[ $(sent_count) == 2 ]] || fail "a message went out unsigned after a wrong PIN"
expect_stderr_contains "CKR_PIN_INCORRECT"

step "sendmail's failure reaches neomutt"
FAKE_SENDMAIL_STATUS=75 send_with_neomutt 1 "temporary failure" -- rsa2048@example.org
[[ $(sent_count) == 3 ]] || fail "the stand-in was not called"
expect_stderr_contains "75"

echo "PASS: $TEST_NAME"
