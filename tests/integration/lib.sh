# Shared helpers for the integration tests. Test scripts source this file:
#
#   source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
#
# CTest passes P11SMIME (the built binary) and SOURCE_DIR (the repository root) and runs each
# script with bash. A script exits 0 on success, 1 on failure and 77 when it was skipped.
# Set KEEP_TEST_DIR=1 to keep the temporary directory of a run for inspection.
#
# shellcheck shell=bash
# The variables that setup_token sets are used by the scripts that source this file.
# shellcheck disable=SC2034

set -euo pipefail

readonly SOFTHSM_MODULE=/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so
readonly PKCS11_SPY_MODULE=/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so
readonly SKIP_STATUS=77
# Seconds that one command in expect_exit may run. Each p11smime call on SoftHSM took under
# a second on a 2-core development VM, so the default leaves a wide margin.
: "${COMMAND_TIMEOUT:=60}"

: "${SOURCE_DIR:=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)}"
export SOURCE_DIR

TEST_NAME=$(basename -- "$0" .sh)
TEST_TMP=
# Set by expect_exit: files with the stdout and stderr of the last command.
LAST_STDOUT=
LAST_STDERR=

fail() {
    echo "FAIL: $TEST_NAME: $*" >&2
    exit 1
}

skip() {
    echo "SKIP: $TEST_NAME: $*" >&2
    exit "$SKIP_STATUS"
}

# Print a progress line, so that a failure in CTest's output can be placed in its case.
step() {
    echo "--- $*"
}

# Process ids of the servers that start_server started; cleanup_test_dir stops them.
SERVER_PIDS=()

# Process IDs of daemons a test started (pcscd, vicc). cleanup_test_dir stops each by its ID.
BACKGROUND_PIDS=()

stop_background_processes() {
    local pid
    for pid in "${BACKGROUND_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    BACKGROUND_PIDS=()
}

cleanup_test_dir() {
    local status=$?
    stop_servers
    stop_background_processes
    if [[ -n ${GNUPGHOME:-} && -d $GNUPGHOME ]]; then
        # gpgsm starts a gpg-agent (and dirmngr) per home. Only this home's daemons stop.
        gpgconf --kill all >/dev/null 2>&1 || true
    fi
    if [[ -n $TEST_TMP && -d $TEST_TMP ]]; then
        if [[ ${KEEP_TEST_DIR:-0} == 1 ]]; then
            echo "kept test directory $TEST_TMP" >&2
        else
            rm -rf -- "$TEST_TMP"
        fi
    fi
    exit "$status"
}

# Create TEST_TMP, removed on exit. Files made by the test are private to the user, as
# p11smime expects of a PIN file.
make_test_dir() {
    umask 077
    TEST_TMP=$(mktemp -d "${TMPDIR:-/tmp}/p11smime-$TEST_NAME.XXXXXX")
    trap cleanup_test_dir EXIT
}

# Check that P11SMIME names an executable. Without P11SMIME (a run outside CTest), fall back
# to the default build directory and skip when nothing was built there.
require_p11smime() {
    if [[ -z ${P11SMIME:-} ]]; then
        P11SMIME=$SOURCE_DIR/build/cli/p11smime
        [[ -x $P11SMIME ]] || skip "P11SMIME is not set and $P11SMIME was not built"
    fi
    [[ -x $P11SMIME ]] || fail "P11SMIME=$P11SMIME is not an executable file"
    export P11SMIME
}

require_command() {
    local command
    for command in "$@"; do
        command -v "$command" >/dev/null || skip "$command is not installed"
    done
}

# Make a fresh token with softhsm-setup/setup.sh in TEST_TMP/hsm and export SOFTHSM2_CONF.
# Sets HSM_DIR, PIN_FILE, CA_FILE, OTHER_CA_FILE, CHAIN_FILE and KEY_URI[name].
declare -A KEY_URI=()
setup_token() {
    [[ -f $SOFTHSM_MODULE ]] || skip "SoftHSM module $SOFTHSM_MODULE is not installed"
    HSM_DIR=$TEST_TMP/hsm
    local output name uri
    if ! output=$(bash "$SOURCE_DIR/softhsm-setup/setup.sh" "$HSM_DIR"); then
        fail "softhsm-setup/setup.sh $HSM_DIR failed"
    fi
    export SOFTHSM2_CONF=$HSM_DIR/softhsm2.conf
    [[ $output == "export SOFTHSM2_CONF="* ]] ||
        fail "setup.sh printed no SOFTHSM2_CONF line first: $output"
    while read -r name uri; do
        [[ $name == export ]] && continue
        KEY_URI[$name]=$uri
    done <<<"$output"
    PIN_FILE=$HSM_DIR/pin.txt
    CA_FILE=$HSM_DIR/ca/ca.pem
    OTHER_CA_FILE=$HSM_DIR/ca/other-ca.pem
    CHAIN_FILE=$HSM_DIR/chain.pem
}

# Run a command and check its exit status: expect_exit CODE COMMAND [ARG...].
# stdout and stderr go to LAST_STDOUT and LAST_STDERR. On a different status both are
# printed. stdin is the caller's, so `expect_exit 0 cmd <file` works. A program (not a shell
# function) gets COMMAND_TIMEOUT seconds, so a hang fails one check instead of the whole run.
expect_exit() {
    local expected=$1
    shift
    EXIT_COUNT=$((${EXIT_COUNT:-0} + 1))
    LAST_STDOUT=$TEST_TMP/cmd-$EXIT_COUNT.stdout
    LAST_STDERR=$TEST_TMP/cmd-$EXIT_COUNT.stderr
    local status=0 runner=()
    if [[ $(type -t -- "$1") == file ]]; then
        runner=(timeout -k 5 "$COMMAND_TIMEOUT")
    fi
    "${runner[@]}" "$@" >"$LAST_STDOUT" 2>"$LAST_STDERR" || status=$?
    if [[ $status != "$expected" ]]; then
        {
            echo "command: $*"
            if [[ ${#runner[@]} -gt 0 && $status == 124 ]]; then
                echo "timed out after $COMMAND_TIMEOUT s"
            fi
            echo "expected exit status $expected, got $status"
            echo "--- stderr"
            head -c 4000 -- "$LAST_STDERR"
            echo "--- stdout (first 2000 bytes)"
            head -c 2000 -- "$LAST_STDOUT"
            echo "---"
        } >&2
        fail "$1 exited with $status instead of $expected"
    fi
}

# Check that the last command's stderr contains TEXT (a fixed, case-sensitive string).
expect_stderr_contains() {
    if ! grep -qF -- "$1" "$LAST_STDERR"; then
        echo "--- stderr" >&2
        cat -- "$LAST_STDERR" >&2
        fail "stderr does not contain \"$1\""
    fi
}

expect_stdout_contains() {
    if ! grep -qF -- "$1" "$LAST_STDOUT"; then
        echo "--- stdout (first 4000 bytes)" >&2
        head -c 4000 -- "$LAST_STDOUT" >&2
        fail "stdout does not contain \"$1\""
    fi
}

# Check the documented error format: a "p11smime: error:" line, and TEXT somewhere in
# stderr (the error or its hint).
expect_p11smime_error() {
    expect_stderr_contains "p11smime: error:"
    expect_stderr_contains "$1"
}

# Write an RFC 5322 message from FROM with LF line ends. Its text/plain body is 8bit UTF-8
# with a non-ASCII line and a line that ends in two spaces. A signer must move it to a
# 7-bit encoding without changing the decoded text, or the verifiers reject the result.
write_sample_message() {
    local file=$1 from=$2
    printf '%s\n' \
        "From: Test Signer <$from>" \
        "To: Recipient <recipient@example.net>" \
        "Subject: p11smime integration test" \
        "Date: Thu, 03 Dec 2026 10:00:00 +0000" \
        "Message-ID: <$RANDOM.$$@example.org>" \
        "MIME-Version: 1.0" \
        "Content-Type: text/plain; charset=utf-8" \
        "Content-Transfer-Encoding: 8bit" \
        "" \
        "Hello," \
        "" \
        "Grüße aus Köln: naïve café, 東京, ½ €." \
        "This line ends in two spaces.  " \
        "" \
        "-- " \
        "Test Signer" >"$file"
}

# Change one byte of the signed text in FILE, which is the first body byte of the first
# part of a multipart/signed message (multipart) or of a single MIME entity (entity).
# The byte must be a letter or digit, as it is for the sample message in base64,
# quoted-printable and 8bit. Another letter replaces it, so the decoded content changes too.
# tamper_first_body_byte FILE multipart|entity
tamper_first_body_byte() {
    python3 - "$1" "$2" <<'PY'
import email
import email.policy
import re
import sys

path, kind = sys.argv[1:3]
raw = bytearray(open(path, "rb").read())
start = 0
if kind == "multipart":
    message = email.message_from_bytes(bytes(raw), policy=email.policy.compat32)
    boundary = message.get_boundary()
    if not boundary:
        sys.exit(f"{path}: no multipart boundary")
    delimiter = re.search(rb"(?m)^--" + re.escape(boundary.encode()) + rb"[ \t]*\r?\n", raw)
    if not delimiter:
        sys.exit(f"{path}: no delimiter line for boundary {boundary!r}")
    start = delimiter.end()
separator = re.compile(rb"\r?\n\r?\n").search(raw, start)
if not separator:
    sys.exit(f"{path}: no blank line after the headers of the signed part")
position = separator.end()
if not chr(raw[position]).isalnum():
    sys.exit(f"{path}: body starts with {chr(raw[position])!r}, expected a letter or digit")
raw[position] = ord("B") if raw[position] == ord("A") else ord("A")
open(path, "wb").write(raw)
PY
}

# Split a multipart/signed message into its signed content (the exact bytes of the first
# part, with LF turned into CRLF as RFC 8551 canonical form requires) and the DER bytes of
# its application/pkcs7-signature part. The email module finds the boundary and decodes
# the signature. The content is cut from the raw bytes, because re-serialising it with the
# email module can change it.
extract_detached_parts() {
    local message=$1 content_out=$2 signature_out=$3
    python3 - "$message" "$content_out" "$signature_out" <<'PY'
import email
import email.policy
import re
import sys

message_path, content_path, signature_path = sys.argv[1:4]
raw = open(message_path, "rb").read()
message = email.message_from_bytes(raw, policy=email.policy.compat32)
if message.get_content_type() != "multipart/signed":
    sys.exit(f"{message_path}: expected multipart/signed, got {message.get_content_type()}")
boundary = message.get_boundary()
if not boundary:
    sys.exit(f"{message_path}: multipart/signed without a boundary parameter")

# RFC 2046: a delimiter is CRLF "--" boundary at the start of a line. The line break
# before a delimiter belongs to the delimiter, not to the part before it.
delimiter = re.compile(rb"(?:^|\r?\n)--" + re.escape(boundary.encode()) + rb"(--)?[ \t]*\r?\n",
                       re.MULTILINE)
matches = list(delimiter.finditer(raw))
if len(matches) < 3:
    sys.exit(f"{message_path}: found {len(matches)} delimiters of boundary {boundary!r}, "
             "expected 3")
content = raw[matches[0].end():matches[1].start()]
content = re.sub(rb"(?<!\r)\n", b"\r\n", content)
open(content_path, "wb").write(content)

parts = message.get_payload()
signature_part = parts[1]
if signature_part.get_content_type() not in ("application/pkcs7-signature",
                                               "application/x-pkcs7-signature"):
    sys.exit(f"{message_path}: second part is {signature_part.get_content_type()}")
open(signature_path, "wb").write(signature_part.get_payload(decode=True))
PY
}

# Write the DER CMS of an application/pkcs7-mime message (an opaque signature).
extract_opaque_cms() {
    local message=$1 cms_out=$2
    python3 - "$message" "$cms_out" <<'PY'
import email
import email.policy
import sys

message_path, cms_path = sys.argv[1:3]
message = email.message_from_bytes(open(message_path, "rb").read(),
                                   policy=email.policy.compat32)
if message.get_content_type() not in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
    sys.exit(f"{message_path}: expected application/pkcs7-mime, "
             f"got {message.get_content_type()}")
open(cms_path, "wb").write(message.get_payload(decode=True))
PY
}

# Make a throwaway GNUPGHOME in TEST_TMP that trusts CA_PEM for S/MIME. cleanup_test_dir
# stops its agent.
setup_gpgsm_home() {
    local ca_pem=$1
    export GNUPGHOME=$TEST_TMP/gnupg
    mkdir -p -- "$GNUPGHOME"
    chmod 0700 -- "$GNUPGHOME"
    # No network: CRL and OCSP checks are off, and dirmngr is never needed.
    printf '%s\n' disable-crl-checks disable-policy-checks >"$GNUPGHOME/gpgsm.conf"
    expect_exit 0 gpgsm --batch --import "$ca_pem"
    local fingerprint
    fingerprint=$(openssl x509 -in "$ca_pem" -noout -fingerprint -sha1 | cut -d= -f2)
    # "relax" lets gpgsm accept a root certificate without the checks for public roots.
    printf '%s S relax\n' "$fingerprint" >"$GNUPGHOME/trustlist.txt"
}

# Verify with gpgsm and require GOODSIG and VALIDSIG in its status output.
# gpgsm_verify SIGNATURE [CONTENT]: CONTENT for a detached signature, none for opaque.
gpgsm_verify() {
    local status_file=$TEST_TMP/gpgsm-status.txt
    local status=0
    gpgsm --batch --disable-crl-checks --disable-policy-checks --status-fd 3 \
        --verify "$@" >"$TEST_TMP/gpgsm.stdout" 2>"$TEST_TMP/gpgsm.stderr" \
        3>"$status_file" || status=$?
    if [[ $status != 0 ]] || ! grep -q '^\[GNUPG:\] GOODSIG ' "$status_file" ||
        ! grep -q '^\[GNUPG:\] VALIDSIG ' "$status_file"; then
        echo "--- gpgsm exit status $status; status lines:" >&2
        cat -- "$status_file" >&2
        echo "--- gpgsm stderr:" >&2
        cat -- "$TEST_TMP/gpgsm.stderr" >&2
        return 1
    fi
}

# Issue software recipient keys and certificates from the test CA of setup_token, with
# softhsm-setup/software-recipients.sh. Peers such as openssl, gpgsm and NSS decrypt with
# them, because the token keys cannot leave the token. Sets SOFT_DIR (NAME.key, NAME.pem and
# NAME.p12 for each recipient that the script lists) and P12_PASSWORD_FILE.
setup_software_recipients() {
    SOFT_DIR=$HSM_DIR/soft
    if ! bash "$SOURCE_DIR/softhsm-setup/software-recipients.sh" "$HSM_DIR" >/dev/null; then
        fail "softhsm-setup/software-recipients.sh $HSM_DIR failed"
    fi
    P12_PASSWORD_FILE=$SOFT_DIR/p12-password.txt
}

# Print the top-level content type of MESSAGE (PARAM "type") or the value of one of its
# Content-Type parameters, or an empty line when it has none.
# message_content_type MESSAGE type|PARAM
message_content_type() {
    python3 - "$1" "$2" <<'PY'
import email
import email.policy
import sys

message = email.message_from_bytes(open(sys.argv[1], "rb").read(),
                                   policy=email.policy.compat32)
value = message.get_content_type() if sys.argv[2] == "type" else message.get_param(sys.argv[2])
print(value or "")
PY
}

# Write an RFC 5322 message with the routing headers of write_sample_message whose body is
# the DER CMS of DER_FILE in base64, labelled application/pkcs7-mime with SMIME_TYPE (default
# enveloped-data) and name="smime.p7m". This is how a mail client sends what a CMS tool
# such as gpgsm or cmsutil produces.
# wrap_cms_message DER_FILE OUT [SMIME_TYPE]
wrap_cms_message() {
    python3 - "$1" "$2" "${3:-enveloped-data}" <<'PY'
import base64
import sys

der_path, out_path, smime_type = sys.argv[1:4]
encoded = base64.encodebytes(open(der_path, "rb").read()).decode("ascii")
headers = [
    "From: Sender <sender@example.net>",
    "To: Recipient <recipient@example.org>",
    "Subject: p11smime integration test",
    "Date: Thu, 03 Dec 2026 10:00:00 +0000",
    "MIME-Version: 1.0",
    f'Content-Type: application/pkcs7-mime; smime-type={smime_type}; name="smime.p7m"',
    'Content-Disposition: attachment; filename="smime.p7m"',
    "Content-Transfer-Encoding: base64",
]
with open(out_path, "w", newline="\n") as out:
    out.write("\n".join(headers) + "\n\n" + encoded)
PY
}

# Check that the first text/plain part of ACTUAL, after transfer decoding, equals that of
# EXPECTED apart from line ends. ACTUAL may be the decrypted message itself or a signed
# message around it.
expect_same_text_body() {
    local actual=$1 expected=$2
    python3 - "$actual" "$expected" <<'PY' || fail "the text of $actual differs from $expected"
import email
import email.policy
import sys

def text_body(path):
    message = email.message_from_bytes(open(path, "rb").read(), policy=email.policy.compat32)
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            return part.get_payload(decode=True).replace(b"\r\n", b"\n")
    sys.exit(f"{path}: no text/plain part")

actual, expected = text_body(sys.argv[1]), text_body(sys.argv[2])
if actual != expected:
    print(f"expected: {expected!r}", file=sys.stderr)
    print(f"got:      {actual!r}", file=sys.stderr)
    sys.exit(1)
PY
}

# Check that the message headers NAME... of EXPECTED appear unchanged in the top-level
# headers of ACTUAL.
# expect_same_headers ACTUAL EXPECTED NAME...
expect_same_headers() {
    local actual=$1 expected=$2
    shift 2
    python3 - "$actual" "$expected" "$@" <<'PY' || fail "$actual lost headers of $expected"
import email
import email.policy
import sys

def read(path):
    return email.message_from_bytes(open(path, "rb").read(), policy=email.policy.compat32)

actual, expected = read(sys.argv[1]), read(sys.argv[2])
status = 0
for name in sys.argv[3:]:
    if actual.get(name) != expected.get(name):
        print(f"header {name}: expected {expected.get(name)!r}, got {actual.get(name)!r}",
              file=sys.stderr)
        status = 1
sys.exit(status)
PY
}

# --- Local servers for online revocation tests ---------------------------------------------

# Re-run the calling script in a new network namespace with only a loopback interface, so its
# servers are reachable from nowhere else and nothing it does leaves the machine. Call it
# first, with the script's arguments. Where namespaces are not allowed, the script goes on in
# the host's namespace and its clients still connect only to 127.0.0.1.
enter_network_namespace() {
    if [[ -n ${P11SMIME_IN_NETNS:-} ]]; then
        ip link set lo up 2>/dev/null || true
        return
    fi
    if command -v unshare >/dev/null && unshare -n true 2>/dev/null; then
        export P11SMIME_IN_NETNS=1
        exec unshare -n -- bash "$0" "$@"
    fi
    echo "note: no network namespace available; servers run in the host's namespace" >&2
}

# Print a TCP port on 127.0.0.1 that is free now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Start a server in the background with its output in LOG and remember its process id:
# start_server LOG COMMAND [ARG...]. The id is also left in LAST_SERVER_PID.
start_server() {
    local log=$1
    shift
    "$@" >"$log" 2>&1 &
    LAST_SERVER_PID=$!
    SERVER_PIDS+=("$LAST_SERVER_PID")
}

# Stop one server that start_server started, by its process id.
stop_server() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for i in "${!SERVER_PIDS[@]}"; do
        if [[ ${SERVER_PIDS[$i]} == "$pid" ]]; then
            unset 'SERVER_PIDS[i]'
        fi
    done
}

stop_servers() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    SERVER_PIDS=()
}

# Wait up to 10 seconds until a socket listens on PORT. The check reads the kernel's socket
# tables instead of connecting, because `openssl ocsp` 3.0 stops responding after a client
# that connects and sends nothing.
wait_for_port() {
    local port=$1 attempt
    for attempt in $(seq 100); do
        if python3 - "$port" <<'PY'
import sys

port = "%04X" % int(sys.argv[1])
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        lines = open(table).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        fields = line.split()
        if fields[1].endswith(":" + port) and fields[3] == "0A":
            sys.exit(0)
sys.exit(1)
PY
        then
            return 0
        fi
        sleep 0.1
    done
    fail "nothing listens on port $port after 10 seconds"
}

# --- PC/SC: a private pcscd with a virtual reader (vsmartcard-vpcd) and card (vicc) ---

readonly VPCD_DRIVER=/usr/lib/pcsc/drivers/serial/libifdvpcd.so
readonly PCSC_DRIVER_DIR=/usr/lib/pcsc/drivers
readonly OPENSC_MODULE=/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so
# Debian 12's python3-virtualsmartcard installs its package one folder too deep.
readonly VICC_PYTHONPATH=/usr/lib/python3/site-packages/virtualsmartcard
# pcscd's socket path is fixed at build time, so a private pcscd needs its own /run.
readonly PCSCD_SOCKET=/run/pcscd/pcscd.comm
# vpcd listens for vicc on this port, inside the test's own network namespace.
readonly VPCD_PORT=35963
# The virtual card's reader; vpcd makes a second one, "Virtual PCD 00 01", on the next port.
readonly VIRTUAL_READER="Virtual PCD 00 00"
PCSCD_PID=
VICC_PID=

# Run the calling script again in its own mount and network namespaces, unless it already
# runs in them. There it gets an empty /run for a private pcscd, and a network with only
# loopback for vpcd and vicc, so a system pcscd and the machine's network stay untouched.
# Skips when namespaces cannot be made (they need root, or user namespaces).
enter_private_namespace() {
    if [[ ${P11SMIME_PRIVATE_NAMESPACE:-} != 1 ]]; then
        require_command unshare ip
        if ! unshare --mount --net true 2>/dev/null; then
            skip "cannot create mount and network namespaces (needs root); a pcscd" \
                "outside them would disturb the machine's own pcscd"
        fi
        P11SMIME_PRIVATE_NAMESPACE=1 exec unshare --mount --net --propagation private \
            bash "$0" "$@"
    fi
    mount -t tmpfs -o mode=0755 p11smime-run /run || fail "cannot mount a private /run"
    mkdir -p /run/pcscd
    ip link set lo up || fail "cannot bring up loopback in the test's network namespace"
}

# Wait up to SECONDS for COMMAND to succeed, checking every 0.2 s: wait_until SECONDS CMD...
wait_until() {
    local seconds=$1 tries
    shift
    for ((tries = seconds * 5; tries > 0; tries--)); do
        "$@" && return 0
        sleep 0.2
    done
    return 1
}

pcscd_is_up() {
    [[ -S $PCSCD_SOCKET ]] && kill -0 "$PCSCD_PID" 2>/dev/null
}

# Start pcscd in the private namespace with only the vpcd reader driver. An empty driver
# folder hides the machine's USB readers from it, so it never claims a real reader.
start_pcscd() {
    require_command pcscd
    [[ -f $VPCD_DRIVER ]] || skip "the vpcd driver $VPCD_DRIVER (vsmartcard-vpcd) is missing"
    [[ ${P11SMIME_PRIVATE_NAMESPACE:-} == 1 ]] || fail "start_pcscd outside the test namespace"
    local config=$TEST_TMP/reader.conf.d
    mkdir -p -- "$config"
    cp -- "$VPCD_DRIVER" "$TEST_TMP/libifdvpcd.so"
    mount -t tmpfs -o mode=0755 p11smime-pcsc-drivers "$PCSC_DRIVER_DIR" ||
        fail "cannot hide $PCSC_DRIVER_DIR from the private pcscd"
    printf '%s\n' 'FRIENDLYNAME "Virtual PCD"' "DEVICENAME /dev/null:$VPCD_PORT" \
        "LIBPATH $TEST_TMP/libifdvpcd.so" "CHANNELID $VPCD_PORT" >"$config/vpcd"
    # OpenSC 0.23 tries each of its card drivers on a card it does not know, which took 14 s
    # on the virtual card in every process that loads it. The PIV and OpenPGP drivers, which
    # serve YubiKeys, took 1.3 s.
    printf '%s\n' 'app default {' '    card_drivers = PIV-II, openpgp;' '}' \
        >"$TEST_TMP/opensc.conf"
    export OPENSC_CONF=$TEST_TMP/opensc.conf
    pcscd --foreground --config "$config" >"$TEST_TMP/pcscd.log" 2>&1 &
    PCSCD_PID=$!
    BACKGROUND_PIDS+=("$PCSCD_PID")
    wait_until 10 pcscd_is_up || {
        cat -- "$TEST_TMP/pcscd.log" >&2
        fail "pcscd did not create $PCSCD_SOCKET within 10 s"
    }
}

stop_pcscd() {
    kill "$PCSCD_PID" 2>/dev/null || true
    wait "$PCSCD_PID" 2>/dev/null || true
}

# Start vicc, which connects to vpcd on loopback and so inserts an ISO 7816 card into
# VIRTUAL_READER. vicc imports PyCrypto's "Crypto" package, which Debian 12 ships as
# "Cryptodome" (python3-pycryptodome); a one-line package makes the old name point there.
start_virtual_card() {
    require_command vicc
    [[ -x /usr/bin/python3 ]] || skip "/usr/bin/python3 is missing"
    /usr/bin/python3 -c 'import Cryptodome' 2>/dev/null ||
        skip "vicc needs python3-pycryptodome"
    mkdir -p -- "$TEST_TMP/python/Crypto"
    printf '%s\n' 'import Cryptodome' '__path__ = Cryptodome.__path__' \
        >"$TEST_TMP/python/Crypto/__init__.py"
    PYTHONPATH=$TEST_TMP/python:$VICC_PYTHONPATH /usr/bin/python3 "$(command -v vicc)" \
        --type iso7816 --hostname localhost --port "$VPCD_PORT" -v >"$TEST_TMP/vicc.log" 2>&1 &
    VICC_PID=$!
    BACKGROUND_PIDS+=("$VICC_PID")
}

stop_virtual_card() {
    kill "$VICC_PID" 2>/dev/null || true
    wait "$VICC_PID" 2>/dev/null || true
}
