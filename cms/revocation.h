// Revocation checking of a validated certification path: local CRLs, and with online checks
// OCSP (RFC 6960) first and CRL distribution points (RFC 5280) second, with a disk cache.
#pragma once

#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <openssl/x509.h>

namespace p11smime {

// This header leaves out common/ossl.h, because its openssl/cms.h must not come before
// openssl/pem.h in files that include both.
struct X509CrlDeleter {
    void operator()(X509_CRL *crl) const noexcept { X509_CRL_free(crl); }
};
using X509CrlPtr = std::unique_ptr<X509_CRL, X509CrlDeleter>;

// Treatment of an unknown revocation status: soft reports it as a warning, hard fails.
enum class RevocationMode { soft, hard };

struct RevocationOptions {
    std::vector<std::string> crl_files; // PEM or DER CRLs
    std::optional<std::string> crl_dir; // folder of *.crl, *.pem, *.der and *.rN CRL files
    bool online = false;                // query OCSP responders and CRL distribution points
    std::optional<std::string> ocsp_url; // responder used instead of the certificate's AIA
    RevocationMode mode = RevocationMode::soft;
    int timeout_seconds = 5;             // for each HTTP request
    std::optional<std::string> cache_dir; // OCSP responses and CRLs fetched online
};

enum class RevocationStatus { good, revoked, unknown, not_checked };

// Returns "good", "revoked", "unknown" or "not-checked".
std::string status_name(RevocationStatus status);

// Revocation status of one certificate of the path, and how it was found.
struct CertificateRevocation {
    std::string subject;
    RevocationStatus status = RevocationStatus::not_checked;
    std::string source;          // "CRL file ca.crl", "OCSP http://...", "CRL http://..."
    std::string revocation_time; // ISO 8601, when revoked or revoked after the validation time
    std::string reason;          // CRLReason name, such as "keyCompromise"
    std::string note;            // such as a revocation after the validation time
    std::vector<std::string> problems; // why a source gave no answer
};

// Revocation of a whole path, leaf first. status is the worst of its certificates: revoked,
// then unknown, then not_checked, then good.
struct RevocationReport {
    RevocationStatus status = RevocationStatus::not_checked;
    bool online = false;
    std::string note; // such as a signer certificate that is itself a trust anchor
    std::vector<CertificateRevocation> certificates;
};

// Checks paths against local CRLs and, when options.online is set, online sources. The CRL
// files are read once, by the constructor, which throws Error when one cannot be read.
class RevocationChecker {
  public:
    explicit RevocationChecker(const RevocationOptions &options);

    // Checks each certificate of chain (leaf first, as X509_STORE_CTX_get1_chain returns it)
    // except the trust anchor at its end, for the time at. trust verifies the signatures of
    // OCSP responses, and untrusted contains the certificates that came with the message. A
    // certificate revoked for keyCompromise, cACompromise or aACompromise counts as revoked
    // at any time, because whoever holds the key can write any signingTime. Never throws for
    // an unreachable or bad source: that is reported in the result.
    RevocationReport check(STACK_OF(X509) * chain, std::time_t at, X509_STORE *trust,
                           STACK_OF(X509) * untrusted) const;

  private:
    CertificateRevocation check_certificate(X509 *certificate, X509 *issuer, std::time_t at,
                                            X509_STORE *trust, STACK_OF(X509) * untrusted) const;

    struct LocalCrl {
        std::string source; // "CRL file PATH"
        X509CrlPtr crl;
    };

    RevocationOptions options_;
    std::vector<LocalCrl> crls_;
};

} // namespace p11smime
