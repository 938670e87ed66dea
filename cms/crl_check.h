// Internal to cms/: what one CRL or OCSP response states about one certificate.
#pragma once

#include <ctime>
#include <optional>
#include <string>

#include <openssl/x509.h>

namespace p11smime {

// The answer of one revocation source. kind none comes with the problem that kept the source
// from answering; an empty problem means that the source does not cover the certificate.
struct SourceAnswer {
    enum class Kind { none, good, revoked };
    Kind kind = Kind::none;
    std::optional<std::time_t> revocation_time;
    int reason = -1; // CRLReason code, -1 when the source gives none
    std::string problem;
};

// Checks certificate against crl, which must be issued and signed by issuer, for the time at.
// A CRL that does not list the certificate answers good only when it covers at: it was issued
// after at, or at lies before its nextUpdate. Delta CRLs, indirect CRLs and CRLs limited to
// some reasons are not supported and give kind none with a problem.
SourceAnswer check_against_crl(X509_CRL *crl, X509 *certificate, X509 *issuer, std::time_t at);

// Returns the RFC 5280 name of a CRLReason code, such as "keyCompromise".
std::string crl_reason_name(int reason);

// Tells whether a revocation for reason counts at any time: keyCompromise, cACompromise and
// aACompromise, because whoever holds a compromised key can write any signingTime.
bool revoked_at_any_time(int reason);

} // namespace p11smime
