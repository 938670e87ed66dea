// Internal to cms/: HTTP requests for OCSP and CRLs through OpenSSL's HTTP client, and the disk
// cache of their answers.
#pragma once

#include <ctime>
#include <optional>
#include <string>
#include <vector>

#include <openssl/ocsp.h>
#include <openssl/x509.h>

#include "cms/crl_check.h"
#include "cms/revocation.h"

namespace p11smime {

// Fetches url with HTTP GET, or POST when post_body is given, and returns the response body.
// Only http:// URLs are accepted. timeout_seconds bounds the whole exchange. OpenSSL's
// client honours the http_proxy and no_proxy environment variables. Throws Error with the
// reason when the request fails.
std::string http_fetch(const std::string &url, const std::string *post_body,
                       const char *content_type, int timeout_seconds, size_t max_length);

// OCSP responses and CRLs on disk, each in a file named after a SHA-256 of its key. Reads and
// writes never throw: a damaged or unwritable cache only costs a network request.
class RevocationCache {
  public:
    explicit RevocationCache(std::optional<std::string> folder) : folder_(std::move(folder)) {}

    // Returns the cached bytes stored under kind and key, or nothing.
    std::optional<std::string> read(const std::string &kind, const std::string &key) const;

    // Stores der under kind and key atomically. A failure is added to problems().
    void write(const std::string &kind, const std::string &key, const std::string &der) const;

    // Each failure to write the cache, in words.
    const std::vector<std::string> &problems() const { return problems_; }

  private:
    std::optional<std::string> path(const std::string &kind, const std::string &key) const;

    std::optional<std::string> folder_;
    mutable std::vector<std::string> problems_;
};

// The answer of one OCSP responder; from_cache tells that no request was sent.
struct OcspAnswer {
    SourceAnswer answer;
    bool from_cache = false;
};

// Asks the responder at url about certificate, issued by issuer, or takes a cached response
// that is still current. The response must be successful, signed by the issuer or a
// responder it delegated to (verified against trust), carry the request's nonce when the
// responder echoes nonces, and be current: thisUpdate not in the future and nextUpdate not
// past. A response with a nextUpdate is cached until then.
OcspAnswer query_ocsp(X509 *certificate, X509 *issuer, const std::string &url,
                      X509_STORE *trust, STACK_OF(X509) * untrusted,
                      const RevocationOptions &options, const RevocationCache &cache);

// Downloads the CRL at url, or takes a cached one whose nextUpdate has not passed. Throws
// Error when neither is available.
X509CrlPtr fetch_crl(const std::string &url, const RevocationOptions &options,
                     const RevocationCache &cache, bool &from_cache);

} // namespace p11smime
