#!/usr/bin/env bash
# Measures messages per second through p11smime-milter behind a private Postfix on loopback,
# with 1, 4 and 16 concurrent SMTP clients (Postfix's smtp-source), and the milter's peak
# memory (VmHWM). Prints a Markdown table for docs/benchmarks.md. Not a test: it checks only
# that the mail arrived, and signed.
#
#   bench/milter-bench.sh            # after a build in build/
#   MESSAGES=1000 bench/milter-bench.sh
#
# Each row sends MESSAGES messages. The rate is MESSAGES divided by the time smtp-source took,
# and smtpd replies to each DATA only after the milter has finished with the message. Runs as
# root (Postfix needs it) and only on 127.0.0.1.
set -euo pipefail

SOURCE_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
export SOURCE_DIR
source "$SOURCE_DIR/tests/integration/lib.sh"
source "$SOURCE_DIR/tests/integration/lib-postfix.sh"

: "${MESSAGES:=1000}"
readonly CLIENT_COUNTS=(1 4 16)

require_p11smime
require_milter
require_postfix
prepare_mail_test
setup_token

# FILTER_PORT's smtpd talks to the milter over a unix socket, INET_FILTER_PORT's over TCP,
# and DIRECT_PORT's smtpd runs no milter.
DIRECT_PORT=$(free_port)
INET_FILTER_PORT=$(free_port)
MILTER_SOCKET_PATH=$TEST_TMP/milter/milter.sock
MILTER_SOCKET=unix:$MILTER_SOCKET_PATH
mkdir -p "$TEST_TMP/milter"
chmod 0755 "$TEST_TMP/milter"
EXTRA_MASTER_CF="127.0.0.1:$DIRECT_PORT inet n - n - - smtpd
  -o content_filter=
127.0.0.1:$INET_FILTER_PORT inet n - n - - smtpd
  -o content_filter=
  -o smtpd_milters=inet:127.0.0.1:$MILTER_PORT"

# write_bench_config FILE SOCKET
write_bench_config() {
    cat >"$1" <<EOF
socket = $2
module = $SOFTHSM_MODULE
token = pkcs11:token=p11smime-test
pin_file = $PIN_FILE
sessions = 16
authserv_id = gateway.test

[sign]
senders = rsa2048@example.org
key = pkcs11:object=rsa2048

[decrypt]
recipients = rsa3072@example.org
key = pkcs11:object=rsa3072

[verify]
ca_file = $CA_FILE
system_ca = no
EOF
}
write_bench_config "$TEST_TMP/milter.conf" "$MILTER_SOCKET"
write_bench_config "$TEST_TMP/milter-inet.conf" "inet:$MILTER_PORT@127.0.0.1"

# A 2 KB text message, and the same encrypted to rsa3072 after signing with p256.
write_bench_message() {
    {
        printf 'From: Bench <%s>\nTo: <%s>\nSubject: bench\n' "$2" "$3"
        printf 'MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n'
        for line in $(seq 1 30); do
            printf 'Line %02d of the benchmark message, plain ASCII text to be signed.\n' "$line"
        done
    } >"$1"
}
write_bench_message "$TEST_TMP/plain.eml" rsa2048@example.org carol@example.net
write_bench_message "$TEST_TMP/inner.eml" p256@example.org rsa3072@example.org
"$P11SMIME" sign --key "${KEY_URI[p256]}" --pin-file "$PIN_FILE" --in "$TEST_TMP/inner.eml" \
    --out "$TEST_TMP/inner-signed.eml"
"$P11SMIME" encrypt --recipient "$HSM_DIR/certs/rsa3072.pem" --in "$TEST_TMP/inner-signed.eml" \
    --out "$TEST_TMP/encrypted.eml"

start_sink
start_postfix
start_milter "$TEST_TMP/milter.conf" "$MILTER_SOCKET_PATH"

peak_memory_kib() {
    awk '/^VmHWM:/ { print $2 }' "/proc/$MILTER_PID/status"
}

# run_case NAME PORT FILE FROM TO CLIENTS: print one table row.
run_case() {
    local name=$1 port=$2 file=$3 from=$4 to=$5 clients=$6
    local before started finished seconds rate
    before=$(sink_count)
    started=$(date +%s.%N)
    smtp-source -s "$clients" -m "$MESSAGES" -F "$file" -f "$from" -t "$to" -M client.test \
        "127.0.0.1:$port"
    finished=$(date +%s.%N)
    wait_for_sink $((before + MESSAGES)) 300 || fail "$name: not all messages were delivered"
    seconds=$(awk -v a="$started" -v b="$finished" 'BEGIN { print b - a }')
    rate=$(awk -v n="$MESSAGES" -v s="$seconds" 'BEGIN { print n / s }')
    printf '| %s | %d | %d | %.1f | %.0f | %d |\n' "$name" "$clients" "$MESSAGES" "$seconds" \
        "$rate" "$(($(peak_memory_kib) / 1024))"
}

echo "| workload | clients | messages | seconds | messages/s | milter peak MiB |"
echo "|---|---|---|---|---|---|"
for clients in "${CLIENT_COUNTS[@]}"; do
    run_case "no milter (Postfix alone)" "$DIRECT_PORT" "$TEST_TMP/plain.eml" \
        rsa2048@example.org carol@example.net "$clients"
done
for clients in "${CLIENT_COUNTS[@]}"; do
    run_case "sign, RSA-2048" "$FILTER_PORT" "$TEST_TMP/plain.eml" \
        rsa2048@example.org carol@example.net "$clients"
done
for clients in "${CLIENT_COUNTS[@]}"; do
    run_case "decrypt RSA-3072, verify P-256" "$FILTER_PORT" "$TEST_TMP/encrypted.eml" \
        p256@example.org rsa3072@example.org "$clients"
done

# The same signing over TCP, in a new milter process for its own peak memory.
stop_milter
start_milter "$TEST_TMP/milter-inet.conf"
for clients in "${CLIENT_COUNTS[@]}"; do
    run_case "sign, RSA-2048, milter over TCP" "$INET_FILTER_PORT" "$TEST_TMP/plain.eml" \
        rsa2048@example.org carol@example.net "$clients"
done

# Sanity check: a delivered signed message verifies.
signed=$(grep -rlF 'multipart/signed' "$SINK_DIR" | head -n 1 || true)
extract_sink_message "$signed" "$TEST_TMP/signed-sample.eml"
"$P11SMIME" verify --ca-file "$CA_FILE" --no-system-ca --no-sender-check \
    --in "$TEST_TMP/signed-sample.eml" >/dev/null 2>&1 ||
    fail "a delivered message does not verify"
echo
echo "milter temporary failures during the run: $(grep -c 'result=tempfail' "$MILTER_LOG" || true)"
