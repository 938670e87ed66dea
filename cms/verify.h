// S/MIME signature verification: signature, certification path, S/MIME purpose and sender.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <openssl/bio.h>
#include <openssl/x509.h>

#include "cms/revocation.h"
#include "cms/source.h"
#include "cms/validation_time.h"

namespace p11smime {

// How far the Date header may be from signingTime before the report warns, in seconds. It is
// the hour that Thunderbird allows (mailnews/mime/src/mimemcms.cpp) before it calls the
// signature bad.
constexpr long date_tolerance_seconds = 3600;

struct VerifyOptions {
    std::optional<std::string> ca_file; // PEM file of trust anchors
    std::optional<std::string> ca_path; // OpenSSL hashed directory of trust anchors
    bool system_ca = true;              // also trust the system store
    bool sender_check = true;           // From must match an email of the signer certificate
    std::vector<std::string> signer_certificate_files; // for signatures that omit the signer

    // Folder for data too large for memory: the content of an opaque signature, and the
    // layers of a decrypted message; empty means $TMPDIR, else /tmp.
    std::string temp_folder;

    AtTime at_time;                 // when the path is validated: now, signingTime or a date
    RevocationOptions revocation;   // local CRLs and online checks
    bool date_mismatch_fails = false; // Date header and signingTime too far apart: a failure
    bool allow_sha1 = false; // accept SHA-1 signatures, with a warning
};

// Results of the checks on one SignerInfo.
struct SignerReport {
    std::string subject;
    std::vector<std::string> emails;
    std::string issuer;
    std::string serial; // hexadecimal
    std::string signing_time; // ISO 8601, or empty when the attribute is absent
    long long signing_time_unix = 0; // seconds since 1970 in UTC, or 0 when absent
    std::string fingerprint_sha1;    // of the certificate, uppercase hex, as gpgsm shows it
    std::string key_type;            // "RSA", "EC" or "ED25519", from OpenSSL's key name
    std::string digest;
    std::string signature_algorithm;
    bool signature_valid = false;
    bool certificate_valid = false;
    std::string certificate_error; // why the path or purpose check failed
    bool sender_matches = false;
    std::string validation_time;        // ISO 8601 time the path was validated at
    std::string validation_time_source; // "now", "signingTime" or "--at-time"
    std::string time_failure;           // why the path could not be validated at that time
    RevocationReport revocation;        // filled in when the path is valid
    std::vector<std::string> notes;     // a future signingTime, or one outside the
                                        // certificate's validity
    std::string date_note;              // the Date header is far from signingTime, or
                                        // unreadable
    std::string certificate_der;        // the signer certificate, for `verify --learn`
    std::vector<std::string> capabilities; // SMIMECapabilities OIDs, most preferred first
    std::string algorithm_error; // why the digest or the signer key is too weak, or empty
};

struct VerifyResult {
    bool valid = false;                // the signature and every policy check passed
    std::vector<std::string> failures; // each failed check, in words
    std::vector<std::string> warnings;
    std::string structure;             // "multipart/signed" or "signed-data"
    std::string part;                  // MIME part number of the signed part, "1" at the top
    std::string from;                  // the From address checked against the signer
    std::string date;                  // the Date header, or empty
    std::vector<SignerReport> signers;
    std::string content; // the signed MIME entity, without the unsigned outer headers
};

// Verifies the first S/MIME signature in message: a multipart/signed (also inside
// multipart/mixed) or an opaque application/pkcs7-mime signed-data. The digest comes from the
// SignerInfo, never from micalg. Checks the path to the trust anchors at options.at_time, its
// revocation as options.revocation sets, the S/MIME signing purpose (key usage and extended
// key usage), the digest and signer key strength (no MD5, no SHA-1 unless allowed, no RSA or
// DSA key under 2048 bits) and, unless disabled, the From address. The Date header is
// compared with signingTime. A failed check is reported in the result; Error is thrown only
// when the input cannot be read as S/MIME (no signature found, malformed MIME or CMS) or a
// CRL file cannot be read.
VerifyResult verify_message(const std::string &message, const VerifyOptions &options);

// Verifies source as verify_message() does, reading it in pieces so that a message of any
// size costs bounded memory. When the signature matches, the content goes to content_out
// (unless it is null) instead of VerifyResult::content, after the signature check but
// whatever the certificate checks say: write it where nobody reads it before result.valid is
// known.
VerifyResult verify_stream(const MessageSource &source, const VerifyOptions &options,
                           BIO *content_out);

// Returns the SHA-1 fingerprint of certificate in uppercase hex, the certificate ID that gpgsm
// shows and accepts. It names a certificate; nothing here relies on SHA-1 for security.
std::string certificate_fingerprint(const X509 *certificate);

// Verifies a detached SignedData (DER) over content taken byte for byte, with no MIME and no
// canonical form, as for a git commit or tag. Checks the signature, the path to the trust
// anchors now and the S/MIME signing purpose; there is no From address, so the sender check
// is never made and options.sender_check is ignored. structure is "detached" and content is
// left empty. A failed check is reported in the result; Error is thrown only when der is not
// a CMS SignedData.
VerifyResult verify_detached(const std::string &content, const std::string &der,
                             const VerifyOptions &options);

} // namespace p11smime
