# Helpers for tests that run p11smime-milter behind a private Postfix instance on loopback.
# Source lib.sh first, then this file. Nothing here touches the system Postfix: the instance
# has its own main.cf, master.cf, queue and data directories under TEST_TMP, and the test
# stops it, the milter and smtp-sink on exit, also when it fails.
#
# EXTRA_MASTER_CF, when set, is appended to master.cf.
#
# Mail flow: swaks -> smtpd on SUBMIT_PORT -> queue -> smtp client "milterhop" -> smtpd on
# FILTER_PORT, which runs the milter -> queue -> smtp-sink on SINK_PORT, which writes each
# message to a file. The first hop queues the mail as a sending MTA would, so a temporary
# failure from the milter leaves it deferred in the queue, and Postfix retries it.
#
# shellcheck shell=bash
# shellcheck disable=SC2034

readonly MILTER_BIN_DEFAULT=$SOURCE_DIR/build/milter/p11smime-milter
POSTFIX_DIR=
MILTER_PID=
SINK_PID=

require_postfix() {
    [[ $EUID == 0 ]] || skip "a private Postfix instance needs root to start"
    require_command postfix postconf postqueue smtp-sink swaks python3
    id postfix >/dev/null 2>&1 || skip "the postfix user does not exist"
}

require_milter() {
    : "${P11SMIME_MILTER:=$MILTER_BIN_DEFAULT}"
    [[ -x $P11SMIME_MILTER ]] || skip "p11smime-milter is not built at $P11SMIME_MILTER"
}

# Print a TCP port on 127.0.0.1 that is free now.
free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Stop the milter, Postfix and smtp-sink that this test started, by process id.
stop_mail_services() {
    if [[ -n $POSTFIX_DIR && -f $POSTFIX_DIR/main.cf ]]; then
        postfix -c "$POSTFIX_DIR" stop >/dev/null 2>&1 || true
        local master_pid
        master_pid=$(cat "$POSTFIX_DIR/queue/pid/master.pid" 2>/dev/null | tr -d ' ') || true
        if [[ -n $master_pid ]] && kill -0 "$master_pid" 2>/dev/null; then
            kill "$master_pid" 2>/dev/null || true
        fi
    fi
    stop_milter
    if [[ -n $SINK_PID ]]; then
        kill "$SINK_PID" 2>/dev/null || true
        wait "$SINK_PID" 2>/dev/null || true
        SINK_PID=
    fi
}

cleanup_mail_test() {
    local status=$?
    stop_mail_services
    if [[ $status != 0 && -n $POSTFIX_DIR && -f $POSTFIX_DIR/maillog ]]; then
        echo "--- last lines of the Postfix log" >&2
        tail -n 40 "$POSTFIX_DIR/maillog" >&2
    fi
    if [[ $status != 0 && -f ${MILTER_LOG:-/nonexistent} ]]; then
        echo "--- last lines of the milter log" >&2
        tail -n 40 "$MILTER_LOG" >&2
    fi
    (exit "$status")
    cleanup_test_dir
}

# Make TEST_TMP traversable for the postfix user and for smtp-sink (user nobody), and
# arrange the clean-up.
prepare_mail_test() {
    make_test_dir
    chmod 0711 "$TEST_TMP"
    trap cleanup_mail_test EXIT
    SUBMIT_PORT=$(free_port)
    FILTER_PORT=$(free_port)
    SINK_PORT=$(free_port)
    MILTER_PORT=$(free_port)
    MILTER_LOG=$TEST_TMP/milter.log
}

# Start smtp-sink, which writes each message to a file in SINK_DIR.
start_sink() {
    SINK_DIR=$TEST_TMP/sink
    mkdir -p "$SINK_DIR"
    chown nobody "$SINK_DIR"
    smtp-sink -u nobody -d "$SINK_DIR/%H%M%S." -h sink.test "127.0.0.1:$SINK_PORT" 64 \
        >"$TEST_TMP/sink.log" 2>&1 &
    SINK_PID=$!
    wait_for_port "$SINK_PORT" || fail "smtp-sink did not listen on port $SINK_PORT"
}

# wait_for_port PORT: wait up to 20 s for a listener on 127.0.0.1:PORT.
wait_for_port() {
    local attempt
    for attempt in $(seq 1 100); do
        if python3 -c 'import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

write_postfix_config() {
    POSTFIX_DIR=$TEST_TMP/postfix
    mkdir -p "$POSTFIX_DIR/queue" "$POSTFIX_DIR/data"
    chmod 0755 "$POSTFIX_DIR" "$POSTFIX_DIR/queue"
    chown postfix "$POSTFIX_DIR/data"
    cat >"$POSTFIX_DIR/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $POSTFIX_DIR/queue
data_directory = $POSTFIX_DIR/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $POSTFIX_DIR/maillog
maillog_file_prefixes = $POSTFIX_DIR
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = gateway.test
mydomain = gateway.test
myorigin = gateway.test
mydestination =
mynetworks = 127.0.0.0/8
relay_domains = example.org, example.net
relayhost = [127.0.0.1]:$SINK_PORT
smtpd_relay_restrictions = permit_mynetworks, reject
alias_maps =
alias_database =
local_recipient_maps =
smtp_dns_support_level = disabled
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtputf8_enable = no
biff = no
milter_default_action = tempfail
# Retry deferred mail within seconds, so that the retry happens while the test waits.
minimal_backoff_time = 2s
maximal_backoff_time = 4s
queue_run_delay = 1s
EOF
    cat >"$POSTFIX_DIR/master.cf" <<EOF
127.0.0.1:$SUBMIT_PORT inet n - n - - smtpd
  -o content_filter=milterhop:[127.0.0.1]:$FILTER_PORT
127.0.0.1:$FILTER_PORT inet n - n - - smtpd
  -o content_filter=
  -o smtpd_milters=${MILTER_SOCKET:-inet:127.0.0.1:$MILTER_PORT}
  -o receive_override_options=no_address_mappings
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
milterhop unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
${EXTRA_MASTER_CF:-}
EOF
}

start_postfix() {
    write_postfix_config
    postfix -c "$POSTFIX_DIR" set-permissions >"$TEST_TMP/postfix-start.log" 2>&1 ||
        { cat "$TEST_TMP/postfix-start.log" >&2; fail "postfix set-permissions failed"; }
    postfix -c "$POSTFIX_DIR" start >>"$TEST_TMP/postfix-start.log" 2>&1 ||
        { cat "$TEST_TMP/postfix-start.log" >&2; fail "postfix start failed"; }
    wait_for_port "$SUBMIT_PORT" || fail "Postfix did not listen on port $SUBMIT_PORT"
}

# start_milter CONFIG [UNIX_SOCKET]: start p11smime-milter in the background, logging to
# MILTER_LOG, and wait for its TCP port, or for UNIX_SOCKET. The socket is made with umask
# 000, so that Postfix's smtpd, running as the postfix user, can connect to it.
start_milter() {
    (umask 000 && exec "$P11SMIME_MILTER" --config "$1") >>"$MILTER_LOG" 2>&1 &
    MILTER_PID=$!
    if [[ -n ${2:-} ]]; then
        local attempt
        for attempt in $(seq 1 100); do
            [[ -S $2 ]] && return 0
            sleep 0.2
        done
        fail "p11smime-milter did not create $2"
    fi
    wait_for_port "$MILTER_PORT" || fail "p11smime-milter did not listen on $MILTER_PORT"
}

stop_milter() {
    if [[ -n $MILTER_PID ]]; then
        kill "$MILTER_PID" 2>/dev/null || true
        wait "$MILTER_PID" 2>/dev/null || true
        MILTER_PID=
    fi
}

# send_mail FILE RECIPIENT...: submit FILE on SUBMIT_PORT; the envelope sender is the From.
send_mail() {
    local file=$1
    shift
    local from to_args=()
    from=$(sed -n 's/^From:.*<\(.*\)>.*/\1/p; s/^From: *\([^<> ]*@[^<> ]*\) *$/\1/p' "$file" |
        head -n 1)
    local recipient
    for recipient in "$@"; do
        to_args+=(--to "$recipient")
    done
    swaks --server 127.0.0.1 --port "$SUBMIT_PORT" --from "$from" "${to_args[@]}" \
        --helo client.test --data "@$file" --suppress-data >"$TEST_TMP/swaks.log" 2>&1 ||
        { cat "$TEST_TMP/swaks.log" >&2; fail "swaks could not submit $file"; }
}

# Print the number of messages smtp-sink has written.
sink_count() {
    find "$SINK_DIR" -type f | wc -l
}

# wait_for_sink COUNT SECONDS: wait until smtp-sink has written COUNT messages.
wait_for_sink() {
    local expected=$1 deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        (($(sink_count) >= expected)) && return 0
        sleep 0.5
    done
    return 1
}

# extract_sink_message DUMP OUT: write the message of an smtp-sink dump without the
# X-Client-*, X-Helo-Args, X-Mail-Args and X-Rcpt-Args lines that smtp-sink puts first.
extract_sink_message() {
    python3 - "$1" "$2" <<'PY'
import re
import sys

dump = open(sys.argv[1], "rb").read()
fields = rb"X-(?:Client-Addr|Client-Proto|Helo-Args|Mail-Args|Rcpt-Args)"
prefix = re.compile(rb"\A(?:" + fields + rb":[^\n]*\n)*")
open(sys.argv[2], "wb").write(dump[prefix.match(dump).end():])
PY
}

# find_sink_message MESSAGE_ID: print the dump file whose message has this Message-ID.
find_sink_message() {
    grep -rlF -- "Message-ID: <$1>" "$SINK_DIR" | head -n 1 || true
}
