#!/usr/bin/env bash
# softhsm-setup/setup.sh makes the token, keys and certificates that the other tests rely
# on, reuses a complete set-up and redoes a half-made one. software-recipients.sh issues the
# software recipient keys and certificates that peers decrypt with.
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_command openssl pkcs11-tool
make_test_dir

readonly SETUP=$SOURCE_DIR/softhsm-setup/setup.sh
readonly SYSTEM_TOKEN_DIR=/var/lib/softhsm/tokens
readonly NAMES=(rsa2048 rsa3072 p256 p384 expired)
declare -A KEY_IDS=([rsa2048]=01 [rsa3072]=02 [p256]=03 [p384]=04 [expired]=10)

list_system_tokens() {
    if [[ -d $SYSTEM_TOKEN_DIR ]]; then
        ls -la --time-style=full-iso -- "$SYSTEM_TOKEN_DIR"
    fi
}

run_pkcs11_tool() {
    pkcs11-tool --module "$SOFTHSM_MODULE" --token-label p11smime-test "$@"
}

step "first run"
list_system_tokens >"$TEST_TMP/system-before.txt"
start=$SECONDS
expect_exit 0 bash "$SETUP" "$TEST_TMP/hsm"
elapsed=$((SECONDS - start))
cp -- "$LAST_STDOUT" "$TEST_TMP/first-run.txt"
# The set-up runs in every test, so a slow one slows the whole suite.
((elapsed <= 10)) || fail "setup.sh took $elapsed s, expected at most 10 s"
list_system_tokens >"$TEST_TMP/system-after.txt"
cmp -s "$TEST_TMP/system-before.txt" "$TEST_TMP/system-after.txt" ||
    fail "setup.sh changed the system token directory $SYSTEM_TOKEN_DIR"

HSM_DIR=$TEST_TMP/hsm
export SOFTHSM2_CONF=$HSM_DIR/softhsm2.conf

step "printed lines"
expected_export="export SOFTHSM2_CONF=$HSM_DIR/softhsm2.conf"
[[ $(head -n 1 "$TEST_TMP/first-run.txt") == "$expected_export" ]] ||
    fail "first line is not \"$expected_export\""
tail -n +2 "$TEST_TMP/first-run.txt" >"$TEST_TMP/printed-uris.txt"
cmp -s "$TEST_TMP/printed-uris.txt" "$HSM_DIR/uris.txt" ||
    fail "the printed key lines differ from $HSM_DIR/uris.txt"
for name in "${NAMES[@]}"; do
    grep -qxF "$name pkcs11:token=p11smime-test;object=$name;type=private" \
        "$HSM_DIR/uris.txt" || fail "uris.txt has no line for $name"
done

step "configuration and PIN file"
for line in "directories.tokendir = $HSM_DIR/tokens" "objectstore.backend = file" \
    "log.level = ERROR"; do
    grep -qxF "$line" "$HSM_DIR/softhsm2.conf" || fail "softhsm2.conf lacks \"$line\""
done
[[ $(stat -c %a "$HSM_DIR/pin.txt") == 600 ]] || fail "pin.txt is not mode 0600"
[[ $(head -n 1 "$HSM_DIR/pin.txt") == 123456 ]] || fail "pin.txt does not contain 123456"

step "CA certificates"
for ca in ca other-ca; do
    openssl x509 -in "$HSM_DIR/ca/$ca.pem" -noout -ext basicConstraints,keyUsage \
        >"$TEST_TMP/$ca.ext"
    grep -q 'CA:TRUE' "$TEST_TMP/$ca.ext" || fail "$ca.pem is not a CA certificate"
    grep -q 'Certificate Sign, CRL Sign' "$TEST_TMP/$ca.ext" ||
        fail "$ca.pem lacks keyUsage keyCertSign, cRLSign"
done
cmp -s "$HSM_DIR/chain.pem" "$HSM_DIR/ca/ca.pem" || fail "chain.pem is not the CA certificate"
expect_exit 2 openssl verify -CAfile "$HSM_DIR/ca/other-ca.pem" "$HSM_DIR/certs/rsa2048.pem"

step "token objects"
expect_exit 0 run_pkcs11_tool --login --pin 123456 --list-objects
cp -- "$LAST_STDOUT" "$TEST_TMP/objects.txt"
# pkcs11-tool prints one block per object, so split the listing at each object header.
for name in "${NAMES[@]}"; do
    for kind in 'Private Key Object' 'Public Key Object' 'Certificate Object'; do
        awk -v kind="$kind" -v name="$name" -v id="${KEY_IDS[$name]}" '
            /Object;/ { found = found || (in_kind && has_label && has_id)
                        in_kind = index($0, kind) == 1; has_label = 0; has_id = 0 }
            $1 == "label:" && $2 == name { has_label = 1 }
            $1 == "ID:" && $2 == id { has_id = 1 }
            END { exit !(found || (in_kind && has_label && has_id)) }' \
            "$TEST_TMP/objects.txt" ||
            fail "no $kind with label $name and ID ${KEY_IDS[$name]} on the token"
    done
done
private_keys=$(grep -c '^Private Key Object' "$TEST_TMP/objects.txt")
[[ $private_keys == "${#NAMES[@]}" ]] ||
    fail "the token has $private_keys private keys, expected ${#NAMES[@]}"
protected_keys=$(grep -c 'Access: *sensitive, always sensitive, never extractable' \
    "$TEST_TMP/objects.txt")
[[ $protected_keys == "${#NAMES[@]}" ]] ||
    fail "$protected_keys of ${#NAMES[@]} private keys are sensitive and never extractable"

step "certificates match the token keys"
# The token signs and the certificate's key verifies, which checks the key binding without
# the engine that setup.sh uses for its own check.
printf 'data signed on the token\n' >"$TEST_TMP/data.txt"
for name in "${NAMES[@]}"; do
    cert=$HSM_DIR/certs/$name.pem
    openssl x509 -in "$cert" -pubkey -noout >"$TEST_TMP/$name.pub"
    if [[ $name == p* ]]; then
        # SoftHSM 2.6.1 offers only raw CKM_ECDSA, so the token signs a SHA-256 hash.
        openssl dgst -sha256 -binary -out "$TEST_TMP/data.sha256" "$TEST_TMP/data.txt"
        expect_exit 0 run_pkcs11_tool --login --pin 123456 --sign --id "${KEY_IDS[$name]}" \
            --mechanism ECDSA --signature-format openssl \
            --input-file "$TEST_TMP/data.sha256" --output-file "$TEST_TMP/$name.sig"
        expect_exit 0 openssl pkeyutl -verify -pubin -inkey "$TEST_TMP/$name.pub" \
            -sigfile "$TEST_TMP/$name.sig" -in "$TEST_TMP/data.sha256"
    else
        expect_exit 0 run_pkcs11_tool --login --pin 123456 --sign --id "${KEY_IDS[$name]}" \
            --mechanism SHA256-RSA-PKCS --input-file "$TEST_TMP/data.txt" \
            --output-file "$TEST_TMP/$name.sig"
        expect_exit 0 openssl dgst -sha256 -verify "$TEST_TMP/$name.pub" \
            -signature "$TEST_TMP/$name.sig" "$TEST_TMP/data.txt"
    fi

    expect_exit 0 run_pkcs11_tool --read-object --type cert --id "${KEY_IDS[$name]}" \
        --output-file "$TEST_TMP/$name.token-cert.der"
    openssl x509 -in "$cert" -outform DER -out "$TEST_TMP/$name.file-cert.der"
    cmp -s "$TEST_TMP/$name.token-cert.der" "$TEST_TMP/$name.file-cert.der" ||
        fail "the certificate on the token differs from certs/$name.pem"
done

step "certificate contents"
for name in "${NAMES[@]}"; do
    cert=$HSM_DIR/certs/$name.pem
    openssl x509 -in "$cert" -noout -subject \
        -ext subjectAltName,keyUsage,extendedKeyUsage >"$TEST_TMP/$name.ext"
    grep -qF "CN = $name test signer" "$TEST_TMP/$name.ext" || fail "$name: wrong subject"
    grep -qF "email:$name@example.org" "$TEST_TMP/$name.ext" || fail "$name: wrong SAN"
    grep -qF 'E-mail Protection' "$TEST_TMP/$name.ext" || fail "$name: no emailProtection"
    if [[ $name == p* ]]; then
        key_usage='Digital Signature, Non Repudiation, Key Agreement'
    else
        key_usage='Digital Signature, Non Repudiation, Key Encipherment'
    fi
    grep -qF "$key_usage" "$TEST_TMP/$name.ext" || fail "$name: keyUsage is not $key_usage"

    if [[ $name == expired ]]; then
        expect_exit 2 openssl verify -CAfile "$HSM_DIR/ca/ca.pem" "$cert"
        expect_stderr_contains "certificate has expired"
    else
        expect_exit 0 openssl verify -CAfile "$HSM_DIR/ca/ca.pem" -purpose smimesign "$cert"
        # notBefore lies about a day back, so a clock a few hours behind still accepts it.
        not_before=$(date -d "$(openssl x509 -in "$cert" -noout -startdate | cut -d= -f2)" +%s)
        (($(date +%s) - not_before >= 23 * 3600)) || fail "$name: notBefore is not backdated"
        openssl x509 -in "$cert" -noout -checkend $((700 * 86400)) >/dev/null ||
            fail "$name: the certificate expires in less than 700 days"
    fi
done

step "second run reuses the set-up"
token_state=$(find "$HSM_DIR/tokens" -type f -printf '%P %s %T@\n' | sort)
expect_exit 0 bash "$SETUP" "$TEST_TMP/hsm"
cmp -s "$LAST_STDOUT" "$TEST_TMP/first-run.txt" || fail "the second run printed other lines"
[[ $(find "$HSM_DIR/tokens" -type f -printf '%P %s %T@\n' | sort) == "$token_state" ]] ||
    fail "the second run changed the token files"

step "a half-made set-up is made again"
rm -- "$HSM_DIR/.setup-complete"
cp -- "$HSM_DIR/certs/rsa2048.pem" "$TEST_TMP/old-rsa2048.pem"
touch "$HSM_DIR/unrelated-file"
expect_exit 0 bash "$SETUP" "$TEST_TMP/hsm"
cmp -s "$LAST_STDOUT" "$TEST_TMP/first-run.txt" || fail "the redone set-up printed other lines"
[[ -f $HSM_DIR/.setup-complete ]] || fail "the redone set-up wrote no completion marker"
! cmp -s "$HSM_DIR/certs/rsa2048.pem" "$TEST_TMP/old-rsa2048.pem" ||
    fail "the half-made set-up was reused instead of made again"
[[ -f $HSM_DIR/unrelated-file ]] || fail "setup.sh deleted a file that it did not make"
expect_exit 0 run_pkcs11_tool --login --pin 123456 --list-objects
[[ $(grep -c '^Private Key Object' "$LAST_STDOUT") == "${#NAMES[@]}" ]] ||
    fail "the redone token does not have exactly ${#NAMES[@]} private keys"

step "usage errors"
expect_exit 2 bash "$SETUP"
expect_stderr_contains "usage:"

step "software recipients"
readonly SOFTWARE=$SOURCE_DIR/softhsm-setup/software-recipients.sh
mkdir -p -- "$TEST_TMP/empty"
expect_exit 2 bash "$SOFTWARE" "$TEST_TMP/empty"
expect_stderr_contains "setup.sh"
expect_exit 0 bash "$SOFTWARE" "$HSM_DIR"
cp -- "$LAST_STDOUT" "$TEST_TMP/software-run.txt"
declare -A RECIPIENT_KEY_USAGE=(
    [rsa-recipient]='Digital Signature, Key Encipherment'
    [ec-recipient]='Digital Signature, Key Agreement'
    [rsa-sign-only]='Digital Signature'
    [ec-sign-only]='Digital Signature'
    [rsa-client-auth]='Digital Signature, Key Encipherment'
)
password_file=$HSM_DIR/soft/p12-password.txt
[[ $(stat -c %a "$password_file") == 600 ]] || fail "p12-password.txt is not mode 0600"
for name in "${!RECIPIENT_KEY_USAGE[@]}"; do
    cert=$HSM_DIR/soft/$name.pem
    grep -qxF "$name $cert" "$TEST_TMP/software-run.txt" ||
        fail "software-recipients.sh did not print the line for $name"
    expect_exit 0 openssl verify -CAfile "$HSM_DIR/ca/ca.pem" "$cert"
    openssl x509 -in "$cert" -noout -ext keyUsage,extendedKeyUsage,subjectAltName \
        >"$TEST_TMP/$name.soft-ext"
    key_usage=$(grep -A1 'Key Usage: critical' "$TEST_TMP/$name.soft-ext" | tail -n 1 |
        sed 's/^ *//')
    [[ $key_usage == "${RECIPIENT_KEY_USAGE[$name]}" ]] ||
        fail "$name: keyUsage is \"$key_usage\", expected ${RECIPIENT_KEY_USAGE[$name]}"
    grep -qF "email:$name@example.org" "$TEST_TMP/$name.soft-ext" || fail "$name: wrong SAN"
    if [[ $name == rsa-client-auth ]]; then
        ! grep -qF 'E-mail Protection' "$TEST_TMP/$name.soft-ext" ||
            fail "$name: has emailProtection"
    else
        grep -qF 'E-mail Protection' "$TEST_TMP/$name.soft-ext" ||
            fail "$name: no emailProtection"
    fi

    # The key, the certificate and the PKCS#12 file hold the same key pair.
    openssl x509 -in "$cert" -pubkey -noout >"$TEST_TMP/$name.cert-pub"
    openssl pkey -in "$HSM_DIR/soft/$name.key" -pubout >"$TEST_TMP/$name.key-pub"
    cmp -s "$TEST_TMP/$name.cert-pub" "$TEST_TMP/$name.key-pub" ||
        fail "$name.key does not match $name.pem"
    expect_exit 0 openssl pkcs12 -in "$HSM_DIR/soft/$name.p12" -nodes -nocerts \
        -passin "file:$password_file"
    openssl pkey -in "$LAST_STDOUT" -pubout >"$TEST_TMP/$name.p12-pub"
    cmp -s "$TEST_TMP/$name.cert-pub" "$TEST_TMP/$name.p12-pub" ||
        fail "$name.p12 does not contain the key of $name.pem"
    # gpgsm 2.2.40 reads PKCS#12 only with the older 3DES PBE, not OpenSSL 3's AES default.
    expect_exit 0 openssl pkcs12 -in "$HSM_DIR/soft/$name.p12" -info -noout \
        -passin "file:$password_file"
    [[ $(grep -c 'pbeWithSHA1And3-KeyTripleDES-CBC' "$LAST_STDERR") == 2 ]] ||
        fail "$name.p12 does not use pbeWithSHA1And3-KeyTripleDES-CBC for key and certificate"
done
soft_state=$(find "$HSM_DIR/soft" -type f -printf '%P %s %T@\n' | sort)
expect_exit 0 bash "$SOFTWARE" "$HSM_DIR"
cmp -s "$LAST_STDOUT" "$TEST_TMP/software-run.txt" || fail "the second run printed other lines"
[[ $(find "$HSM_DIR/soft" -type f -printf '%P %s %T@\n' | sort) == "$soft_state" ]] ||
    fail "the second run of software-recipients.sh changed its files"

echo "PASS: $TEST_NAME"
