#!/usr/bin/env bash
# The man pages in docs/man render without warnings, and each documents every long option
# that its command's --help lists.
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command man
make_test_dir

for page in "$SOURCE_DIR"/docs/man/*.1; do
    step "$(basename -- "$page") renders without warnings"
    LC_ALL=C.UTF-8 MANWIDTH=100 man --warnings -l "$page" >"$TEST_TMP/page.txt" \
        2>"$TEST_TMP/warnings.txt" || fail "man cannot render $page"
    [[ ! -s $TEST_TMP/warnings.txt ]] ||
        fail "man warns about $page: $(cat "$TEST_TMP/warnings.txt")"
    [[ $(wc -l <"$TEST_TMP/page.txt") -gt 20 ]] || fail "$page renders almost empty"
done

# Check that the page of COMMAND (p11smime-NAME.1) names every --option in HELP_OUTPUT.
expect_options_documented() {
    local page=$SOURCE_DIR/docs/man/$1.1 help=$2 option
    LC_ALL=C.UTF-8 MANWIDTH=100 man -l "$page" 2>/dev/null >"$TEST_TMP/page.txt"
    for option in $(grep -oE -- '--[a-z][a-z0-9-]+' "$help" | sort -u); do
        grep -qF -- "$option" "$TEST_TMP/page.txt" || fail "$1.1 does not document $option"
    done
}

step "p11smime-sendmail.1 documents the options of p11smime sendmail --help"
"$P11SMIME" sendmail --help >"$TEST_TMP/sendmail-help.txt"
expect_options_documented p11smime-sendmail "$TEST_TMP/sendmail-help.txt"

step "p11smime-git.1 documents the options of p11smime-git --help"
"$(dirname -- "$P11SMIME")/p11smime-git" --help >"$TEST_TMP/git-help.txt"
expect_options_documented p11smime-git "$TEST_TMP/git-help.txt"

echo "PASS: $TEST_NAME"
