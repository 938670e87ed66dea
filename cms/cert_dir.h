// The certificate folder of `verify --learn`, `encrypt --cert-dir` and `certs`: one PEM file per
// learned address with a JSON side file holding the signer's SMIMECapabilities, and any
// *.pem, *.crt, *.cer or *.der certificate files put there by hand.
#pragma once

#include <ctime>
#include <optional>
#include <string>
#include <vector>

#include <openssl/x509.h>

namespace p11smime {

// Contents of the side file NAME.json of a learned certificate NAME.pem.
struct LearnedInfo {
    std::string email;                     // the address the certificate was learned for
    std::string fingerprint;               // SHA-256 of the certificate, hexadecimal
    std::vector<std::string> capabilities; // SMIMECapabilities OIDs, most preferred first
    std::string signing_time;              // ISO 8601 signingTime of the message, or empty
    std::string learned_at;                // ISO 8601
};

// One certificate found in the folder.
struct FolderCertificate {
    std::string file;
    std::string subject;
    std::string issuer;
    std::string serial; // hexadecimal
    std::string not_before;
    std::string not_after;
    std::string fingerprint;
    std::vector<std::string> emails;
    std::optional<LearnedInfo> learned; // from the side file, for learned certificates
    std::string der;
};

// Reads every certificate file of folder, with the side files of learned ones. Throws Error
// when the folder or a certificate file cannot be read.
std::vector<FolderCertificate> read_certificate_folder_entries(const std::string &folder);

// Outcome of learn_certificate.
struct LearnResult {
    enum class Outcome { added, replaced, updated, kept };
    Outcome outcome = Outcome::kept;
    std::string file;   // the certificate file written or kept
    std::string reason; // why a certificate was kept, in words
};

// Stores certificate (DER) for email in folder with its SMIMECapabilities. An address
// without a certificate gets it. A different certificate stored for the address is replaced
// only when the new one is valid now and its notBefore is later. The same certificate gets
// the capabilities of a message whose signingTime is not older than the stored one's. A
// certificate that is not valid now is never stored. The folder is created when missing and
// files are written atomically. Throws Error when the folder cannot be written.
LearnResult learn_certificate(const std::string &folder, const std::string &email,
                              const std::string &der,
                              const std::vector<std::string> &capabilities,
                              const std::string &signing_time);

// Removes the certificate files in folder that hold a certificate for email, with their side
// files. Returns the files removed. Throws Error when a file cannot be removed.
std::vector<std::string> remove_certificates(const std::string &folder, const std::string &email);

// Returns the SMIMECapabilities recorded in folder for certificate, or nothing when it was
// not learned from a signed message.
std::optional<std::vector<std::string>> capabilities_in_folder(const std::string &folder,
                                                               X509 *certificate);

// Returns the cipher name that `encrypt --cipher` takes for a SMIMECapabilities OID, or an
// empty string for a cipher p11smime does not encrypt with.
std::string cipher_name(const std::string &oid);

// Chooses the content cipher for recipients whose SMIMECapabilities are given (nothing where
// unknown): the first cipher of the first recipient's list that p11smime supports and every
// other recipient lists. fallback is returned when a recipient's capabilities are unknown or
// no cipher is common.
std::string choose_cipher(const std::vector<std::optional<std::vector<std::string>>> &recipients,
                          const std::string &fallback);

// Returns the SHA-256 fingerprint of certificate as lowercase hexadecimal.
std::string certificate_fingerprint(X509 *certificate);

} // namespace p11smime
