// PKCS#10 certificate signing requests (RFC 2986) for S/MIME certificates, for `p11smime csr`.
#pragma once

#include <optional>
#include <string>

#include <openssl/evp.h>

namespace p11smime {

// What the certificate will be used for, which decides the keyUsage bits requested
// (RFC 8550, 4.4.2).
enum class CertificateUse {
    signing,    // digitalSignature, nonRepudiation
    encryption, // keyEncipherment (RSA) or keyAgreement (EC)
    both,
};

struct CertificateRequestOptions {
    std::string email;                  // the rfc822Name of the subjectAltName
    std::optional<std::string> subject; // "/CN=.../O=...", as for `openssl req -subj`
    CertificateUse use = CertificateUse::both;
};

// Makes a PEM certificate signing request for the public key of key, signed by key (whose
// private operations may run on a token). It requests subjectAltName rfc822Name, critical
// keyUsage and extendedKeyUsage emailProtection. The subject defaults to CN=email. The
// digest is SHA-256, or SHA-384 for a P-384 key. The signature is verified before the
// request is returned. Throws Error for an invalid address or subject, OpensslError when
// signing fails.
std::string make_certificate_request(EVP_PKEY *key, const CertificateRequestOptions &options);

} // namespace p11smime
