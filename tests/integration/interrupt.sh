#!/usr/bin/env bash
# An interrupted command leaves no partial output. The fault module
# (tests/fault/fault_module.cpp) delays every C_Sign or C_Decrypt by DELAY_MS, as a slow token
# does, so the temporary outputs of `sign` and `decrypt` stay in their folder meanwhile. The
# test waits until one appears, sends SIGTERM, SIGINT or SIGHUP, and expects the exit status
# 128 + the signal number and no output or temporary file. An ignored SIGINT, as under nohup,
# must stay ignored.
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command env openssl
make_test_dir
setup_token
[[ -n ${P11FAULT_SO:-} && -f $P11FAULT_SO ]] || skip "P11FAULT_SO names no fault module"

export P11FAULT_MODULE=$SOFTHSM_MODULE
export P11FAULT_CONTROL=$TEST_TMP/fault-control
readonly DELAY_MS=5000
# Seconds to wait for the first temporary output. The login and key search before it took
# under a second in each run of this test on a 2-core VM.
readonly APPEAR_TIMEOUT=20
KEY=${KEY_URI[rsa2048]}

mkdir -p "$TEST_TMP/in" "$TEST_TMP/encrypted"
for i in 1 2 3 4; do
    write_sample_message "$TEST_TMP/in/message-$i.eml" rsa2048@example.org
done
INPUTS=("$TEST_TMP"/in/message-*.eml)
expect_exit 0 "$P11SMIME" encrypt --recipient "$HSM_DIR/certs/rsa2048.pem" \
    --out-dir "$TEST_TMP/encrypted" "${INPUTS[@]}"
ENCRYPTED=("$TEST_TMP"/encrypted/*.eml)

# Start a command in the background, its output in TEST_TMP/background.*, and set
# COMMAND_PID. bash starts a background command of a script with SIGINT ignored, so env
# restores the default action of the three signals first, as an interactive shell gives them.
start_command() {
    env --default-signal=SIGINT,SIGTERM,SIGHUP "$@" >"$TEST_TMP/background.stdout" \
        2>"$TEST_TMP/background.stderr" &
    COMMAND_PID=$!
    BACKGROUND_PIDS+=("$COMMAND_PID")
}

# Wait until a file matches the glob PATTERN, while the command runs.
wait_for_file() {
    local pattern=$1 tries
    for ((tries = APPEAR_TIMEOUT * 10; tries > 0; tries--)); do
        compgen -G "$pattern" >/dev/null && return 0
        if ! kill -0 "$COMMAND_PID" 2>/dev/null; then
            cat -- "$TEST_TMP/background.stderr" >&2
            fail "the command ended before a file matched $pattern"
        fi
        sleep 0.1
    done
    fail "no file matched $pattern within $APPEAR_TIMEOUT s"
}

# Send SIGNAL to the command, wait for it and check its exit status.
# interrupt_command SIGNAL STATUS
interrupt_command() {
    local signal=$1 expected=$2 status=0
    kill -s "$signal" "$COMMAND_PID" || fail "cannot send $signal to $COMMAND_PID"
    wait "$COMMAND_PID" || status=$?
    BACKGROUND_PIDS=() # the only background process, now ended
    if [[ $status != "$expected" ]]; then
        cat -- "$TEST_TMP/background.stderr" >&2
        fail "the command exited with $status after $signal instead of $expected"
    fi
}

expect_empty_folder() {
    local left
    left=$(ls -A -- "$1")
    [[ -z $left ]] || fail "the interrupted command left files in $1: $left"
}

# Sign or decrypt FILES into a new folder, interrupt the command and check that the folder
# stays empty: interrupt_batch SIGNAL STATUS DIR COMMAND FILE...
interrupt_batch() {
    local signal=$1 status=$2 dir=$3 command=$4
    shift 4
    mkdir -p -- "$dir"
    local options=(--module "$P11FAULT_SO" --pin-file "$PIN_FILE" --jobs 2 --out-dir "$dir")
    [[ $command == sign ]] && options+=(--key "$KEY")
    start_command "$P11SMIME" "$command" "${options[@]}" "$@"
    wait_for_file "$dir/*.p11smime-*"
    interrupt_command "$signal" "$status"
    expect_empty_folder "$dir"
}

step "sign batch: SIGTERM"
printf 'C_Sign CKR_OK delay %d\n' "$DELAY_MS" >"$P11FAULT_CONTROL"
interrupt_batch TERM 143 "$TEST_TMP/signed-term" sign "${INPUTS[@]}"

step "sign batch: SIGINT"
interrupt_batch INT 130 "$TEST_TMP/signed-int" sign "${INPUTS[@]}"

step "decrypt batch: SIGTERM"
printf 'C_Decrypt CKR_OK delay %d\n' "$DELAY_MS" >"$P11FAULT_CONTROL"
interrupt_batch TERM 143 "$TEST_TMP/decrypted-term" decrypt "${ENCRYPTED[@]}"

step "decrypt batch: SIGHUP"
interrupt_batch HUP 129 "$TEST_TMP/decrypted-hup" decrypt "${ENCRYPTED[@]}"

# Sign one message with --in and --out into a new folder: start_one_shot DIR.
start_one_shot() {
    mkdir -p -- "$1"
    start_command "$P11SMIME" sign --module "$P11FAULT_SO" --key "$KEY" \
        --pin-file "$PIN_FILE" --in "${INPUTS[0]}" --out "$1/signed.eml"
    wait_for_file "$1/signed.eml.p11smime-*"
}

printf 'C_Sign CKR_OK delay %d\n' "$DELAY_MS" >"$P11FAULT_CONTROL"
step "sign --out: SIGTERM"
start_one_shot "$TEST_TMP/one-term"
interrupt_command TERM 143
expect_empty_folder "$TEST_TMP/one-term"

step "sign --out: SIGHUP keeps the old output"
mkdir -p -- "$TEST_TMP/one-hup"
echo "old content" >"$TEST_TMP/one-hup/signed.eml"
start_one_shot "$TEST_TMP/one-hup"
interrupt_command HUP 129
[[ $(ls -A -- "$TEST_TMP/one-hup") == signed.eml ]] ||
    fail "the interrupted command left files in $TEST_TMP/one-hup: $(ls -A -- "$TEST_TMP/one-hup")"
[[ $(cat -- "$TEST_TMP/one-hup/signed.eml") == "old content" ]] ||
    fail "the interrupted command changed the existing output"

step "sign --out: ignored SIGINT"
# The delay is shorter, because this command runs to its end.
printf 'C_Sign CKR_OK delay 1000\n' >"$P11FAULT_CONTROL"
mkdir -p -- "$TEST_TMP/one-ignored"
env --ignore-signal=SIGINT "$P11SMIME" sign --module "$P11FAULT_SO" --key "$KEY" \
    --pin-file "$PIN_FILE" --in "${INPUTS[0]}" --out "$TEST_TMP/one-ignored/signed.eml" \
    >"$TEST_TMP/background.stdout" 2>"$TEST_TMP/background.stderr" &
COMMAND_PID=$!
BACKGROUND_PIDS+=("$COMMAND_PID")
wait_for_file "$TEST_TMP/one-ignored/signed.eml.p11smime-*"
interrupt_command INT 0
expect_exit 0 openssl cms -verify -CAfile "$CA_FILE" -purpose any \
    -in "$TEST_TMP/one-ignored/signed.eml" -out "$TEST_TMP/content.eml"
[[ $(ls -A -- "$TEST_TMP/one-ignored") == signed.eml ]] ||
    fail "files besides the output in $TEST_TMP/one-ignored: $(ls -A -- "$TEST_TMP/one-ignored")"
