#!/usr/bin/env bash
# Encryption interoperability in both directions. Messages that `openssl cms -encrypt`, gpgsm
# and NSS `cmsutil -E` encrypt to the token's certificates decrypt with `p11smime decrypt` on
# the token. Messages that `p11smime encrypt` makes for the software recipients of
# softhsm-setup/software-recipients.sh decrypt with `openssl cms -decrypt`, gpgsm and
# `cmsutil -D`.
#
# Known limits of the peers are asserted, not skipped: each case that a peer cannot handle
# must still fail there, so that this test fails, and the list gets updated, once a peer
# starts to handle it. Found with gpgsm 2.2.40 and NSS 3.87 (Debian 12):
#   - gpgsm does not encrypt to an EC certificate with keyUsage keyAgreement ("Wrong key
#     usage"), and cmsutil -E does not encrypt to any EC certificate
#     (SEC_ERROR_INVALID_ALGORITHM).
#   - gpgsm does not decrypt AES-GCM AuthEnvelopedData ("error getting IV") or RSAES-OAEP,
#     and crashes (SIGSEGV) when it imports the EC P-256 PKCS#12, so its ECDH decryption
#     cannot be tried.
#   - cmsutil -D does not decrypt RSAES-OAEP (SEC_ERROR_UNSUPPORTED_KEYALG), ECDH
#     (SEC_ERROR_BAD_DER) or AuthEnvelopedData (SEC_ERROR_UNRECOGNIZED_OID).
# shellcheck source=tests/integration/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

require_p11smime
require_command openssl gpgsm gpgconf certutil cmsutil pk12util python3
make_test_dir
setup_token
setup_software_recipients
setup_gpgsm_home "$CA_FILE"
echo allow-loopback-pinentry >"$GNUPGHOME/gpg-agent.conf"

readonly CIPHERS=(aes-128-cbc aes-256-cbc aes-128-gcm aes-256-gcm)
decrypt_options=(--module "$SOFTHSM_MODULE" --pin-file "$PIN_FILE")

NSS_DB=sql:$TEST_TMP/nss
mkdir -p -- "$TEST_TMP/nss"
expect_exit 0 certutil -N -d "$NSS_DB" --empty-password
expect_exit 0 certutil -A -d "$NSS_DB" -n test-ca -t C,C,C -i "$CA_FILE"

# The sample message split into its routing headers and the MIME entity that gets encrypted.
# Peers encrypt the entity in canonical form (CRLF), as S/MIME requires.
write_sample_message "$TEST_TMP/message.eml" sender@example.org
sed -n '/^Content-/,$p' "$TEST_TMP/message.eml" >"$TEST_TMP/entity.txt"
sed 's/$/\r/' "$TEST_TMP/entity.txt" >"$TEST_TMP/entity.crlf"
grep -q '^Content-Type: text/plain' "$TEST_TMP/entity.txt" ||
    fail "the MIME entity of the sample message has no Content-Type header"

# Decrypt MESSAGE on the token and compare its text with the sample message.
expect_p11smime_decrypts() {
    local message=$1
    expect_exit 0 "$P11SMIME" decrypt "${decrypt_options[@]}" --in "$message" \
        --out "$message.decrypted"
    expect_same_text_body "$message.decrypted" "$TEST_TMP/message.eml"
}

# Run a peer command that the header of this script lists as a known limit, and fail if it
# now succeeds. PEER is the program and ACTION describes the request it cannot handle.
# expect_peer_limit PEER ACTION COMMAND [ARG...]
expect_peer_limit() {
    local peer=$1 description=$2
    shift 2
    local status=0 runner=()
    if [[ $(type -t -- "$1") == file ]]; then
        runner=(timeout -k 5 "$COMMAND_TIMEOUT")
    fi
    "${runner[@]}" "$@" >"$TEST_TMP/limit.stdout" 2>"$TEST_TMP/limit.stderr" || status=$?
    if [[ $status == 0 ]]; then
        fail "$peer can now $description: move the case from the known limits at the top" \
            "of this script to the cases that must work"
    fi
    local reason
    reason=$(grep -v '^ *$' "$TEST_TMP/limit.stderr" | tail -n 1)
    echo "known limit: $peer cannot $description (exit status $status: $reason)"
}

gpgsm_with_passphrase() {
    gpgsm --batch --pinentry-mode loopback --passphrase-fd 3 "$@" 3<"$P12_PASSWORD_FILE"
}

# --- Peers encrypt to the token's certificates -------------------------------------------

step "openssl cms -encrypt to each token key"
for name in rsa2048 rsa3072 p256 p384; do
    for cipher in "${CIPHERS[@]}"; do
        options=(default)
        if [[ $name == rsa* ]]; then
            # RSAES-OAEP with OpenSSL's SHA-1 defaults and with SHA-256 for hash and MGF1.
            options+=(oaep-sha1 oaep-sha256)
        else
            # dhSinglePass-stdDH with OpenSSL's SHA-1 KDF and with a SHA-256 and SHA-512 KDF.
            options+=(kdf-sha256 kdf-sha512)
        fi
        for option in "${options[@]}"; do
            message=$TEST_TMP/openssl-$name-$cipher-$option.eml
            key_options=()
            case $option in
                oaep-sha1) key_options=(-keyopt rsa_padding_mode:oaep) ;;
                oaep-sha256)
                    key_options=(-keyopt rsa_padding_mode:oaep -keyopt rsa_oaep_md:sha256
                        -keyopt rsa_mgf1_md:sha256)
                    ;;
                kdf-*) key_options=(-keyopt "ecdh_kdf_md:${option#kdf-}") ;;
            esac
            expect_exit 0 openssl cms -encrypt "-$cipher" -in "$TEST_TMP/entity.txt" \
                -from sender@example.org -to recipient@example.net \
                -subject "p11smime integration test" \
                -recip "$HSM_DIR/certs/$name.pem" "${key_options[@]}" -out "$message"
            expect_p11smime_decrypts "$message"
            grep -q '^Subject: p11smime integration test' "$message.decrypted" ||
                fail "$message.decrypted lost the Subject header"
        done
    done
done

step "openssl cms -encrypt to two recipients"
expect_exit 0 openssl cms -encrypt -aes-256-cbc -in "$TEST_TMP/entity.txt" \
    -from sender@example.org -to recipient@example.net -subject "p11smime integration test" \
    -recip "$SOFT_DIR/rsa-recipient.pem" -recip "$HSM_DIR/certs/p384.pem" \
    -out "$TEST_TMP/openssl-two.eml"
expect_p11smime_decrypts "$TEST_TMP/openssl-two.eml"

step "gpgsm --encrypt to the RSA token keys"
for name in rsa2048 rsa3072; do
    expect_exit 0 gpgsm --batch --import "$HSM_DIR/certs/$name.pem"
    for cipher in default AES256; do
        cipher_options=()
        [[ $cipher != default ]] && cipher_options=(--cipher-algo "$cipher")
        der=$TEST_TMP/gpgsm-$name-$cipher.der
        expect_exit 0 gpgsm --batch "${cipher_options[@]}" -r "$name@example.org" \
            --output "$der" --encrypt "$TEST_TMP/entity.crlf"
        wrap_cms_message "$der" "$TEST_TMP/gpgsm-$name-$cipher.eml"
        expect_p11smime_decrypts "$TEST_TMP/gpgsm-$name-$cipher.eml"
    done
done

step "gpgsm --encrypt to the EC token keys"
for name in p256 p384; do
    expect_exit 0 gpgsm --batch --import "$HSM_DIR/certs/$name.pem"
    expect_peer_limit gpgsm "encrypt to $name, an EC certificate with keyAgreement" \
        gpgsm --batch -r "$name@example.org" --output "$TEST_TMP/gpgsm-$name.der" \
        --encrypt "$TEST_TMP/entity.crlf"
done

step "cmsutil -E to the token keys"
for name in rsa2048 rsa3072 p256 p384; do
    expect_exit 0 certutil -A -d "$NSS_DB" -n "$name" -t ,, -i "$HSM_DIR/certs/$name.pem"
done
for name in rsa2048 rsa3072; do
    der=$TEST_TMP/cmsutil-$name.der
    expect_exit 0 cmsutil -E -d "$NSS_DB" -r "$name@example.org" \
        -i "$TEST_TMP/entity.crlf" -o "$der"
    wrap_cms_message "$der" "$TEST_TMP/cmsutil-$name.eml"
    expect_p11smime_decrypts "$TEST_TMP/cmsutil-$name.eml"
done
for name in p256 p384; do
    expect_peer_limit cmsutil "encrypt to $name, an EC certificate" \
        cmsutil -E -d "$NSS_DB" -r "$name@example.org" -i "$TEST_TMP/entity.crlf" \
        -o "$TEST_TMP/cmsutil-$name.der"
done

# --- p11smime encrypts to software recipients, peers decrypt ------------------------------

# Encrypt the sample message to the software recipient NAME with CIPHER and OPTIONS...,
# and write its DER CMS to OUT.der.
# encrypt_to_software OUT NAME CIPHER [OPTION...]
encrypt_to_software() {
    local out=$1 name=$2 cipher=$3
    shift 3
    expect_exit 0 "$P11SMIME" encrypt --recipient "$SOFT_DIR/$name.pem" --cipher "$cipher" \
        "$@" --in "$TEST_TMP/message.eml" --out "$out"
    extract_opaque_cms "$out" "$out.der" || fail "cannot decode the CMS of $out"
}

step "openssl cms -decrypt reads p11smime's output"
for cipher in "${CIPHERS[@]}"; do
    for form in rsa-pkcs1 rsa-oaep ec; do
        message=$TEST_TMP/ours-$form-$cipher.eml
        case $form in
            rsa-pkcs1) encrypt_to_software "$message" rsa-recipient "$cipher" ;;
            rsa-oaep) encrypt_to_software "$message" rsa-recipient "$cipher" --rsa-oaep ;;
            ec) encrypt_to_software "$message" ec-recipient "$cipher" ;;
        esac
        recipient=rsa-recipient
        [[ $form == ec ]] && recipient=ec-recipient
        expect_exit 0 openssl cms -decrypt -in "$message" -recip "$SOFT_DIR/$recipient.pem" \
            -inkey "$SOFT_DIR/$recipient.key" -out "$message.openssl"
        expect_same_text_body "$message.openssl" "$TEST_TMP/message.eml"
    done
done

step "gpgsm decrypts p11smime's RSA PKCS#1 v1.5 with AES-CBC"
expect_exit 0 gpgsm_with_passphrase --import "$SOFT_DIR/rsa-recipient.p12"
for cipher in aes-128-cbc aes-256-cbc; do
    message=$TEST_TMP/ours-rsa-pkcs1-$cipher.eml
    expect_exit 0 gpgsm_with_passphrase --output "$message.gpgsm" --decrypt "$message.der"
    expect_same_text_body "$message.gpgsm" "$TEST_TMP/message.eml"
done

step "gpgsm limits: AES-GCM, RSAES-OAEP and EC"
for cipher in aes-128-gcm aes-256-gcm; do
    expect_peer_limit gpgsm "decrypt AES-GCM AuthEnvelopedData ($cipher)" \
        gpgsm_with_passphrase --output /dev/null --decrypt \
        "$TEST_TMP/ours-rsa-pkcs1-$cipher.eml.der"
done
expect_peer_limit gpgsm "decrypt an RSAES-OAEP key transport" \
    gpgsm_with_passphrase --output /dev/null --decrypt \
    "$TEST_TMP/ours-rsa-oaep-aes-256-cbc.eml.der"
if gpgsm_with_passphrase --import "$SOFT_DIR/ec-recipient.p12" >"$TEST_TMP/ec-import.log" 2>&1 &&
    gpgsm --batch --list-secret-keys ec-recipient@example.org >/dev/null 2>&1; then
    # The import worked, so gpgsm's ECDH decryption can be tried.
    expect_peer_limit gpgsm "decrypt ECDH key agreement" \
        gpgsm_with_passphrase --output /dev/null --decrypt \
        "$TEST_TMP/ours-ec-aes-256-cbc.eml.der"
else
    echo "known limit: gpgsm cannot import the EC PKCS#12, so ECDH decryption is not tried:" \
        "$(tail -n1 "$TEST_TMP/ec-import.log")"
fi

step "cmsutil -D decrypts p11smime's RSA PKCS#1 v1.5 with AES-CBC"
for name in rsa-recipient ec-recipient; do
    expect_exit 0 pk12util -i "$SOFT_DIR/$name.p12" -d "$NSS_DB" -w "$P12_PASSWORD_FILE"
done
for cipher in aes-128-cbc aes-256-cbc; do
    message=$TEST_TMP/ours-rsa-pkcs1-$cipher.eml
    expect_exit 0 cmsutil -D -d "$NSS_DB" -i "$message.der" -o "$message.cmsutil"
    expect_same_text_body "$message.cmsutil" "$TEST_TMP/message.eml"
done

step "cmsutil limits: RSAES-OAEP, ECDH and AES-GCM"
expect_peer_limit cmsutil "decrypt an RSAES-OAEP key transport" \
    cmsutil -D -d "$NSS_DB" -i "$TEST_TMP/ours-rsa-oaep-aes-256-cbc.eml.der" -o /dev/null
expect_peer_limit cmsutil "decrypt ECDH key agreement" \
    cmsutil -D -d "$NSS_DB" -i "$TEST_TMP/ours-ec-aes-256-cbc.eml.der" -o /dev/null
expect_peer_limit cmsutil "decrypt AES-GCM AuthEnvelopedData" \
    cmsutil -D -d "$NSS_DB" -i "$TEST_TMP/ours-rsa-pkcs1-aes-256-gcm.eml.der" -o /dev/null

echo "PASS: $TEST_NAME"
