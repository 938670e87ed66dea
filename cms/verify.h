// S/MIME signature verification: signature, certification path, S/MIME purpose and sender.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace p11smime {

struct VerifyOptions {
    std::optional<std::string> ca_file; // PEM file of trust anchors
    std::optional<std::string> ca_path; // OpenSSL hashed directory of trust anchors
    bool system_ca = true;              // also trust the system store
    bool sender_check = true;           // From must match an email of the signer certificate
    std::vector<std::string> signer_certificate_files; // for signatures that omit the signer
    bool allow_sha1 = false; // accept SHA-1 signatures, with a warning
};

// What was found about one SignerInfo.
struct SignerReport {
    std::string subject;
    std::vector<std::string> emails;
    std::string issuer;
    std::string serial; // hexadecimal
    std::string signing_time; // ISO 8601, or empty when the attribute is absent
    std::string digest;
    std::string signature_algorithm;
    bool signature_valid = false;
    bool certificate_valid = false;
    std::string certificate_error; // why the path or purpose check failed
    bool sender_matches = false;
    std::string algorithm_error; // why the digest or the signer key is too weak, or empty
};

struct VerifyResult {
    bool valid = false;                // the signature and every policy check passed
    std::vector<std::string> failures; // each failed check, in words
    std::vector<std::string> warnings;
    std::string structure;             // "multipart/signed" or "signed-data"
    std::string part;                  // MIME part number of the signed part, "1" at the top
    std::string from;                  // the From address checked against the signer
    std::vector<SignerReport> signers;
    std::string content;               // the signed content in the input's line endings
};

// Verifies the first S/MIME signature in message: a multipart/signed (also inside
// multipart/mixed) or an opaque application/pkcs7-mime signed-data. The digest comes from the
// SignerInfo, never from micalg. Checks the path to the trust anchors now, the S/MIME signing
// purpose (key usage and extended key usage), the digest and signer key strength (no MD5, no
// SHA-1 unless allowed, no RSA or DSA key under 2048 bits) and, unless disabled, the From
// address. A failed
// check is reported in the result; Error is thrown only when the input cannot be read as
// S/MIME (no signature found, malformed MIME or CMS).
VerifyResult verify_message(const std::string &message, const VerifyOptions &options);

} // namespace p11smime
