#!/usr/bin/env bash
# Issue software S/MIME recipient keys and certificates from the test CA that setup.sh made.
#
# Usage: software-recipients.sh DIR
#
# The token keys cannot leave the token, so a test that needs a peer (openssl, gpgsm, NSS) to
# decrypt what p11smime encrypted uses these keys instead. DIR must contain a complete
# set-up by setup.sh. DIR/soft receives, for each NAME below, NAME.key (PKCS#8 PEM, no
# password), NAME.pem (certificate) and NAME.p12 (PKCS#12 with key and certificate):
#
#   rsa-recipient    RSA 2048, keyUsage digitalSignature, keyEncipherment
#   ec-recipient     EC P-256, keyUsage digitalSignature, keyAgreement
#   rsa-sign-only    RSA 2048, keyUsage digitalSignature only, so not a valid recipient
#   ec-sign-only     EC P-256, keyUsage digitalSignature only, so not a valid recipient
#   rsa-client-auth  RSA 2048, keyEncipherment, but extendedKeyUsage clientAuth only
#
# Every certificate is valid from yesterday for 2 years and carries the rfc822Name
# NAME@example.org; all but rsa-client-auth have extendedKeyUsage emailProtection.
# DIR/soft/p12-password.txt contains the PKCS#12 password. The PKCS#12 files use
# pbeWithSHAAnd3-KeyTripleDES-CBC and an HMAC-SHA1 MAC, because gpgsm 2.2.40 rejects the
# PBES2/AES default of OpenSSL 3.
#
# stdout gets one line per NAME: the name and the path of its certificate. A second run on
# a complete DIR/soft reuses it. Without the completion marker DIR/soft is made again.

set -Eeuo pipefail

readonly P12_PASSWORD=p11smime-test
readonly MARKER_NAME=.soft-complete

# Name, key algorithm and the keyUsage and extendedKeyUsage of each certificate.
readonly RECIPIENT_SPECS=(
    "rsa-recipient RSA digitalSignature,keyEncipherment emailProtection"
    "ec-recipient EC digitalSignature,keyAgreement emailProtection"
    "rsa-sign-only RSA digitalSignature emailProtection"
    "ec-sign-only EC digitalSignature emailProtection"
    "rsa-client-auth RSA digitalSignature,keyEncipherment clientAuth"
)

usage() {
    echo "usage: $0 DIR" >&2
    exit 2
}

print_certificates() {
    local spec name
    for spec in "${RECIPIENT_SPECS[@]}"; do
        read -r name _ <<<"$spec"
        printf '%s %s\n' "$name" "$SOFT_DIR/$name.pem"
    done
}

report_failure() {
    local status=$? line=$1
    echo "software-recipients.sh: error: making $SOFT_DIR failed with exit status $status" \
        "at line $line of $0" >&2
    if [[ -f "$LOG" ]]; then
        echo "software-recipients.sh: the last lines of $LOG follow" >&2
        tail -n 40 -- "$LOG" >&2
    fi
    exit "$status"
}

run_logged() {
    "$@" >>"$LOG" 2>&1
}

# OpenSSL date in UTCTime form (YYMMDDHHMMSSZ) for a GNU date expression such as "-1 day".
utc_time() {
    date -u -d "$1" +%y%m%d%H%M%SZ
}

make_recipient() {
    local name=$1 algorithm=$2 key_usage=$3 extended_key_usage=$4
    local work=$SOFT_DIR/work

    if [[ $algorithm == EC ]]; then
        run_logged openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
            -out "$SOFT_DIR/$name.key"
    else
        run_logged openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
            -out "$SOFT_DIR/$name.key"
    fi
    run_logged openssl req -new -key "$SOFT_DIR/$name.key" \
        -subj "/CN=$name test recipient" -out "$work/$name.csr"
    cat >"$work/$name.ext" <<EOF
basicConstraints = critical, CA:false
keyUsage = critical, $key_usage
extendedKeyUsage = $extended_key_usage
subjectAltName = email:$name@example.org
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    run_logged openssl ca -batch -config "$CA_DIR/openssl.cnf" -extfile "$work/$name.ext" \
        -startdate "$(utc_time '-1 day')" -enddate "$(utc_time '+2 years')" \
        -in "$work/$name.csr" -out "$work/$name.issued.pem"
    # `openssl ca` puts a text dump before the PEM block, so keep only the PEM.
    run_logged openssl x509 -in "$work/$name.issued.pem" -out "$SOFT_DIR/$name.pem"
    run_logged openssl pkcs12 -export -inkey "$SOFT_DIR/$name.key" -in "$SOFT_DIR/$name.pem" \
        -name "$name" -keypbe PBE-SHA1-3DES -certpbe PBE-SHA1-3DES -macalg sha1 \
        -passout "file:$SOFT_DIR/p12-password.txt" -out "$SOFT_DIR/$name.p12"
}

[[ $# -eq 1 && -n $1 ]] || usage
[[ -d $1 ]] || usage
DIR=$(cd -- "$1" && pwd -P)
CA_DIR=$DIR/ca
SOFT_DIR=$DIR/soft
LOG=$SOFT_DIR/setup.log

if [[ ! -f $DIR/.setup-complete || ! -f $CA_DIR/openssl.cnf ]]; then
    echo "software-recipients.sh: error: $DIR has no complete set-up;" \
        "run softhsm-setup/setup.sh $DIR first" >&2
    exit 2
fi

if [[ -f "$SOFT_DIR/$MARKER_NAME" ]]; then
    print_certificates
    exit 0
fi

rm -rf -- "$SOFT_DIR"
umask 077
mkdir -p -- "$SOFT_DIR/work"
: >"$LOG"
trap 'report_failure "$LINENO"' ERR
printf '%s\n' "$P12_PASSWORD" >"$SOFT_DIR/p12-password.txt"

for spec in "${RECIPIENT_SPECS[@]}"; do
    read -r name algorithm key_usage extended_key_usage <<<"$spec"
    make_recipient "$name" "$algorithm" "$key_usage" "$extended_key_usage"
done

# Certificates are public test material, so only keys, PKCS#12 files and the password
# stay private.
chmod 0755 -- "$SOFT_DIR"
chmod 0644 -- "$SOFT_DIR"/*.pem
: >"$SOFT_DIR/$MARKER_NAME"
print_certificates
