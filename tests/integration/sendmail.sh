#!/usr/bin/env bash
# `p11smime sendmail` called directly: argument pass-through, -i, -t, the encryption modes,
# the configuration file, and the failures that must leave the message unsent.
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command openssl
make_test_dir
setup_token

export HOME=$TEST_TMP/home
mkdir -p -- "$HOME"
export P11SMIME_MODULE=$SOFTHSM_MODULE
OUTBOX=$TEST_TMP/outbox
mkdir -p -- "$OUTBOX"

cat >"$TEST_TMP/sendmail" <<EOF
#!/bin/sh
n=\$(find "$OUTBOX" -name '*.eml' | wc -l)
printf '%s\n' "\$@" >"$OUTBOX/\$n.args"
cat >"$OUTBOX/\$n.eml"
exit \${FAKE_SENDMAIL_STATUS:-0}
EOF
chmod +x "$TEST_TMP/sendmail"

CERT_DIR=$TEST_TMP/certs
mkdir -p -- "$CERT_DIR"
cp -- "$HSM_DIR/certs/rsa2048.pem" "$HSM_DIR/certs/expired.pem" "$CERT_DIR/"

wrapper=("$P11SMIME" sendmail --pin-file "$PIN_FILE" --sendmail "$TEST_TMP/sendmail")

sent_count() {
    find "$OUTBOX" -name '*.eml' | wc -l
}

expect_sent_count() {
    [[ $(sent_count) == "$1" ]] || fail "sendmail was called $(sent_count) times, not $1"
}

printf '%s\n' "From: Test Signer <p256@example.org>" "To: rsa2048@example.org" \
    "Cc: expired@example.org" "Bcc: rsa2048@example.org" "Subject: wrapper test" "" \
    "first line" "." "after the dot" >"$TEST_TMP/message.eml"

step "the whole message is signed, sendmail gets -i and the arguments as given"
expect_exit 0 "${wrapper[@]}" -f p256@example.org -- rsa2048@example.org <"$TEST_TMP/message.eml"
expect_sent_count 1
[[ $(cat "$OUTBOX/0.args") == $'-i\n-f\np256@example.org\n--\nrsa2048@example.org' ]] ||
    fail "sendmail got the arguments '$(tr '\n' ' ' <"$OUTBOX/0.args")'"
expect_exit 0 "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca --in "$OUTBOX/0.eml" \
    --out "$TEST_TMP/verified.eml"
grep -q '^after the dot$' "$TEST_TMP/verified.eml" || fail "the text after the lone dot was lost"
expect_exit 0 openssl smime -verify -in "$OUTBOX/0.eml" -CAfile "$CA_FILE" -purpose smimesign \
    -out /dev/null

step "with -oi, no -i is added"
expect_exit 0 "${wrapper[@]}" -oi rsa2048@example.org <"$TEST_TMP/message.eml"
[[ $(cat "$OUTBOX/1.args") == $'-oi\nrsa2048@example.org' ]] ||
    fail "sendmail got the arguments '$(tr '\n' ' ' <"$OUTBOX/1.args")'"

step "--key names the signing key"
expect_exit 0 "${wrapper[@]}" --key "${KEY_URI[rsa2048]}" -oi rsa2048@example.org \
    <"$TEST_TMP/message.eml"
expect_exit 0 "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca --no-sender-check \
    --in "$OUTBOX/2.eml"
expect_stdout_contains "CN=rsa2048 test signer"

step "sendmail's exit status is passed through"
FAKE_SENDMAIL_STATUS=75 expect_exit 75 "${wrapper[@]}" -oi rsa2048@example.org \
    <"$TEST_TMP/message.eml"
expect_sent_count 4

step "-t with if-possible: a recipient with an expired certificate gets a signed message"
expect_exit 0 "${wrapper[@]}" --encrypt if-possible --cert-dir "$CERT_DIR" -t -oi \
    <"$TEST_TMP/message.eml"
expect_sent_count 5
expect_stderr_contains "p11smime: warning: sending signed but not encrypted"
expect_stderr_contains "expired@example.org"
grep -q '^Content-Type: multipart/signed' "$OUTBOX/4.eml" || fail "the message is not signed"

step "-t with always and a recipient without a usable certificate: nothing is sent"
expect_exit 1 "${wrapper[@]}" --encrypt always --cert-dir "$CERT_DIR" -t -oi \
    <"$TEST_TMP/message.eml"
expect_sent_count 5
expect_p11smime_error "not sent: no usable certificate"

step "the configuration file sets encryption, and every recipient has a certificate"
printf '%s\n' "# comment" "encrypt = always" "cert-dir = $CERT_DIR" "pin-file = $PIN_FILE" \
    "sendmail = $TEST_TMP/sendmail" >"$TEST_TMP/sendmail.conf"
expect_exit 0 "$P11SMIME" sendmail --config "$TEST_TMP/sendmail.conf" -oi rsa2048@example.org \
    <"$TEST_TMP/message.eml"
expect_sent_count 6
grep -q '^Content-Type: application/pkcs7-mime; smime-type=enveloped-data' "$OUTBOX/5.eml" ||
    fail "the message is not encrypted"
expect_exit 0 "$P11SMIME" decrypt --key "${KEY_URI[rsa2048]}" --pin-file "$PIN_FILE" \
    --ca-file "$CA_FILE" --no-system-ca --in "$OUTBOX/5.eml" --out "$TEST_TMP/decrypted.eml"
grep -q '^after the dot$' "$TEST_TMP/decrypted.eml" || fail "the decrypted text was changed"

step "the default configuration file is read from XDG_CONFIG_HOME"
mkdir -p -- "$TEST_TMP/xdg/p11smime"
cp -- "$TEST_TMP/sendmail.conf" "$TEST_TMP/xdg/p11smime/sendmail.conf"
XDG_CONFIG_HOME=$TEST_TMP/xdg expect_exit 0 "$P11SMIME" sendmail -oi rsa2048@example.org \
    <"$TEST_TMP/message.eml"
expect_sent_count 7
grep -q 'smime-type=enveloped-data' "$OUTBOX/6.eml" || fail "the default file was not read"

step "failures that leave the message unsent"
printf '%s\n' "From: Nobody <nobody@example.org>" "Subject: no key" "" "text" \
    >"$TEST_TMP/no-key.eml"
expect_exit 2 "${wrapper[@]}" -oi rsa2048@example.org <"$TEST_TMP/no-key.eml"
expect_p11smime_error "no token certificate valid now has the From address nobody@example.org"
expect_exit 2 "${wrapper[@]}" -bs <"$TEST_TMP/message.eml"
expect_p11smime_error "does not submit a message"
expect_exit 2 "$P11SMIME" sendmail --pin-file "$PIN_FILE" --sendmail "$TEST_TMP/missing" -oi \
    rsa2048@example.org <"$TEST_TMP/message.eml"
expect_p11smime_error "cannot run '$TEST_TMP/missing'"
printf 'colour = blue\n' >"$TEST_TMP/bad.conf"
expect_exit 2 "$P11SMIME" sendmail --config "$TEST_TMP/bad.conf" -oi rsa2048@example.org \
    <"$TEST_TMP/message.eml"
expect_p11smime_error "colour"
printf '%s\n' "From: Test Signer <p256@example.org>" "X-P11smime-Encrypt: maybe" "" "text" \
    >"$TEST_TMP/bad-header.eml"
expect_exit 2 "${wrapper[@]}" -oi rsa2048@example.org <"$TEST_TMP/bad-header.eml"
expect_p11smime_error "invalid value 'maybe'"
expect_sent_count 7

step "--help describes the wrapper"
expect_exit 0 "$P11SMIME" sendmail --help
expect_stdout_contains "--encrypt"
expect_stdout_contains "--config"
expect_exit 0 "$P11SMIME" --help
expect_stdout_contains "sendmail"

echo "PASS: $TEST_NAME"
