#!/usr/bin/env bash
# p11smime-git as git's X.509 signing program (gpg.format=x509): real git signs commits and
# tags with keys on a SoftHSM token and verifies them. gpgsm and openssl cms check the same
# signatures, a tampered commit and an untrusted CA fail, and p11smime-git verifies a commit
# that gpgsm signed.
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command git gpgsm openssl python3
P11SMIME_GIT=$(dirname -- "$P11SMIME")/p11smime-git
[[ -x $P11SMIME_GIT ]] || fail "p11smime-git was not built next to $P11SMIME"
make_test_dir
setup_token

# git reads no configuration but the repository's own.
export HOME=$TEST_TMP/home GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
mkdir -p -- "$HOME"
export P11SMIME_MODULE=$SOFTHSM_MODULE

REPO=$TEST_TMP/repo
git init -q "$REPO"
cd -- "$REPO"
git config user.name "Test Signer"
git config user.email rsa2048@example.org
git config gpg.format x509
git config gpg.x509.program "$P11SMIME_GIT"
git config p11smime.pinFile "$PIN_FILE"
git config p11smime.caFile "$CA_FILE"
git config p11smime.systemCa false

sha1_fingerprint() {
    openssl x509 -in "$1" -noout -fingerprint -sha1 | cut -d= -f2 | tr -d :
}

# Write the signature of a commit or tag to SIGNATURE and the signed bytes to PAYLOAD. The
# payload of a commit is the object without its gpgsig header; a tag's signature is at the end.
split_signed_object() {
    local type=$1 object=$2 payload=$3 signature=$4
    git cat-file "$type" "$object" >"$TEST_TMP/object"
    python3 - "$type" "$TEST_TMP/object" "$payload" "$signature" <<'PY'
import re
import sys

kind, object_path, payload_path, signature_path = sys.argv[1:5]
raw = open(object_path, "rb").read()
if kind == "commit":
    match = re.search(rb"^gpgsig (.*?\n)(?! )", raw, re.MULTILINE | re.DOTALL)
    if not match:
        sys.exit("commit has no gpgsig header")
    signature = re.sub(rb"\n ", b"\n", match.group(1))
    payload = raw[:match.start()] + raw[match.end():]
else:
    start = raw.find(b"-----BEGIN SIGNED MESSAGE-----")
    if start < 0:
        sys.exit("tag has no signature")
    signature, payload = raw[start:], raw[:start]
open(payload_path, "wb").write(payload)
open(signature_path, "wb").write(signature)
PY
}

# openssl cms verifies the detached signature over the payload; it reads PEM labelled PKCS7.
openssl_verify() {
    local payload=$1 signature=$2
    sed 's/SIGNED MESSAGE/PKCS7/' "$signature" >"$TEST_TMP/signature.p7"
    expect_exit 0 openssl cms -verify -binary -inform PEM -in "$TEST_TMP/signature.p7" \
        -content "$payload" -CAfile "$CA_FILE" -purpose smimesign -out /dev/null
}

step "commit -S picks the key whose certificate has user.email"
echo "first change" >file.txt
git add file.txt
expect_exit 0 git commit -q -S -m "first change"
git cat-file commit HEAD >"$TEST_TMP/commit.txt"
grep -q '^gpgsig -----BEGIN SIGNED MESSAGE-----$' "$TEST_TMP/commit.txt" ||
    fail "the commit has no gpgsig header in gpgsm's armor"

step "verify-commit and log --show-signature report a good signature"
expect_exit 0 git verify-commit HEAD
expect_stderr_contains 'p11smime: Good signature from "CN=rsa2048 test signer"'
expect_stderr_contains 'aka "rsa2048@example.org"'
expect_exit 0 git verify-commit --raw HEAD
expect_stderr_contains "[GNUPG:] GOODSIG $(sha1_fingerprint "$HSM_DIR/certs/rsa2048.pem") "
expect_stderr_contains "[GNUPG:] VALIDSIG $(sha1_fingerprint "$HSM_DIR/certs/rsa2048.pem") "
expect_stderr_contains "[GNUPG:] TRUST_FULLY 0 shell"
expect_exit 0 git log -1 --show-signature
expect_stdout_contains 'p11smime: Good signature from "CN=rsa2048 test signer"'
expect_exit 0 git log -1 --format='%G? %GF %GT'
[[ $(cat "$LAST_STDOUT") == "G $(sha1_fingerprint "$HSM_DIR/certs/rsa2048.pem") fully" ]] ||
    fail "git log shows '$(cat "$LAST_STDOUT")' instead of a good, fully trusted signature"

step "gpgsm and openssl cms verify the commit signature"
setup_gpgsm_home "$CA_FILE"
expect_exit 0 git -c gpg.x509.program=gpgsm verify-commit --raw HEAD
expect_stderr_contains "[GNUPG:] GOODSIG "
expect_stderr_contains "[GNUPG:] TRUST_FULLY"
split_signed_object commit HEAD "$TEST_TMP/payload" "$TEST_TMP/signature.asc"
openssl_verify "$TEST_TMP/payload" "$TEST_TMP/signature.asc"

step "a tampered commit fails verification"
sed 's/^first change$/second change/' "$TEST_TMP/commit.txt" >"$TEST_TMP/tampered.txt"
tampered=$(git hash-object -t commit -w "$TEST_TMP/tampered.txt")
expect_exit 1 git verify-commit --raw "$tampered"
expect_stderr_contains "[GNUPG:] BADSIG $(sha1_fingerprint "$HSM_DIR/certs/rsa2048.pem") "
expect_exit 1 git verify-commit "$tampered"
expect_stderr_contains 'p11smime: BAD signature from "CN=rsa2048 test signer"'
expect_p11smime_error "the signature does not match the content"
expect_exit 0 git log -1 --format='%G?' "$tampered"
[[ $(cat "$LAST_STDOUT") == B ]] || fail "git log shows '$(cat "$LAST_STDOUT")' instead of B"
expect_exit 1 git -c gpg.x509.program=gpgsm verify-commit --raw "$tampered"
expect_stderr_contains "[GNUPG:] BADSIG "

step "an untrusted CA fails verification, and the environment overrides git config"
P11SMIME_CA_FILE=$OTHER_CA_FILE expect_exit 1 git verify-commit --raw HEAD
expect_stderr_contains "[GNUPG:] GOODSIG "
expect_stderr_contains "[GNUPG:] TRUST_NEVER"
P11SMIME_CA_FILE=$OTHER_CA_FILE expect_exit 1 git verify-commit HEAD
expect_p11smime_error "is not valid"

step "user.signingKey as a PKCS#11 URI signs a commit and a tag"
git config user.signingKey "${KEY_URI[p256]}"
echo "second change" >>file.txt
expect_exit 0 git commit -q -S -a -m "second change"
expect_exit 0 git verify-commit HEAD
expect_stderr_contains 'Good signature from "CN=p256 test signer"'
expect_exit 0 git tag -s v1.0 -m "release 1.0"
expect_exit 0 git verify-tag --raw v1.0
expect_stderr_contains "[GNUPG:] GOODSIG $(sha1_fingerprint "$HSM_DIR/certs/p256.pem") "
expect_stderr_contains "[GNUPG:] VALIDSIG $(sha1_fingerprint "$HSM_DIR/certs/p256.pem") "
expect_exit 0 git -c gpg.x509.program=gpgsm verify-tag --raw v1.0
expect_stderr_contains "[GNUPG:] GOODSIG "
split_signed_object tag v1.0 "$TEST_TMP/tag-payload" "$TEST_TMP/tag-signature.asc"
openssl_verify "$TEST_TMP/tag-payload" "$TEST_TMP/tag-signature.asc"
expect_exit 0 git tag -v v1.0
expect_stderr_contains 'Good signature from "CN=p256 test signer"'

step "user.signingKey as a certificate fingerprint"
git config user.signingKey "0x$(sha1_fingerprint "$HSM_DIR/certs/rsa3072.pem")"
expect_exit 0 git commit -q -S --allow-empty -m "fingerprint"
expect_exit 0 git log -1 --format='%G? %GF'
[[ $(cat "$LAST_STDOUT") == "G $(sha1_fingerprint "$HSM_DIR/certs/rsa3072.pem")" ]] ||
    fail "git log shows '$(cat "$LAST_STDOUT")' instead of the rsa3072 certificate"

step "an address without a certificate fails to sign and leaves HEAD alone"
git config --unset user.signingKey
head_before=$(git rev-parse HEAD)
expect_exit 128 git -c user.email=nobody@example.org commit -q -S --allow-empty -m "no key"
[[ $(git rev-parse HEAD) == "$head_before" ]] || fail "a commit was made without a signature"
# git 2.39 hides the signing program's messages, so check them on a direct call.
expect_exit 2 "$P11SMIME_GIT" --status-fd=2 -bsau "Test Signer <nobody@example.org>" \
    </dev/null
expect_p11smime_error "no token certificate has the email address nobody@example.org"
[[ ! -s $LAST_STDOUT ]] || fail "p11smime-git wrote a signature although it failed"

step "a wrong PIN fails to sign"
printf '000000\n' >"$TEST_TMP/wrong-pin.txt"
expect_exit 128 git -c p11smime.pinFile="$TEST_TMP/wrong-pin.txt" commit -q -S --allow-empty \
    -m "wrong PIN"
[[ $(git rev-parse HEAD) == "$head_before" ]] || fail "a commit was made after a wrong PIN"
P11SMIME_PIN_FILE=$TEST_TMP/wrong-pin.txt expect_exit 2 "$P11SMIME_GIT" --status-fd=2 \
    -bsau rsa2048@example.org </dev/null
expect_p11smime_error "CKR_PIN_INCORRECT"

step "a commit signed by gpgsm verifies with p11smime-git"
openssl req -new -newkey rsa:2048 -nodes -keyout "$TEST_TMP/gpgsm.key" \
    -subj "/CN=gpgsm signer" -out "$TEST_TMP/gpgsm.csr" 2>/dev/null
printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=emailProtection" "subjectAltName=email:gpgsm@example.org" \
    >"$TEST_TMP/gpgsm-ext.cnf"
expect_exit 0 openssl x509 -req -in "$TEST_TMP/gpgsm.csr" -CA "$CA_FILE" \
    -CAkey "$HSM_DIR/ca/ca.key" -CAcreateserial -CAserial "$TEST_TMP/gpgsm.srl" -days 30 \
    -extfile "$TEST_TMP/gpgsm-ext.cnf" -out "$TEST_TMP/gpgsm.pem"
# gpgsm 2.2.40 accepts only the legacy PKCS#12 algorithms, and a key imported with a
# passphrase through loopback pinentry.
expect_exit 0 openssl pkcs12 -export -keypbe PBE-SHA1-3DES -certpbe PBE-SHA1-3DES \
    -macalg sha1 -inkey "$TEST_TMP/gpgsm.key" -in "$TEST_TMP/gpgsm.pem" \
    -passout pass:p11smime -out "$TEST_TMP/gpgsm.p12"
echo allow-loopback-pinentry >"$GNUPGHOME/gpg-agent.conf"
gpgconf --kill gpg-agent # the agent that the gpgsm checks above started reads it again
printf 'p11smime\n' >"$TEST_TMP/passphrase"
expect_exit 0 gpgsm --batch --pinentry-mode loopback --passphrase-fd 3 \
    --import "$TEST_TMP/gpgsm.p12" 3<"$TEST_TMP/passphrase"
cat >"$TEST_TMP/gpgsm-signer" <<EOF
#!/bin/sh
exec gpgsm --batch --pinentry-mode loopback --passphrase-fd 3 "\$@" 3<"$TEST_TMP/passphrase"
EOF
chmod +x "$TEST_TMP/gpgsm-signer"
expect_exit 0 git -c gpg.x509.program="$TEST_TMP/gpgsm-signer" \
    -c user.signingKey="$(sha1_fingerprint "$TEST_TMP/gpgsm.pem")" \
    commit -q -S --allow-empty -m "signed by gpgsm"
expect_exit 0 git verify-commit --raw HEAD
expect_stderr_contains "[GNUPG:] GOODSIG $(sha1_fingerprint "$TEST_TMP/gpgsm.pem") "
expect_stderr_contains "[GNUPG:] TRUST_FULLY 0 shell"

step "p11smime-git itself: status lines, DER output and usage errors"
printf 'data\n' >"$TEST_TMP/data"
expect_exit 0 "$P11SMIME_GIT" --status-fd=2 -bsu "${KEY_URI[p256]}" <"$TEST_TMP/data"
expect_stderr_contains "[GNUPG:] SIG_CREATED D 301 8 00 "
openssl cms -verify -binary -inform DER -in "$LAST_STDOUT" -content "$TEST_TMP/data" \
    -CAfile "$CA_FILE" -purpose smimesign -out /dev/null 2>"$TEST_TMP/openssl.err" ||
    fail "openssl cms rejects the DER signature: $(cat "$TEST_TMP/openssl.err")"
expect_exit 2 "$P11SMIME_GIT" --status-fd=2 -sau "${KEY_URI[p256]}" <"$TEST_TMP/data"
expect_p11smime_error "only detached signatures"
expect_exit 2 "$P11SMIME_GIT" --bogus
expect_p11smime_error "unknown option"
expect_exit 2 "$P11SMIME_GIT" --status-fd=1 --verify "$TEST_TMP/missing.asc" - <"$TEST_TMP/data"
expect_p11smime_error "missing.asc"
expect_exit 0 "$P11SMIME_GIT" --help
expect_stdout_contains "gpg.x509.program p11smime-git"

echo "PASS: $TEST_NAME"
