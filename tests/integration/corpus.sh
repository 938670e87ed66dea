#!/usr/bin/env bash
# Runs `p11smime verify` on each signed message in tests/data/corpus and checks its exit status
# against the table below. Exit codes of p11smime verify: 0 = signature and policy good,
# 1 = a signature or policy check failed, 2 = usage or input error.
#
# Environment: P11SMIME (the binary) and SOURCE_DIR (the repository root).
# Exits 0 when every row passes, 1 when any fails, 77 (skip) when openssl is missing.
#
# The openssl command line serves three purposes here: it converts DER anchors to PEM,
# extracts signer certificates, and cross-checks the test data. Each row prints the result of
# `openssl cms -verify` with the same trust settings, for information only. The
# cross-check column is asserted: "good" rows must verify with `openssl cms -verify -noverify`
# (signature correct, chain not checked), "bad" rows must not, and "good-binary" rows must
# verify after splitting the multipart/signed without any line-ending conversion.
set -euo pipefail

: "${P11SMIME:?set P11SMIME to the p11smime binary}"
: "${SOURCE_DIR:?set SOURCE_DIR to the repository root}"

corpus="$SOURCE_DIR/tests/data/corpus"
# The rows run inside the corpus folder, so a relative binary path must be made absolute first.
if [[ "$P11SMIME" == */* ]]; then
    p11smime=$(realpath "$P11SMIME")
else
    p11smime="$P11SMIME"
fi
# Upper bound for one command, so that a loop (for example on the circular chain) fails the
# row instead of hanging the test.
timeout_seconds=60

if ! command -v openssl >/dev/null; then
    echo "SKIP: openssl is not installed; it is needed to prepare anchors and cross-checks"
    exit 77
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$corpus"

# --- Helpers -------------------------------------------------------------------------------

failures=0
passes=0
skips=0

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# Write the signed part and the DER signature of a multipart/signed message to two files,
# byte for byte. The AS2 messages need this because `openssl cms` cannot parse them: they
# contain binary parts, and two of them start with an HTTP request line.
split_multipart_signed() {
    local message=$1 content_out=$2 signature_out=$3
    python3 - "$message" "$content_out" "$signature_out" <<'PYTHON'
import base64
import re
import sys

message, content_out, signature_out = sys.argv[1:4]
data = open(message, "rb").read()
boundary = re.search(rb'boundary="?([^";\r\n]+)"?', data, re.IGNORECASE).group(1)
parts = data.split(b"--" + boundary)


def part_body(part):
    # Each part starts after the line break that ends the boundary line, and the line break
    # before the next boundary belongs to the boundary (RFC 2046 section 5.1.1).
    part = part[2:] if part.startswith(b"\r\n") else part[1:]
    if part.endswith(b"\r\n"):
        return part[:-2]
    return part[:-1] if part.endswith(b"\n") else part


content = part_body(parts[1])
signature = part_body(parts[2])
separator = b"\r\n\r\n" if b"\r\n\r\n" in signature else b"\n\n"
headers, _, body = signature.partition(separator)
if re.search(rb"content-transfer-encoding:\s*base64", headers, re.IGNORECASE):
    body = base64.b64decode(b"".join(body.split()))
open(content_out, "wb").write(content)
open(signature_out, "wb").write(body)
PYTHON
}

# Verify the signature of MESSAGE with openssl without checking the certificate chain, and
# write the signer certificate to SIGNER_OUT. Extra arguments go to `openssl cms -verify`.
openssl_verify_signature() {
    local message=$1 mode=$2 signer_out=$3
    shift 3
    if [[ "$mode" == good-binary ]]; then
        if ! command -v python3 >/dev/null; then
            echo "python3 is not installed, so the binary message cannot be split"
            return 3
        fi
        split_multipart_signed "$message" "$work/content.bin" "$work/signature.der"
        openssl cms -verify -noverify -binary -inform DER -in "$work/signature.der" \
            -content "$work/content.bin" -signer "$signer_out" -out /dev/null "$@" 2>&1
    else
        openssl cms -verify -noverify -in "$message" -signer "$signer_out" -out /dev/null \
            "$@" 2>&1
    fi
}

# Write the signer certificate of MESSAGE to OUT. When the signature does not verify with
# openssl, fall back to the first certificate in the SignedData.
extract_signer() {
    local message=$1 mode=$2 out=$3
    if openssl_verify_signature "$message" "$mode" "$out" >/dev/null; then
        return 0
    fi
    openssl cms -cmsout -in "$message" -outform DER -out "$work/signed-data.der" 2>/dev/null &&
        openssl pkcs7 -inform DER -in "$work/signed-data.der" -print_certs 2>/dev/null |
        sed -n '/BEGIN CERTIFICATE/,/END CERTIFICATE/{p;/END CERTIFICATE/q}' >"$out"
    [[ -s "$out" ]]
}

# Reduce openssl's error output on standard input to one line: the certificate verify error
# if there is one, else the reason of the first error, else the first line.
summarize_openssl_error() {
    local output reason
    output=$(cat)
    reason=$(grep -o -m1 'Verify error:.*' <<<"$output") ||
        reason=$(grep -m1 ':error:' <<<"$output" | cut -d: -f5-6) ||
        reason=$(head -n1 <<<"$output")
    echo "$reason"
}

# Translate p11smime trust options to `openssl cms -verify` options.
openssl_trust_options() {
    local -n result=$1
    shift
    result=()
    while (($#)); do
        case $1 in
            --ca-file) result+=(-CAfile "$2"); shift ;;
            --signer-cert) result+=(-certfile "$2"); shift ;;
            --no-system-ca) result+=(-no-CApath -no-CAstore) ;;
        esac
        shift
    done
}

# --- Integrity of the test data ------------------------------------------------------------

if ! sha256sum --quiet -c SHA256SUMS; then
    echo "FAIL: tests/data/corpus differs from SHA256SUMS (were line endings converted?)"
    exit 1
fi

openssl x509 -inform DER -in rfc4134/CarlDSSSelf.cer -out "$work/CarlDSSSelf.pem"

# --- Trust settings used by the table ------------------------------------------------------
# "other" trusts only the Thunderbird test CA, which issued none of the non-Thunderbird
# signers, so those rows check everything but the path. "no-anchor" trusts nothing at all,
# which p11smime rejects as a usage error before reading the message.
# @SIGNER@ is the message's own signer certificate, extracted with openssl. OpenSSL accepts a
# leaf as trust anchor only when partial chains are allowed, so unless the leaf is
# self-signed these rows show that p11smime does not accept partial chains.

declare -A trust=(
    [tb]="--no-system-ca --ca-file thunderbird/TestCA.pem"
    [other]="--no-system-ca --ca-file thunderbird/TestCA.pem"
    [no-anchor]="--no-system-ca"
    [tb-sha1]="--no-system-ca --ca-file thunderbird/TestCA.pem --allow-sha1"
    [self]="--no-system-ca --ca-file @SIGNER@"
    [self-nosender]="--no-system-ca --ca-file @SIGNER@ --no-sender-check"
    [startcom]="--no-system-ca --ca-file mimekit/StartComCertificationAuthority.crt"
    [bcroot]="--no-system-ca --ca-file bouncycastle/validator.root.crt"
    [carl]="--no-system-ca --ca-file $work/CarlDSSSelf.pem"
    [carl-nosender]="--no-system-ca --ca-file $work/CarlDSSSelf.pem --no-sender-check"
    [carl-nosender-sha1]="--no-system-ca --ca-file $work/CarlDSSSelf.pem --no-sender-check \
--allow-sha1"
    [kde]="--no-system-ca --signer-cert kde/unittest-cert.pem --ca-file kde/unittest-cert.pem"
    [tb-date-fail]="--no-system-ca --ca-file thunderbird/TestCA.pem --date-mismatch fail"
    # The Bouncy Castle validator and MimeKit messages are signed with SHA-1, so the sets that
    # validate them at signing time allow it, and each row then fails only for its own reason.
    [bcroot-signing]="--no-system-ca --ca-file bouncycastle/validator.root.crt --at-time signing \
--allow-sha1"
    [bcroot-signing-crl]="--no-system-ca --ca-file bouncycastle/validator.root.crt --at-time signing \
--allow-sha1 --crl-file bouncycastle/validator.revoked.crl"
    [startcom-signing]="--no-system-ca --ca-file mimekit/StartComCertificationAuthority.crt \
--at-time signing --allow-sha1"
)

# --- Expected outcomes ---------------------------------------------------------------------
# Every Bouncy Castle validator signer has a 1024-bit RSA key, under the 2048-bit minimum, so
# each validator row fails for its key size as well as for the reason given. revocation.sh
# tests validation at signing time and CRLs with the project's own CA.
# Columns: expected exit status, openssl cross-check (good, bad, good-binary or -), trust
# settings from the list above, message. An indented line below a row gives the reason.
# The chain is validated at the current time, so certificates that expired since signing
# make a row fail with 1 even where the source project validates at signing time. The rows
# whose trust settings end in "-signing" validate at signingTime, as those projects do.
# The Thunderbird certificates (Alice, Dave) have no subjectAltName: their address is only in
# the subject's emailAddress attribute, so the sender check has to read it there.

table=$(cat <<'TABLE'
0 good tb thunderbird/alice.dsig.SHA256.multipart.eml
2 good no-anchor thunderbird/alice.dsig.SHA256.multipart.eml
    With no trust anchor at all no signer could be trusted, so this is a usage error.
0 good tb thunderbird/alice.dsig.SHA512.multipart.eml
1 good tb thunderbird/alice.dsig.SHA1.multipart.eml
    The signature uses SHA-1, which verify rejects unless --allow-sha1 is given.
0 good tb-sha1 thunderbird/alice.dsig.SHA1.multipart.eml
    --allow-sha1 accepts the SHA-1 signature (with a warning); the rest of it is good.
1 bad tb thunderbird/alice.dsig.SHA256.multipart.bad.eml
    The body differs from what was signed, so the content digest does not match.
1 bad tb thunderbird/alice.dsig.SHA256.multipart.mismatch-econtent.eml
    The MIME body is hashed, not the embedded eContent, and the body does not match.
0 good tb thunderbird/alice.sig.SHA256.opaque.eml
0 good tb thunderbird/alice.html.sig.SHA256.opaque.eml
0 good tb thunderbird/alice.future.dsig.SHA256.multipart.eml
    The Date header is 6 h after signingTime: p11smime warns, and Thunderbird rejects it.
0 good tb thunderbird/alice.env.sig.SHA256.opaque.eml
    The outer signature is good. Thunderbird ignores a signature around encryption.
0 good tb thunderbird/alice.env.sig.SHA256.opaque.dave.sig.SHA256.opaque.eml
    The outer signature is Dave's and the From address is Dave's.
0 good tb thunderbird/alice.plain.dsig.SHA256.multipart.dave.dsig.SHA256.multipart.eml
    The outer layer (Dave) is good. Thunderbird reports nested clear-signing as bad.
0 good tb thunderbird/alice.plain.sig.SHA256.opaque.dave.dsig.SHA256.multipart.eml
    The outer layer (Dave) is good. Thunderbird reports nested signing as bad.
0 - tb thunderbird/alice.dsig.SHA256.multipart.in.mixed.eml
    The first multipart/signed inside multipart/mixed is verified. OpenSSL rejects the type.
1 bad other thunderbird/nested-sigs.eml
    Hand-built: the outer content digest does not match.
1 bad tb thunderbird/outer-smime-bad-sig-inner-smime-enc-sig.eml
    The outer content digest does not match. Its signer comes from another NSS test CA.
2 - tb thunderbird/alice.env.eml
    Enveloped-data only, so no S/MIME signature is found.
2 - tb thunderbird/alice.dsig.SHA256.multipart.env.eml
    The signature is inside the encryption and verify does not decrypt.
2 - tb thunderbird/alice.sig.SHA384.opaque.env.eml
    The signature is inside the encryption and verify does not decrypt.
2 - tb thunderbird/multipart-alternative.eml
    Two enveloped-data parts in multipart/alternative, and no signature.
1 good startcom bouncycastle/3nnn_smime.eml
    Signer certificate expired 2016-03-11. Bouncy Castle fails it after re-parsing the MIME.
1 good self bouncycastle/3nnn_smime.eml
    Signer certificate (expired 2016) as anchor. The signature itself is good.
2 good-binary other bouncycastle/basicAS2.message
    An HTTP request, not a mail message: line 1 is "POST / HTTP/1.1". Bouncy Castle verifies it.
2 good-binary other bouncycastle/rawAS2.message
    An HTTP request, not a mail message: line 1 is "POST / HTTP/1.1". Bouncy Castle verifies it.
1 good other bouncycastle/circular.eml
    No anchor, a circular issuer chain and certificates that expired in 2017.
1 good self bouncycastle/circular.eml
    Signer certificate (expired 2017) as anchor. The signature itself is good.
1 good other bouncycastle/embeddedmulti.message
    Thawte chain not trusted, signer expired 2007. Bouncy Castle's test checks the signature only.
1 good self bouncycastle/embeddedmulti.message
    Signer certificate (expired 2007) as anchor. The signature itself is good.
1 good other bouncycastle/extra-nl.eml
    MITM Test CA is not in the corpus, and From differs from the certificate's test@example.com.
1 good self-nosender bouncycastle/extra-nl.eml
    Leaf valid to 2027 but not self-signed: accepting it as anchor needs a partial chain.
1 good other bouncycastle/multi-alternative.eml
    TC TrustCenter chain not trusted, signer certificate expired 2011.
1 good self bouncycastle/multi-alternative.eml
    Signer certificate (expired 2011) as anchor. The signature itself is good.
1 good other bouncycastle/openssl-signed-sha256-non-default-salt-length.eml
    RSASSA-PSS signature is good, but MITM Test CA, its issuer, is not in the corpus.
1 good self bouncycastle/openssl-signed-sha256-non-default-salt-length.eml
    Leaf valid to 2027 but not self-signed: accepting it as anchor needs a partial chain.
1 good other bouncycastle/qp-soft-break.eml
    AddTrust chain not trusted, signer certificate expired 2007.
1 good self bouncycastle/qp-soft-break.eml
    Signer certificate (expired 2007) as anchor. The signature itself is good.
1 good other bouncycastle/quotable.message
    Self-signed signer certificate, not given as anchor.
1 good self bouncycastle/quotable.message
    Self-signed signer certificate as anchor, but it expired 2007-05-08.
2 - other bouncycastle/brokenEnv.message
    Detached SignedData without its content: there is nothing to hash.
1 good bcroot bouncycastle/validator.expired.eml
    Root expired 2016 and signer expired before signing. Bouncy Castle also fails the path.
1 good bcroot bouncycastle/validator.notYetValid.eml
    Root expired 2016. Bouncy Castle fails it as not yet valid at signing time.
1 good bcroot bouncycastle/validator.revoked.eml
    Root expired 2016. No CRL is given, so revocation is not what fails it here.
1 good bcroot bouncycastle/validator.keyUsage.eml
    Root expired 2016, and keyUsage is dataEncipherment only, which S/MIME signing rejects.
1 good bcroot bouncycastle/validator.noEmail.eml
    Root expired 2016, and the certificate has no email address to match From.
1 good bcroot bouncycastle/validator.shortKey.eml
    Root expired 2016, and the RSA key has 512 bits. Bouncy Castle only warns about the key.
2 - other bouncycastle/outlook_2010_beta_sime_msg.eml
    Enveloped-data only, so no S/MIME signature is found.
2 - other bouncycastle/test128.message
    Enveloped-data only, so no S/MIME signature is found.
1 good carl rfc4134/4.8.eml
    From aliceDss@examples.com differs from the certificate's AliceDSS@example.com.
1 good carl-nosender rfc4134/4.8.eml
    DSA with SHA-1, which verify rejects unless --allow-sha1 is given.
1 good carl-nosender-sha1 rfc4134/4.8.eml
    SHA-1 is allowed, but the DSA signer key has 1024 bits and the minimum is 2048.
1 good carl rfc4134/4.9.eml
    From aliceDss@examples.com differs from the certificate's AliceDSS@example.com.
1 good carl-nosender rfc4134/4.9.eml
    DSA with SHA-1, which verify rejects unless --allow-sha1 is given.
1 good carl-nosender-sha1 rfc4134/4.9.eml
    SHA-1 is allowed, but the DSA signer key has 1024 bits and the minimum is 2048.
2 - other rfc4134/5.3.eml
    Enveloped-data only, so no S/MIME signature is found.
1 good startcom mimekit/thunderbird-signed.txt
    Intermediate expired 2017, signer 2014. MimeKit validates at the signing time (2013).
1 good self mimekit/thunderbird-signed.txt
    Signer certificate (expired 2014) as anchor. The signature itself is good.
1 good-binary other mimekit/octet-stream-with-mixed-line-endings.dat
    Untrusted expired signer, and without "binary" encoding the LF to CRLF step breaks the digest.
1 good-binary self-nosender mimekit/octet-stream-with-mixed-line-endings.dat
    Self-signed certificate as anchor, but it expired 2020-11-04.
1 - other kde/smime-opaque-sign.mbox
    The signer certificate is not in the message and none is given.
1 good kde kde/smime-opaque-sign.mbox
    Signer certificate found (self-signed), but it expired 2013-03-25.
1 bad other kde/smime-signed-apple.mbox
    The content was changed after signing.
2 - other kde/smime-opaque-enc+sign.mbox
    The signature is inside the encryption and verify does not decrypt.
2 - other kde/smime-encrypted-octet-stream.mbox
    Enveloped-data only, so no S/MIME signature is found.
2 - other kde/smime-encrypted-ambiguous-mime.mbox
    The signature is inside the encryption and verify does not decrypt.
2 - other pyca/signed-opaque.msg
    Opaque signed-data without eContent: there is no content to verify.
1 - self-nosender openssl/pkcs7-empty-digest-set.eml
    Empty digestAlgorithms SET, and RFC 5652 section 5.1 lets a verifier reject that signer.
1 good tb-date-fail thunderbird/alice.future.dsig.SHA256.multipart.eml
    With --date-mismatch fail, a Date header 6 h after signingTime fails, as in Thunderbird.
0 good tb-date-fail thunderbird/alice.dsig.SHA256.multipart.eml
    With --date-mismatch fail: the Date header is 2 minutes before signingTime, within the hour.
1 good bcroot-signing bouncycastle/validator.expired.eml
    At signing time too: the signer certificate expired 29 minutes before signingTime.
1 good bcroot-signing bouncycastle/validator.notYetValid.eml
    At signing time too: the signer certificate is valid only from four months later.
1 good bcroot-signing bouncycastle/validator.revoked.eml
    Valid at signingTime 2006-09-01 when no CRL is given, but the key has only 1024 bits.
1 good bcroot-signing-crl bouncycastle/validator.revoked.eml
    The CRL lists the signer as revoked for keyCompromise at 09:30, before signingTime 10:49.
1 good bcroot-signing bouncycastle/validator.keyUsage.eml
    Path valid at signingTime, but keyUsage dataEncipherment only does not allow S/MIME signing.
1 good bcroot-signing bouncycastle/validator.noEmail.eml
    Path valid at signingTime, but the certificate has no email address to match From.
0 good startcom-signing mimekit/thunderbird-signed.txt
    The StartCom chain is valid at signingTime 2013-11-02, where MimeKit validates it.
TABLE
)

# --- Run the table -------------------------------------------------------------------------

expected=() crosschecks=() trust_names=() messages=() reasons=()
while IFS= read -r line; do
    if [[ "$line" =~ ^[[:space:]]+(.*)$ ]]; then
        reasons[${#messages[@]} - 1]=${BASH_REMATCH[1]}
        continue
    fi
    read -r status crosscheck trust_name message <<<"$line"
    expected+=("$status")
    crosschecks+=("$crosscheck")
    trust_names+=("$trust_name")
    messages+=("$message")
    reasons+=("")
done <<<"$table"

for i in "${!messages[@]}"; do
    message=${messages[$i]}
    crosscheck=${crosschecks[$i]}
    trust_name=${trust_names[$i]}
    label="$message [$trust_name]"

    if [[ -z "${trust[$trust_name]+set}" ]]; then
        fail "$label: unknown trust settings '$trust_name' in the table"
        continue
    fi
    read -ra options <<<"${trust[$trust_name]}"
    if [[ " ${options[*]} " == *" @SIGNER@ "* ]]; then
        signer="$work/signer-$i.pem"
        if ! extract_signer "$message" "$crosscheck" "$signer"; then
            if [[ "$crosscheck" == good-binary ]] && ! command -v python3 >/dev/null; then
                echo "SKIP: $label: python3 is needed to extract the signer certificate"
                skips=$((skips + 1))
                continue
            fi
            fail "$label: cannot extract the signer certificate with openssl"
            continue
        fi
        options=("${options[@]/#@SIGNER@/$signer}")
    fi

    # Information only: the openssl result with the same trust settings.
    openssl_options=()
    openssl_trust_options openssl_options "${options[@]}"
    if openssl_output=$(openssl cms -verify -in "$message" "${openssl_options[@]}" \
        -out /dev/null 2>&1); then
        echo "INFO: $label: openssl cms -verify: ok"
    else
        echo "INFO: $label: openssl cms -verify: failed: $(summarize_openssl_error \
            <<<"$openssl_output")"
    fi

    # Asserted: the test data match the cross-check column of the table.
    case $crosscheck in
        good | good-binary)
            rc=0
            check_output=$(openssl_verify_signature "$message" "$crosscheck" \
                "$work/crosscheck-signer.pem" "${openssl_options[@]}") || rc=$?
            if ((rc == 3)); then
                echo "SKIP: $label: cross-check: $check_output"
            elif ((rc != 0)); then
                fail "$label: openssl cannot verify the signature, but the table expects good"
                echo "$check_output"
            fi
            ;;
        bad)
            if openssl cms -verify -noverify -in "$message" -out /dev/null 2>/dev/null; then
                fail "$label: openssl verifies the signature, but the table expects bad"
            fi
            ;;
    esac

    rc=0
    timeout "$timeout_seconds" "$p11smime" verify "${options[@]}" --in "$message" \
        >"$work/stdout" 2>"$work/stderr" || rc=$?
    if [[ "$rc" == "${expected[$i]}" ]]; then
        echo "PASS: $label: exit status $rc"
        passes=$((passes + 1))
    else
        fail "$label: expected exit status ${expected[$i]}, got $rc"
        echo "  command, run in $corpus:"
        echo "    $p11smime verify ${options[*]} --in $message"
        [[ -n "${reasons[$i]}" ]] && echo "  expected because: ${reasons[$i]}"
        sed 's/^/  stderr: /' "$work/stderr"
    fi
done

# --- Signed content written by --out -------------------------------------------------------

message=thunderbird/alice.sig.SHA256.opaque.eml
read -ra options <<<"${trust[tb]}"
rc=0
timeout "$timeout_seconds" "$p11smime" verify "${options[@]}" --in "$message" \
    --out "$work/content.out" >"$work/stdout" 2>"$work/stderr" || rc=$?
if [[ "$rc" != 0 ]]; then
    fail "$message --out: expected exit status 0, got $rc"
    sed 's/^/  stderr: /' "$work/stderr"
elif ! grep -q "This is a test message from Alice to Bob." "$work/content.out"; then
    fail "$message --out: the written content lacks the signed text"
    sed 's/^/  content: /' "$work/content.out"
else
    echo "PASS: $message --out: the signed text was written"
    passes=$((passes + 1))
fi

echo "corpus: $passes passed, $failures failed, $skips skipped"
((failures == 0))
