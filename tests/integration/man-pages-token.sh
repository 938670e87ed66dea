#!/usr/bin/env bash
# The man pages of p11smime and of its keygen, csr, import, readers and doctor commands
# render without warnings, and each documents every long option of its command's --help.
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command man
make_test_dir

readonly COMMANDS=(keygen csr import readers doctor)

render() {
    LC_ALL=C.UTF-8 MANWIDTH=100 man --warnings -l "$1" >"$TEST_TMP/page.txt" \
        2>"$TEST_TMP/warnings.txt" || fail "man cannot render $1"
    [[ ! -s $TEST_TMP/warnings.txt ]] || fail "man warns about $1: $(cat "$TEST_TMP/warnings.txt")"
    [[ $(wc -l <"$TEST_TMP/page.txt") -gt 20 ]] || fail "$1 renders almost empty"
}

step "p11smime.1 renders and names every command"
render "$SOURCE_DIR/docs/man/p11smime.1"
"$P11SMIME" --help >"$TEST_TMP/help.txt"
for command in $(awk '/^Subcommands:/ { listing = 1; next } listing && /^  [a-z]/ { print $1 }' \
    "$TEST_TMP/help.txt"); do
    grep -qE "^ +$command\$|^ +$command " "$TEST_TMP/page.txt" ||
        fail "p11smime.1 does not describe the command $command"
done

for command in "${COMMANDS[@]}"; do
    page=$SOURCE_DIR/docs/man/p11smime-$command.1
    step "p11smime-$command.1 renders and documents p11smime $command --help"
    render "$page"
    "$P11SMIME" "$command" --help >"$TEST_TMP/$command-help.txt"
    for option in $(grep -oE -- '--[a-z][a-z0-9-]+' "$TEST_TMP/$command-help.txt" | sort -u); do
        [[ $option == --help ]] && continue
        grep -qF -- "$option" "$TEST_TMP/page.txt" ||
            fail "p11smime-$command.1 does not document $option"
    done
    grep -qF "EXIT STATUS" "$TEST_TMP/page.txt" || fail "p11smime-$command.1 has no EXIT STATUS"
done

echo "PASS: $TEST_NAME"
