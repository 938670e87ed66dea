#!/usr/bin/env bash
# Create a throwaway SoftHSM token and test CAs in DIR for the p11smime tests.
#
# Usage: setup.sh DIR
#
# DIR receives:
#   softhsm2.conf    SoftHSM configuration whose token directory is DIR/tokens
#   pin.txt          user PIN of the token (mode 0600); the SO PIN is 12345678
#   ca/ca.pem        test CA that issued every signer certificate (ca.key is its key)
#   ca/other-ca.pem  unrelated CA, for tests that expect an untrusted signer
#   chain.pem        the test CA certificate, for --chain and --ca-file
#   certs/NAME.pem   signer certificates, also stored on the token
#   uris.txt         one line per key: NAME and its RFC 7512 URI
#
# The token "p11smime-test" contains key pairs generated on the token (sensitive, not
# extractable): rsa2048 (CKA_ID 01), rsa3072 (02), p256 (03), p384 (04) and expired (10),
# whose certificate expired before the script ran. Each certificate has the key's label and
# CKA_ID, and the rfc822Name NAME@example.org.
#
# stdout gets an "export SOFTHSM2_CONF=..." line, then the lines of uris.txt.
# A second run on a complete DIR reuses it. A DIR without the completion marker is
# treated as half-made: the files this script creates there are deleted and made again.
# Nothing outside DIR is written, so the system token directory stays untouched.

set -Eeuo pipefail

readonly TOKEN_LABEL=p11smime-test
readonly USER_PIN=123456
readonly SO_PIN=12345678
readonly SOFTHSM_MODULE=/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so
# Written last, so its presence means that every other file is complete.
readonly MARKER_NAME=.setup-complete

# Name, CKA_ID (hex) and pkcs11-tool key type of each key pair. The certificate of
# "expired" gets a validity period that ended before today.
readonly KEY_SPECS=(
    "rsa2048 01 rsa:2048"
    "rsa3072 02 rsa:3072"
    "p256 03 EC:prime256v1"
    "p384 04 EC:secp384r1"
    "expired 10 rsa:2048"
)

usage() {
    echo "usage: $0 DIR" >&2
    exit 2
}

# Print the lines that callers evaluate or parse: the SOFTHSM2_CONF export, then the URIs.
print_environment() {
    printf 'export SOFTHSM2_CONF=%q\n' "$DIR/softhsm2.conf"
    cat -- "$DIR/uris.txt"
}

# Delete what an interrupted run may have left. Only the names this script creates are
# removed, so a DIR that also contains other files keeps them.
remove_partial_setup() {
    rm -rf -- "$DIR/tokens" "$DIR/ca" "$DIR/certs" "$DIR/work" "$DIR/softhsm2.conf" \
        "$DIR/pin.txt" "$DIR/chain.pem" "$DIR/uris.txt" "$DIR/setup.log" "${DIR:?}/$MARKER_NAME"
}

# Run a tool with its output in the log, because stdout must contain only the lines that
# print_environment writes.
run_logged() {
    "$@" >>"$LOG" 2>&1
}

report_failure() {
    local status=$? line=$1
    echo "setup.sh: error: setup of $DIR failed with exit status $status" \
        "at line $line of $0" >&2
    echo "setup.sh: the last lines of $LOG follow" >&2
    if [[ -f "$LOG" ]]; then
        tail -n 40 -- "$LOG" >&2
    fi
    exit "$status"
}

# OpenSSL date in UTCTime form (YYMMDDHHMMSSZ) for a GNU date expression such as "-1 day".
utc_time() {
    date -u -d "$1" +%y%m%d%H%M%SZ
}

write_softhsm_config() {
    mkdir -p -- "$DIR/tokens"
    cat >"$DIR/softhsm2.conf" <<EOF
directories.tokendir = $DIR/tokens
objectstore.backend = file
log.level = ERROR
EOF
}

write_ca_config() {
    local ca_dir=$1
    mkdir -p -- "$ca_dir/issued"
    : >"$ca_dir/index.txt"
    openssl rand -hex 16 >"$ca_dir/serial"
    cat >"$ca_dir/openssl.cnf" <<EOF
[ca]
default_ca = test_ca

[test_ca]
dir = $ca_dir
database = \$dir/index.txt
new_certs_dir = \$dir/issued
certificate = \$dir/ca.pem
private_key = \$dir/ca.key
serial = \$dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
email_in_dn = no
copy_extensions = none

[policy_any]
commonName = supplied

[ca_cert]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
}

# Write the extensions of an S/MIME signer certificate for EMAIL. RSA keys also get
# keyEncipherment and EC keys get keyAgreement, so that both can receive encrypted mail.
# The address is only in subjectAltName, because the CA config sets email_in_dn = no.
write_signer_extensions() {
    local file=$1 key_type=$2 email=$3
    local key_usage=keyEncipherment
    if [[ $key_type == EC:* ]]; then
        key_usage=keyAgreement
    fi
    cat >"$file" <<EOF
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, nonRepudiation, $key_usage
extendedKeyUsage = emailProtection
subjectAltName = email:$email
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
}

# Make a self-signed P-256 CA as BASENAME.pem and BASENAME.key in the CA folder.
make_ca() {
    local basename=$1 common_name=$2
    local ca_dir=$DIR/ca
    run_logged openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -out "$ca_dir/$basename.key"
    chmod 0600 "$ca_dir/$basename.key"
    run_logged openssl req -new -x509 -key "$ca_dir/$basename.key" -sha256 \
        -subj "/O=p11smime tests/CN=$common_name" -days 3650 \
        -config "$ca_dir/openssl.cnf" -extensions ca_cert -out "$ca_dir/$basename.pem"
}

# Generate a key pair on the token, have the test CA certify it and store the certificate
# on the token next to the key.
make_signer() {
    local name=$1 id=$2 key_type=$3
    local work=$DIR/work
    local usage not_before not_after
    local uri="pkcs11:token=$TOKEN_LABEL;object=$name"

    if [[ $key_type == EC:* ]]; then
        usage=(--usage-sign --usage-derive)
    else
        usage=(--usage-sign --usage-decrypt)
    fi

    # pkcs11-tool 0.23 makes generated private keys sensitive and not extractable by
    # default. The check below makes a different default fail here, not in a later test.
    pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$TOKEN_LABEL" \
        --login --pin "$USER_PIN" --keypairgen --key-type "$key_type" \
        --id "$id" --label "$name" "${usage[@]}" 2>&1 | tee -a "$LOG" >"$work/$name.keygen"
    if ! grep -q 'sensitive, always sensitive, never extractable' "$work/$name.keygen"; then
        echo "setup.sh: error: private key $name is extractable or not sensitive" >>"$LOG"
        return 1
    fi

    # The CSR is signed on the token (libp11's OpenSSL engine), so the key never leaves it
    # and `openssl ca` can take the validity dates that `openssl x509 -req` lacks in 3.0.
    run_logged openssl req -new -engine pkcs11 -keyform engine \
        -key "$uri;type=private;pin-value=$USER_PIN" \
        -subj "/CN=$name test signer" -out "$work/$name.csr"

    if [[ $name == expired ]]; then
        not_before=$(utc_time '-400 days')
        not_after=$(utc_time '-30 days')
    else
        not_before=$(utc_time '-1 day')
        not_after=$(utc_time '+2 years')
    fi
    write_signer_extensions "$work/$name.ext" "$key_type" "$name@example.org"
    run_logged openssl ca -batch -config "$DIR/ca/openssl.cnf" -extfile "$work/$name.ext" \
        -startdate "$not_before" -enddate "$not_after" \
        -in "$work/$name.csr" -out "$work/$name.issued.pem"
    # `openssl ca` puts a text dump before the PEM block, so keep only the PEM.
    run_logged openssl x509 -in "$work/$name.issued.pem" -out "$DIR/certs/$name.pem"

    # The certificate must certify the key pair on the token.
    run_logged openssl pkey -engine pkcs11 -inform engine -pubin \
        -in "$uri;type=public" -pubout -out "$work/$name.token-pub.pem"
    run_logged openssl x509 -in "$DIR/certs/$name.pem" -pubkey -noout \
        -out "$work/$name.cert-pub.pem"
    if ! cmp -s "$work/$name.token-pub.pem" "$work/$name.cert-pub.pem"; then
        echo "setup.sh: error: certificate $name does not match the token key" >>"$LOG"
        return 1
    fi

    run_logged openssl x509 -in "$DIR/certs/$name.pem" -outform DER -out "$work/$name.der"
    run_logged pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$TOKEN_LABEL" \
        --login --pin "$USER_PIN" --write-object "$work/$name.der" --type cert \
        --id "$id" --label "$name"

    printf '%s %s;type=private\n' "$name" "$uri" >>"$DIR/uris.txt"
}

[[ $# -eq 1 && -n $1 ]] || usage
mkdir -p -- "$1"
DIR=$(cd -- "$1" && pwd -P)
[[ $DIR != / ]] || usage
LOG=$DIR/setup.log

export SOFTHSM2_CONF=$DIR/softhsm2.conf
# libp11's engine, which signs the CSRs, loads the module named here.
export PKCS11_MODULE_PATH=$SOFTHSM_MODULE

if [[ -f "$DIR/$MARKER_NAME" ]]; then
    print_environment
    exit 0
fi

remove_partial_setup
trap 'report_failure "$LINENO"' ERR
umask 077
: >"$LOG"
mkdir -p -- "$DIR/ca" "$DIR/certs" "$DIR/work"

write_softhsm_config
printf '%s\n' "$USER_PIN" >"$DIR/pin.txt"
chmod 0600 "$DIR/pin.txt"
run_logged softhsm2-util --init-token --free --label "$TOKEN_LABEL" \
    --pin "$USER_PIN" --so-pin "$SO_PIN"

write_ca_config "$DIR/ca"
make_ca other-ca "p11smime other test CA"
make_ca ca "p11smime test CA"
cp -- "$DIR/ca/ca.pem" "$DIR/chain.pem"

: >"$DIR/uris.txt"
for spec in "${KEY_SPECS[@]}"; do
    read -r name id key_type <<<"$spec"
    make_signer "$name" "$id" "$key_type"
done

# Certificates and configs are public test material, so only keys and the PIN stay private.
chmod -R go+rX -- "$DIR/ca" "$DIR/certs"
chmod go-rwx -- "$DIR/ca/ca.key" "$DIR/ca/other-ca.key"
chmod 0644 -- "$DIR/chain.pem" "$DIR/uris.txt" "$DIR/softhsm2.conf"

: >"${DIR:?}/$MARKER_NAME"
print_environment
