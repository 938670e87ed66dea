#!/usr/bin/env bash
# `p11smime readers` against a real pcscd with a virtual reader (vsmartcard-vpcd) and card
# (vicc), in the test's own mount and network namespaces. It checks the card absent and
# present with its ATR, --wait with and without a card, --json, the OpenSC slot of each
# reader, and pcscd stopped.
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

enter_private_namespace "$@"
require_p11smime
require_command opensc-tool
[[ -f $OPENSC_MODULE ]] || skip "OpenSC's PKCS#11 module $OPENSC_MODULE is missing"
make_test_dir
start_pcscd

readers() {
    expect_exit "$1" "$P11SMIME" readers --module "$OPENSC_MODULE" "${@:2}"
}

# Print the lines of the last readers output that belong to READER.
reader_block() {
    awk -v name="$1" '/^[^ ]/ { keep = ($0 == name) } keep' "$LAST_STDOUT"
}

card_absent() {
    "$P11SMIME" readers --module "$OPENSC_MODULE" 2>/dev/null |
        awk -v name="$VIRTUAL_READER" '/^[^ ]/ { keep = ($0 == name) } keep' |
        grep -qF 'card:   absent'
}

step "both virtual readers are listed with no card"
readers 0
expect_stdout_contains "$VIRTUAL_READER"
expect_stdout_contains "Virtual PCD 00 01"
reader_block "$VIRTUAL_READER" | grep -qF 'card:   absent' ||
    fail "$VIRTUAL_READER is not listed with its card absent"
reader_block "$VIRTUAL_READER" | grep -qE '^  slot: +[0-9]+, no token' ||
    fail "$VIRTUAL_READER is not paired with an empty OpenSC slot"

step "--wait without a card times out"
readers 2 --wait --timeout 2
expect_p11smime_error "timed out after 2 s waiting for a card"

step "--wait returns when the virtual card is inserted"
"$P11SMIME" readers --module "$OPENSC_MODULE" --wait --timeout 30 \
    >"$TEST_TMP/wait.stdout" 2>"$TEST_TMP/wait.stderr" &
wait_pid=$!
sleep 1
kill -0 "$wait_pid" 2>/dev/null || fail "readers --wait returned before a card was inserted"
start_virtual_card
wait_status=0
wait "$wait_pid" || wait_status=$?
[[ $wait_status == 0 ]] ||
    fail "readers --wait exited with $wait_status: $(cat "$TEST_TMP/wait.stderr")"
LAST_STDOUT=$TEST_TMP/wait.stdout
reader_block "$VIRTUAL_READER" | grep -qF 'card:   present, ATR ' ||
    fail "readers --wait does not show the card in $VIRTUAL_READER: $(cat "$LAST_STDOUT")"

step "the ATR is the one opensc-tool reads"
expect_exit 0 opensc-tool --reader "$VIRTUAL_READER" --atr
opensc_atr=$(grep -oE '^([0-9a-f]{2}:)+[0-9a-f]{2}$' "$LAST_STDOUT" | head -n 1)
[[ -n $opensc_atr ]] || fail "opensc-tool printed no ATR: $(cat "$LAST_STDOUT")"
readers 0
reader_block "$VIRTUAL_READER" | grep -qF "card:   present, ATR $opensc_atr" ||
    fail "readers does not show ATR $opensc_atr: $(cat "$LAST_STDOUT")"
reader_block "$VIRTUAL_READER" | grep -qE '^  slot: +[0-9]+, no token' ||
    fail "OpenSC recognised the ISO 7816 test card, which has no PKCS#15 application"

step "--wait with a card already present returns at once"
readers 0 --wait --timeout 5
expect_stdout_contains "card:   present"

step "--wait for the other reader times out while the card is in the first"
readers 2 --wait --timeout 2 --reader "Virtual PCD 00 01"
expect_p11smime_error "in reader 'Virtual PCD 00 01'"

step "--json"
readers 0 --json
python3 - "$LAST_STDOUT" "$VIRTUAL_READER" "$opensc_atr" "$OPENSC_MODULE" <<'PY' ||
import json
import sys

path, name, atr, module = sys.argv[1:5]
document = json.load(open(path))
readers = {reader["name"]: reader for reader in document["readers"]}
assert document["module"] == module, document["module"]
assert name in readers, sorted(readers)
reader = readers[name]
assert reader["card_present"] is True, reader
assert reader["atr"] == atr, reader["atr"]
assert reader["slots"], "no slot for the reader"
assert reader["slots"][0]["token_present"] is False, reader["slots"]
other = readers["Virtual PCD 00 01"]
assert other["card_present"] is False and other["atr"] == "", other
PY
    fail "readers --json is not what the text output shows: $(cat "$LAST_STDOUT")"

step "removing the card shows it absent"
stop_virtual_card
wait_until 10 card_absent || fail "$VIRTUAL_READER still shows a card 10 s after vicc stopped"

step "without pcscd, readers fails and says how to start it"
stop_pcscd
readers 2
expect_p11smime_error "SCardEstablishContext failed"
expect_stderr_contains "start pcscd"

echo "PASS: $TEST_NAME"
