#!/usr/bin/env bash
# verify's revocation checks against real sources: CRL files and folders, an `openssl ocsp`
# responder with an index file, and a CRL served by python3's http.server. The servers listen
# on ports chosen at run time, inside a network namespace of the script's own when one can be
# made, and are stopped by process id. The certificates' AIA and CRL distribution points name
# 127.0.0.1 only, and the proxy variables are cleared, so no request leaves the machine.
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

enter_network_namespace "$@"
require_p11smime
require_command openssl python3 faketime
LIBFAKETIME=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
[[ -f $LIBFAKETIME ]] || skip "$LIBFAKETIME is not installed"
make_test_dir
unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY no_proxy NO_PROXY
export XDG_CACHE_HOME=$TEST_TMP/cache

OCSP_PORT=$(free_port)
HTTP_PORT=$(free_port)
SINK_PORT=$(free_port)
CLOSED_PORT=$(free_port)
CA=$TEST_TMP/ca
mkdir -p -- "$CA/newcerts" "$TEST_TMP/www" "$TEST_TMP/crls" "$TEST_TMP/mail"

# --- Test CA and signers ---------------------------------------------------------------------

cat >"$CA/ca.cnf" <<EOF
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = $CA
database = $CA/index.txt
new_certs_dir = $CA/newcerts
serial = $CA/serial
crlnumber = $CA/crlnumber
default_md = sha256
policy = any_name
unique_subject = no
default_crl_days = 1
[ any_name ]
commonName = supplied
[ ocsp_and_crl ]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, nonRepudiation
extendedKeyUsage = emailProtection
subjectAltName = email:\$ENV::SIGNER_EMAIL
authorityInfoAccess = OCSP;URI:http://127.0.0.1:$OCSP_PORT/
crlDistributionPoints = URI:http://127.0.0.1:$HTTP_PORT/ca.crl
[ ocsp_only ]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, nonRepudiation
extendedKeyUsage = emailProtection
subjectAltName = email:\$ENV::SIGNER_EMAIL
authorityInfoAccess = OCSP;URI:http://127.0.0.1:$OCSP_PORT/
[ crl_only ]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, nonRepudiation
extendedKeyUsage = emailProtection
subjectAltName = email:\$ENV::SIGNER_EMAIL
crlDistributionPoints = URI:http://127.0.0.1:$HTTP_PORT/ca.crl
[ sink_only ]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, nonRepudiation
extendedKeyUsage = emailProtection
subjectAltName = email:\$ENV::SIGNER_EMAIL
authorityInfoAccess = OCSP;URI:http://127.0.0.1:$SINK_PORT/
crlDistributionPoints = URI:http://127.0.0.1:$SINK_PORT/ca.crl
EOF
touch "$CA/index.txt"
echo 1000 >"$CA/serial"
echo 01 >"$CA/crlnumber"

new_ec_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

new_ec_key "$CA/ca.key"
openssl req -x509 -new -key "$CA/ca.key" -out "$CA/ca.pem" -days 30 -subj "/CN=Revocation Test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
new_ec_key "$CA/other.key"
openssl req -x509 -new -key "$CA/other.key" -out "$CA/other.pem" -days 30 \
    -subj "/CN=Unrelated Responder" 2>/dev/null

# issue NAME EXTENSIONS: a signer NAME@example.org recorded in the CA's index.
issue() {
    local name=$1 extensions=$2
    new_ec_key "$CA/$name.key"
    openssl req -new -key "$CA/$name.key" -subj "/CN=$name signer" -out "$CA/$name.csr"
    SIGNER_EMAIL=$name@example.org openssl ca -batch -config "$CA/ca.cnf" -cert "$CA/ca.pem" \
        -keyfile "$CA/ca.key" -extensions "$extensions" -days 10 -in "$CA/$name.csr" \
        -out "$CA/$name.pem" 2>/dev/null
}

# issue_unrecorded NAME EXTENSIONS: a signer missing from the CA's index, so the responder
# gives it the status unknown.
issue_unrecorded() {
    local name=$1 extensions=$2
    new_ec_key "$CA/$name.key"
    openssl req -new -key "$CA/$name.key" -subj "/CN=$name signer" -out "$CA/$name.csr"
    SIGNER_EMAIL=$name@example.org openssl x509 -req -in "$CA/$name.csr" -CA "$CA/ca.pem" \
        -CAkey "$CA/ca.key" -set_serial 0x7777 -days 10 -extfile "$CA/ca.cnf" \
        -extensions "$extensions" -out "$CA/$name.pem" 2>/dev/null
}

# sign NAME [FAKETIME]: a signed message from NAME@example.org, signed now or, with
# FAKETIME, at that faketime offset such as +2d.
sign() {
    local name=$1 offset=${2:-} runner=()
    [[ -n $offset ]] && runner=(faketime -f "$offset")
    printf 'Content-Type: text/plain\n\nRevocation test from %s.\n' "$name" >"$TEST_TMP/body.txt"
    {
        echo "Date: $("${runner[@]}" date -R)"
        "${runner[@]}" openssl cms -sign -in "$TEST_TMP/body.txt" -signer "$CA/$name.pem" \
            -inkey "$CA/$name.key" -from "$name@example.org" -to "bob@example.org" \
            -subject "revocation test"
    } >"$TEST_TMP/mail/$name${offset:+-$offset}.eml"
}

revoke() {
    SIGNER_EMAIL=unused openssl ca -config "$CA/ca.cnf" -cert "$CA/ca.pem" -keyfile "$CA/ca.key" \
        -revoke "$CA/$1.pem" -crl_reason "$2" 2>/dev/null
}

step "making the test CA, signers and messages"
issue good ocsp_and_crl
issue revoked ocsp_and_crl
issue superseded ocsp_and_crl
issue ocsponly ocsp_only
issue crlonly crl_only
issue crlrevoked crl_only
issue sink sink_only
issue_unrecorded unknown ocsp_only
for name in good revoked superseded ocsponly crlonly crlrevoked sink unknown; do
    sign "$name"
done
sign good +2d
# The revocations come a second after signing, so the revocation dates are after signingTime.
sleep 1
revoke revoked keyCompromise
revoke superseded superseded
revoke crlrevoked keyCompromise
SIGNER_EMAIL=unused openssl ca -config "$CA/ca.cnf" -cert "$CA/ca.pem" -keyfile "$CA/ca.key" \
    -gencrl -out "$TEST_TMP/crls/ca.pem" 2>/dev/null
openssl crl -in "$TEST_TMP/crls/ca.pem" -outform DER -out "$TEST_TMP/www/ca.crl"
# A CRL issued two days ago that expired yesterday.
SIGNER_EMAIL=unused faketime -f -2d openssl ca -config "$CA/ca.cnf" -cert "$CA/ca.pem" \
    -keyfile "$CA/ca.key" -gencrl -crldays 1 -out "$TEST_TMP/expired.crl" 2>/dev/null
# A CRL in the CA's name, signed by another key.
openssl req -x509 -new -key "$CA/other.key" -out "$CA/impostor.pem" -days 1 \
    -subj "/CN=Revocation Test CA" 2>/dev/null
SIGNER_EMAIL=unused openssl ca -config "$CA/ca.cnf" -cert "$CA/impostor.pem" \
    -keyfile "$CA/other.key" -gencrl -out "$TEST_TMP/impostor.crl" 2>/dev/null
MAIL=$TEST_TMP/mail

trust=(--no-system-ca --ca-file "$CA/ca.pem")

# revocation_field KEY...: print one field of the first signer's revocation report in the
# JSON output of the last command.
revocation_field() {
    python3 - "$LAST_STDOUT" "$@" <<'PY'
import json
import sys

report = json.load(open(sys.argv[1]))
value = report["signers"][0]["revocation"]
for key in sys.argv[2:]:
    value = value[int(key)] if isinstance(value, list) else value[key]
print(value)
PY
}

expect_revocation() {
    local expected=$1
    shift
    local actual
    actual=$(revocation_field "$@")
    [[ $actual == "$expected" ]] || fail "revocation ${*}: expected '$expected', got '$actual'"
}

# --- Without online checks --------------------------------------------------------------------

step "offline: revocation is not checked and the report says so"
start_server "$TEST_TMP/sink.log" python3 -c '
import socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(16)
connections = []
while True:
    connection, _ = server.accept()
    connections.append(connection)
    print("connection", flush=True)
' "$SINK_PORT"
SINK_PID=$LAST_SERVER_PID
wait_for_port "$SINK_PORT"
sink_connections() { grep -c connection "$TEST_TMP/sink.log" || true; }
before=$(sink_connections)
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --in "$MAIL/sink.eml"
expect_stdout_contains "revocation:   not checked: no CRL given, and online checks are off"
[[ $(sink_connections) == "$before" ]] || fail "verify without --online connected to the network"
expect_exit 1 "$P11SMIME" verify "${trust[@]}" --revocation hard --in "$MAIL/sink.eml"
expect_p11smime_error "was not checked"

step "local CRL file: good, revoked with date and reason"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --crl-file "$TEST_TMP/www/ca.crl" --json \
    --in "$MAIL/good.eml"
expect_revocation good status
expect_revocation "CRL file $TEST_TMP/www/ca.crl" certificates 0 source
expect_exit 1 "$P11SMIME" verify "${trust[@]}" --crl-file "$TEST_TMP/www/ca.crl" \
    --in "$MAIL/revoked.eml"
expect_p11smime_error "was revoked on"
expect_stderr_contains "(keyCompromise), says CRL file $TEST_TMP/www/ca.crl"
expect_stdout_contains "Signature is NOT valid"

step "local CRL folder"
expect_exit 1 "$P11SMIME" verify "${trust[@]}" --crl-dir "$TEST_TMP/crls" --in "$MAIL/revoked.eml"
expect_stderr_contains "(keyCompromise), says CRL file $TEST_TMP/crls/ca.pem"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --crl-dir "$TEST_TMP/crls" --in "$MAIL/good.eml"

step "local CRL that expired, or from another issuer: status unknown"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --crl-file "$TEST_TMP/expired.crl" \
    --in "$MAIL/good.eml"
expect_stderr_contains "p11smime: warning: revocation status of certificate of signer"
expect_stderr_contains "the CRL expired"
expect_exit 1 "$P11SMIME" verify "${trust[@]}" --crl-file "$TEST_TMP/expired.crl" \
    --revocation hard --in "$MAIL/good.eml"
expect_p11smime_error "the CRL expired"
expect_exit 1 "$P11SMIME" verify "${trust[@]}" --crl-file "$TEST_TMP/impostor.crl" \
    --revocation hard --in "$MAIL/good.eml"
expect_p11smime_error "the CRL's signature does not verify with the issuer's key"
expect_exit 2 "$P11SMIME" verify "${trust[@]}" --crl-file "$CA/ca.pem" --in "$MAIL/good.eml"
expect_p11smime_error "no PEM or DER CRL in '$CA/ca.pem'"

step "revocation after signingTime: good at signing time unless the key was compromised"
expect_exit 1 "$P11SMIME" verify "${trust[@]}" --crl-file "$TEST_TMP/www/ca.crl" \
    --in "$MAIL/superseded.eml"
expect_stderr_contains "(superseded)"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --crl-file "$TEST_TMP/www/ca.crl" \
    --at-time signing --in "$MAIL/superseded.eml"
expect_stderr_contains "(superseded), after the validation time"
expect_stdout_contains "(signingTime)"
expect_exit 1 "$P11SMIME" verify "${trust[@]}" --crl-file "$TEST_TMP/www/ca.crl" \
    --at-time signing --in "$MAIL/revoked.eml"
expect_stderr_contains "(keyCompromise)"

# --- Online: OCSP ----------------------------------------------------------------------------

step "starting the OCSP responder on port $OCSP_PORT and the CRL server on port $HTTP_PORT"
start_ocsp_responder() {
    start_server "$TEST_TMP/ocsp-$1.log" openssl ocsp -index "$CA/index.txt" -port "$1" \
        -CA "$CA/ca.pem" "${@:2}"
    wait_for_port "$1"
}
start_ocsp_responder "$OCSP_PORT" -rsigner "$CA/ca.pem" -rkey "$CA/ca.key" -nmin 60
OCSP_PID=$LAST_SERVER_PID
start_server "$TEST_TMP/http.log" python3 -m http.server --bind 127.0.0.1 \
    --directory "$TEST_TMP/www" "$HTTP_PORT"
HTTP_PID=$LAST_SERVER_PID
wait_for_port "$HTTP_PORT"

step "OCSP: good"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --online --json --in "$MAIL/good.eml"
expect_revocation good status
expect_revocation True online
expect_revocation "OCSP http://127.0.0.1:$OCSP_PORT/" certificates 0 source

step "OCSP: revoked, with the time and reason"
expect_exit 1 "$P11SMIME" verify "${trust[@]}" --online --in "$MAIL/revoked.eml"
expect_p11smime_error "(keyCompromise), says OCSP http://127.0.0.1:$OCSP_PORT/"
expect_stdout_contains "revocation:   revoked on 20"

step "OCSP: unknown to the responder, and no CRL distribution point"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --online --in "$MAIL/unknown.eml"
expect_stderr_contains "the responder does not know the certificate"
expect_exit 1 "$P11SMIME" verify "${trust[@]}" --online --revocation hard --in "$MAIL/unknown.eml"
expect_p11smime_error "revocation status of certificate of signer 'CN=unknown signer' is unknown"

step "OCSP: a cached response serves the next message of the same sender"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --online --in "$MAIL/ocsponly.eml"
stop_server "$OCSP_PID"
cp -- "$MAIL/ocsponly.eml" "$MAIL/ocsponly-second.eml"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --online --revocation hard --json \
    --in "$MAIL/ocsponly-second.eml"
expect_revocation "OCSP http://127.0.0.1:$OCSP_PORT/ (cached)" certificates 0 source

step "OCSP: responder down, soft and hard"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --online --timeout 2 --cache-dir "$TEST_TMP/empty" \
    --in "$MAIL/ocsponly.eml"
expect_stderr_contains "p11smime: warning: revocation status of certificate of signer"
expect_stderr_contains "OCSP http://127.0.0.1:$OCSP_PORT/: HTTP request to"
expect_exit 1 "$P11SMIME" verify "${trust[@]}" --online --timeout 2 --revocation hard \
    --cache-dir "$TEST_TMP/empty" --in "$MAIL/ocsponly.eml"
expect_p11smime_error "is unknown"

step "OCSP down: the CRL distribution point answers instead"
expect_exit 1 "$P11SMIME" verify "${trust[@]}" --online --timeout 2 \
    --ocsp-url "http://127.0.0.1:$CLOSED_PORT/" --in "$MAIL/revoked.eml"
expect_p11smime_error "says CRL http://127.0.0.1:$HTTP_PORT/ca.crl"

step "OCSP: a response that has expired"
start_ocsp_responder "$OCSP_PORT" -rsigner "$CA/ca.pem" -rkey "$CA/ca.key" -nmin 60
OCSP_PID=$LAST_SERVER_PID
EXPIRED_PORT=$(free_port)
# libfaketime is preloaded with env, which execs openssl, so that the recorded process id is
# the responder's. The faketime command would fork, and stopping it would leave the responder.
start_server "$TEST_TMP/ocsp-expired.log" env LD_PRELOAD="$LIBFAKETIME" FAKETIME=-2d \
    openssl ocsp -index "$CA/index.txt" -port "$EXPIRED_PORT" -CA "$CA/ca.pem" \
    -rsigner "$CA/ca.pem" -rkey "$CA/ca.key" -ndays 1
wait_for_port "$EXPIRED_PORT"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --online --cache-dir "$TEST_TMP/empty" \
    --ocsp-url "http://127.0.0.1:$EXPIRED_PORT/" --in "$MAIL/ocsponly.eml"
expect_stderr_contains "the OCSP response is not current"
expect_exit 1 "$P11SMIME" verify "${trust[@]}" --online --cache-dir "$TEST_TMP/empty" \
    --revocation hard --ocsp-url "http://127.0.0.1:$EXPIRED_PORT/" --in "$MAIL/ocsponly.eml"
expect_p11smime_error "the OCSP response is not current"

step "OCSP: a response signed by a key the CA did not authorise"
WRONG_PORT=$(free_port)
start_ocsp_responder "$WRONG_PORT" -rsigner "$CA/other.pem" -rkey "$CA/other.key" -nmin 60
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --online --cache-dir "$TEST_TMP/empty" \
    --ocsp-url "http://127.0.0.1:$WRONG_PORT/" --in "$MAIL/ocsponly.eml"
expect_stderr_contains "the OCSP response's signature is not valid"
expect_exit 1 "$P11SMIME" verify "${trust[@]}" --online --cache-dir "$TEST_TMP/empty" \
    --revocation hard --ocsp-url "http://127.0.0.1:$WRONG_PORT/" --in "$MAIL/ocsponly.eml"
expect_p11smime_error "the OCSP response's signature is not valid"
if compgen -G "$TEST_TMP/empty/ocsp-*" >/dev/null; then
    fail "a response that failed its checks was cached"
fi

step "OCSP: --ocsp-url replaces the responder the certificate names"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --online --json --cache-dir "$TEST_TMP/ocsp-url" \
    --ocsp-url "http://127.0.0.1:$OCSP_PORT/" --in "$MAIL/crlonly.eml"
expect_revocation "OCSP http://127.0.0.1:$OCSP_PORT/" certificates 0 source

step "OCSP: a responder that never answers costs one --timeout"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --online --timeout 1 --json \
    --in "$MAIL/sink.eml"
expect_revocation unknown status
expect_stdout_contains "transfer timeout"

# --- Online: CRL distribution points ---------------------------------------------------------

step "CRL distribution point over HTTP: good and revoked, one download"
crl_downloads() { grep -c 'GET /ca.crl' "$TEST_TMP/http.log" || true; }
before=$(crl_downloads)
crl_cache=(--cache-dir "$TEST_TMP/crl-cache")
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --online "${crl_cache[@]}" --json \
    --in "$MAIL/crlonly.eml"
expect_revocation "CRL http://127.0.0.1:$HTTP_PORT/ca.crl" certificates 0 source
expect_exit 1 "$P11SMIME" verify "${trust[@]}" --online "${crl_cache[@]}" \
    --in "$MAIL/crlrevoked.eml"
expect_p11smime_error "(keyCompromise), says CRL http://127.0.0.1:$HTTP_PORT/ca.crl (cached)"
downloads=$(($(crl_downloads) - before))
[[ $downloads == 1 ]] || fail "the CRL was downloaded $downloads times instead of once"

# --- Time -------------------------------------------------------------------------------------

step "--at-time: a given date, and signingTime"
expect_exit 1 "$P11SMIME" verify "${trust[@]}" --at-time 2001-02-03 --in "$MAIL/good.eml"
expect_stdout_contains "validated at: 2001-02-03T00:00:00Z (--at-time)"
expect_p11smime_error "is not valid at 2001-02-03T00:00:00Z: certificate is not yet valid"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --at-time signing --in "$MAIL/good.eml"
expect_stdout_contains "(signingTime)"
expect_exit 2 "$P11SMIME" verify "${trust[@]}" --at-time yesterday --in "$MAIL/good.eml"
expect_p11smime_error "invalid --at-time value 'yesterday'"

step "signingTime in the future"
expect_exit 0 "$P11SMIME" verify "${trust[@]}" --no-sender-check --in "$MAIL/good-+2d.eml"
expect_stderr_contains "is in the future"
expect_exit 1 "$P11SMIME" verify "${trust[@]}" --at-time signing --in "$MAIL/good-+2d.eml"
expect_p11smime_error "is in the future, so the path is not validated at it"

echo "PASS: $TEST_NAME"
