#!/usr/bin/env bash
# An interrupted command leaves no partial output. The fault module
# (tests/fault/fault_module.cpp) delays every C_Sign or C_Decrypt by DELAY_MS, as a slow token
# does, so `sign` and `decrypt` keep their unfinished outputs open meanwhile. The test waits
# until one is open, sends SIGTERM, SIGINT or SIGHUP, and expects the exit status 128 + the
# signal number and no output or temporary file. An ignored SIGINT, as under nohup, must stay
# ignored, and a signal during the PIN prompt must leave the terminal's echo on.
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
# Seconds to wait for the first unfinished output. The login and key search before it took
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

# Wait until the command has a file open in the folder DIR, which is its unfinished output:
# an unnamed file (O_TMPFILE), or a named temporary file where the file system lacks those.
wait_for_output_in() {
    local dir=$1 tries fd target
    for ((tries = APPEAR_TIMEOUT * 10; tries > 0; tries--)); do
        for fd in /proc/"$COMMAND_PID"/fd/*; do
            target=$(readlink -- "$fd" 2>/dev/null) || continue
            [[ $target == "$dir"/* ]] && return 0
        done
        if ! kill -0 "$COMMAND_PID" 2>/dev/null; then
            cat -- "$TEST_TMP/background.stderr" >&2
            fail "the command ended before it opened an output in $dir"
        fi
        sleep 0.1
    done
    fail "the command opened no output in $dir within $APPEAR_TIMEOUT s"
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
    wait_for_output_in "$dir"
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
    wait_for_output_in "$1"
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
wait_for_output_in "$TEST_TMP/one-ignored"
interrupt_command INT 0
expect_exit 0 openssl cms -verify -CAfile "$CA_FILE" -purpose any \
    -in "$TEST_TMP/one-ignored/signed.eml" -out "$TEST_TMP/content.eml"
[[ $(ls -A -- "$TEST_TMP/one-ignored") == signed.eml ]] ||
    fail "files besides the output in $TEST_TMP/one-ignored: $(ls -A -- "$TEST_TMP/one-ignored")"

step "PIN prompt: SIGINT restores echo"
# script gives the command a terminal. The inner shell records the PID that becomes p11smime,
# then prints the terminal's settings once it has ended.
rm -f -- "$TEST_TMP/prompt.pid"
sign_line=$(printf '%q ' "$P11SMIME" sign --module "$P11FAULT_SO" --key "$KEY" \
    --in "${INPUTS[0]}" --out "$TEST_TMP/prompted.eml")
inner=$(printf 'sh -c %q; stty -a' "echo \$\$ >$TEST_TMP/prompt.pid; exec $sign_line")
# script copies its standard input to the terminal, so an open FIFO without a writer keeps
# the prompt waiting instead of giving it end-of-file.
mkfifo -- "$TEST_TMP/no-input"
exec {no_input}<>"$TEST_TMP/no-input"
# A background command of a script reads /dev/null unless its own line redirects stdin.
env --default-signal=SIGINT,SIGTERM,SIGHUP script -qefc "$inner" "$TEST_TMP/prompt.typescript" \
    <&"$no_input" >/dev/null 2>&1 &
script_pid=$!
BACKGROUND_PIDS+=("$script_pid")
for ((tries = APPEAR_TIMEOUT * 10; tries > 0; tries--)); do
    grep -q "PIN for token" -- "$TEST_TMP/prompt.typescript" 2>/dev/null && break
    sleep 0.1
done
grep -q "PIN for token" -- "$TEST_TMP/prompt.typescript" || fail "no PIN prompt appeared"
kill -s INT "$(cat -- "$TEST_TMP/prompt.pid")"
wait "$script_pid" || true
BACKGROUND_PIDS=()
exec {no_input}>&-
grep -Eq '(^| )echo( |$)' -- "$TEST_TMP/prompt.typescript" ||
    fail "the terminal's echo stayed off after SIGINT"
[[ ! -e $TEST_TMP/prompted.eml ]] || fail "the interrupted command wrote its --out file"
