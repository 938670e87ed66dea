#!/usr/bin/env bash
# p11smime-milter behind a real Postfix on loopback. Outbound mail is signed (checked with
# OpenSSL and gpgsm), and inbound encrypted mail arrives decrypted with its inner signature
# verified. Mail sent while the token is unavailable is deferred, then delivered signed once
# the token is back. Also checks SIGHUP reload and SIGTERM.
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname -- "${BASH_SOURCE[0]}")/lib-postfix.sh"

require_p11smime
require_milter
require_postfix
require_command openssl gpgsm
prepare_mail_test
setup_token
setup_gpgsm_home "$CA_FILE"

# Seconds to wait for Postfix to deliver; retries come every 2 to 4 s.
readonly DELIVERY_TIMEOUT=90
readonly P256_IDENTIFIER=body.smime-identifier=p256@example.org

write_milter_config() {
    local senders=$1
    cat >"$TEST_TMP/milter.conf" <<EOF
# p11smime-milter test configuration
socket = inet:$MILTER_PORT@127.0.0.1
module = $SOFTHSM_MODULE
token = pkcs11:token=p11smime-test
pin_file = $PIN_FILE
sessions = 4
authserv_id = gateway.test
retry_initial = 1
retry_max = 2

[sign]
senders = $senders
key = pkcs11:object=rsa2048

[decrypt]
recipients = rsa3072@example.org
key = pkcs11:object=rsa3072

[verify]
ca_file = $CA_FILE
system_ca = no
EOF
}

# write_message FILE FROM TO MESSAGE_ID [EXTRA_HEADER]
write_message() {
    {
        printf 'From: Test Sender <%s>\n' "$2"
        printf 'To: <%s>\n' "$3"
        printf 'Subject: milter test %s\n' "$4"
        printf 'Date: Thu, 03 Dec 2026 10:00:00 +0000\n'
        printf 'Message-ID: <%s>\n' "$4"
        [[ -n ${5:-} ]] && printf '%s\n' "$5"
        printf 'MIME-Version: 1.0\n'
        printf 'Content-Type: text/plain; charset=utf-8\n'
        printf 'Content-Transfer-Encoding: 8bit\n\n'
        printf 'Hello,\n\nGrüße aus Köln, message %s.\nThis line ends in two spaces.  \n' "$4"
    } >"$1"
}

# delivered MESSAGE_ID OUT: copy the delivered message with this Message-ID to OUT.
delivered() {
    local dump
    dump=$(find_sink_message "$1")
    [[ -n $dump ]] || fail "message $1 was not delivered to smtp-sink"
    extract_sink_message "$dump" "$2"
}

# check_signed FILE SIGNER: the message is multipart/signed by SIGNER's certificate, and
# p11smime, OpenSSL and gpgsm each verify it.
check_signed() {
    local file=$1 signer=$2
    grep -qi '^Content-Type: multipart/signed' "$file" || fail "$file is not multipart/signed"
    expect_exit 0 "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca --json --in "$file"
    expect_stdout_contains "$signer@example.org"

    expect_exit 0 openssl smime -verify -CAfile "$CA_FILE" -purpose any -in "$file" \
        -out "$file.content"
    grep -q 'Grüße aus Köln' "$file.content" ||
        grep -q 'Gr=C3=BC=C3=9Fe' "$file.content" || fail "$file: signed text was changed"

    extract_detached_parts "$file" "$file.signed-part" "$file.p7s" ||
        fail "cannot split $file"
    gpgsm_verify "$file.p7s" "$file.signed-part" || fail "gpgsm rejects the signature of $file"
}

step "start smtp-sink, Postfix and the milter"
start_sink
start_postfix
write_milter_config rsa2048@example.org
start_milter "$TEST_TMP/milter.conf"
grep -q 'event=start' "$MILTER_LOG" || fail "the milter logged no start line"
grep -q 'event=token-open' "$MILTER_LOG" || fail "the milter did not open the token keys"

step "outbound mail from a sign rule's sender is signed"
write_message "$TEST_TMP/out.eml" rsa2048@example.org carol@example.net out-1@example.org
send_mail "$TEST_TMP/out.eml" carol@example.net
wait_for_sink 1 "$DELIVERY_TIMEOUT" || fail "outbound message was not delivered"
delivered out-1@example.org "$TEST_TMP/out-delivered.eml"
check_signed "$TEST_TMP/out-delivered.eml" rsa2048
grep -q '^Subject: milter test out-1@example.org' "$TEST_TMP/out-delivered.eml" ||
    fail "the Subject header did not survive signing"
grep -Eq 'queue_id=[0-9A-F]+ action=sign result=signed' "$MILTER_LOG" ||
    fail "the milter did not log the queue id with action and result"

step "inbound encrypted mail arrives decrypted, its inner signature verified"
write_message "$TEST_TMP/in.eml" p256@example.org rsa3072@example.org in-1@example.org
expect_exit 0 "$P11SMIME" sign --key "${KEY_URI[p256]}" --pin-file "$PIN_FILE" \
    --in "$TEST_TMP/in.eml" --out "$TEST_TMP/in-signed.eml"
expect_exit 0 "$P11SMIME" encrypt --recipient "$HSM_DIR/certs/rsa3072.pem" \
    --in "$TEST_TMP/in-signed.eml" --out "$TEST_TMP/in-encrypted.eml"
grep -qi 'enveloped-data' "$TEST_TMP/in-encrypted.eml" || fail "the test message is not encrypted"
send_mail "$TEST_TMP/in-encrypted.eml" rsa3072@example.org
wait_for_sink 2 "$DELIVERY_TIMEOUT" || fail "inbound message was not delivered"
delivered in-1@example.org "$TEST_TMP/in-delivered.eml"
grep -qi 'pkcs7-mime' "$TEST_TMP/in-delivered.eml" && fail "inbound message is still encrypted"
grep -q '^X-P11SMIME-Decrypted: gateway.test; layer=enveloped-data; .*signature=pass' \
    "$TEST_TMP/in-delivered.eml" || fail "no X-P11SMIME-Decrypted header with signature=pass"
grep -q "^Authentication-Results: gateway.test; smime=pass $P256_IDENTIFIER" \
    "$TEST_TMP/in-delivered.eml" || fail "no Authentication-Results header for the signature"
expect_exit 0 "$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca \
    --in "$TEST_TMP/in-delivered.eml" --out "$TEST_TMP/in-content.eml"
grep -q 'Grüße aus Köln, message in-1@example.org' "$TEST_TMP/in-content.eml" ||
    grep -q 'message in-1@example.org' "$TEST_TMP/in-content.eml" ||
    fail "decrypted text differs from the text sent"

step "inbound signed mail gets a verification result; a forged one is removed"
write_message "$TEST_TMP/verify.eml" p256@example.org dave@example.net verify-1@example.org \
    "Authentication-Results: gateway.test; smime=pass body.smime-identifier=forged@example.org"
expect_exit 0 "$P11SMIME" sign --key "${KEY_URI[p256]}" --pin-file "$PIN_FILE" \
    --in "$TEST_TMP/verify.eml" --out "$TEST_TMP/verify-signed.eml"
send_mail "$TEST_TMP/verify-signed.eml" dave@example.net
wait_for_sink 3 "$DELIVERY_TIMEOUT" || fail "signed inbound message was not delivered"
delivered verify-1@example.org "$TEST_TMP/verify-delivered.eml"
grep -q 'forged@example.org' "$TEST_TMP/verify-delivered.eml" &&
    fail "a forged Authentication-Results header was delivered"
grep -q "^Authentication-Results: gateway.test; smime=pass $P256_IDENTIFIER" \
    "$TEST_TMP/verify-delivered.eml" || fail "no smime=pass result on the signed message"

step "with the token unavailable, mail is deferred, then delivered signed"
# SoftHSM keeps each token in a folder under its tokendir. Moving that folder away makes
# every operation on the open key fail (CKR_OBJECT_HANDLE_INVALID), even after the folder
# returns, until the module is loaded again. A new context finds no token meanwhile. As
# with a removed card or a restarted HSM, the milter must log in again on a new context.
token_folder=$(find "$HSM_DIR/tokens" -mindepth 1 -maxdepth 1 -type d)
mv "$token_folder" "$HSM_DIR/token-away"
before=$(sink_count)
outage_ids=()
for n in 1 2 3 4 5; do
    write_message "$TEST_TMP/outage-$n.eml" rsa2048@example.org carol@example.net \
        "outage-$n@example.org"
    send_mail "$TEST_TMP/outage-$n.eml" carol@example.net
    outage_ids+=("outage-$n@example.org")
done
deadline=$((SECONDS + DELIVERY_TIMEOUT))
while (($(grep -c 'status=deferred.*451 4.7.0' "$POSTFIX_DIR/maillog" || true) < 5)); do
    ((SECONDS < deadline)) || fail "Postfix did not defer the 5 messages with 451 4.7.0"
    sleep 0.5
done
(($(sink_count) == before)) || fail "mail was delivered while the token was unavailable"
grep -q 'event=token-lost' "$MILTER_LOG" || fail "the milter did not log the token loss"
# Deferred mail moves to the active queue for each retry, so count the whole queue.
queued=$(postqueue -c "$POSTFIX_DIR" -j | grep -c '"queue_name"' || true)
((queued == 5)) || fail "expected 5 messages in the queue, found $queued"
sleep 3 # a few failed recovery attempts, with backoff
grep -q 'event=token-retry' "$MILTER_LOG" || fail "the milter did not retry the token"

mv "$HSM_DIR/token-away" "$token_folder"
wait_for_sink $((before + 5)) "$DELIVERY_TIMEOUT" ||
    fail "deferred mail was not delivered after the token returned"
grep -q 'event=token-recovered' "$MILTER_LOG" || fail "the milter did not log the recovery"
for id in "${outage_ids[@]}"; do
    count=$(grep -rlF -- "Message-ID: <$id>" "$SINK_DIR" | wc -l)
    ((count == 1)) || fail "message $id was delivered $count times"
    delivered "$id" "$TEST_TMP/$id.eml"
    check_signed "$TEST_TMP/$id.eml" rsa2048
done
[[ -z $(postqueue -c "$POSTFIX_DIR" -j) ]] || fail "mail is left in the queue"

step "SIGHUP reloads the configuration; an invalid one is rejected and the old one kept"
write_milter_config "rsa2048@example.org, example.com"
sed -i 's/^sessions = 4$/sessions = many/' "$TEST_TMP/milter.conf"
bad_line=$(grep -n '^sessions = many$' "$TEST_TMP/milter.conf" | cut -d: -f1)
kill -HUP "$MILTER_PID"
deadline=$((SECONDS + 10))
until grep -q 'event=reload result=failed' "$MILTER_LOG"; do
    ((SECONDS < deadline)) || fail "no reload failure logged for an invalid configuration"
    sleep 0.2
done
grep -q "milter.conf:$bad_line: setting 'sessions' is 'many', not a number from 1 to 16" \
    "$MILTER_LOG" ||
    fail "the reload error does not name the file, line and setting"
kill -0 "$MILTER_PID" || fail "the milter exited on an invalid reload"

write_milter_config "rsa2048@example.org, example.com"
kill -HUP "$MILTER_PID"
deadline=$((SECONDS + 10))
until grep -q 'event=reload result=ok' "$MILTER_LOG"; do
    ((SECONDS < deadline)) || fail "no successful reload logged"
    sleep 0.2
done
before=$(sink_count)
write_message "$TEST_TMP/reload.eml" someone@example.com carol@example.net reload-1@example.org
send_mail "$TEST_TMP/reload.eml" carol@example.net
wait_for_sink $((before + 1)) "$DELIVERY_TIMEOUT" || fail "mail after reload was not delivered"
delivered reload-1@example.org "$TEST_TMP/reload-delivered.eml"
grep -qi '^Content-Type: multipart/signed' "$TEST_TMP/reload-delivered.eml" ||
    fail "the reloaded sign rule for example.com was not applied"

step "SIGTERM finishes the message in flight, then exits"
# The client opens the SMTP session (and so smtpd's milter connection) and sends MAIL and
# RCPT, the milter gets SIGTERM, and only then the client sends DATA.
write_message "$TEST_TMP/last.eml" rsa2048@example.org carol@example.net last-1@example.org
before=$(sink_count)
python3 - "$FILTER_PORT" "$MILTER_PID" "$TEST_TMP/last.eml" <<'PY' ||
import os
import signal
import smtplib
import sys
import time

port, pid, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
client = smtplib.SMTP("127.0.0.1", port, timeout=60)
client.ehlo("client.test")
client.mail("rsa2048@example.org")
client.rcpt("carol@example.net")
os.kill(pid, signal.SIGTERM)
time.sleep(1)
code, reply = client.data(open(path, "rb").read())
client.quit()
if code != 250:
    sys.exit(f"DATA after SIGTERM got {code} {reply!r}, expected 250")
PY
    fail "the message in flight at SIGTERM was not accepted"
status=0
wait "$MILTER_PID" || status=$?
MILTER_PID=
[[ $status == 0 ]] || fail "the milter exited with $status on SIGTERM"
grep -q 'event=stopped messages_cut_off=0' "$MILTER_LOG" || fail "the milter logged no clean stop"
stop_line=$(grep -n 'event=stop signal=SIGTERM' "$MILTER_LOG" | cut -d: -f1)
signed_line=$(grep -n 'action=sign result=signed' "$MILTER_LOG" | tail -n 1 | cut -d: -f1)
((signed_line > stop_line)) || fail "the last message was not signed after SIGTERM"
wait_for_sink $((before + 1)) "$DELIVERY_TIMEOUT" || fail "the last message was not delivered"
delivered last-1@example.org "$TEST_TMP/last-delivered.eml"
check_signed "$TEST_TMP/last-delivered.eml" rsa2048
grep -q '123456' "$MILTER_LOG" && fail "the PIN appears in the milter log"
grep -q 'Grüße' "$MILTER_LOG" && fail "message content appears in the milter log"

echo "PASS: $TEST_NAME"
