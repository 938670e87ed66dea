// Storing certificates on a token, for `p11smime import`.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/ossl.h"
#include "token/token.h"

namespace p11smime {

struct ImportRequest {
    Pkcs11Uri token_uri;      // token attributes only
    X509 *certificate = nullptr; // not owned
    STACK_OF(X509) *chain = nullptr; // issuer certificates to store as well; may be null
    // Store the certificate even when no key on the token matches it.
    bool force = false;
    // Replace a certificate that the token already has for the same key.
    bool replace = false;
    std::optional<std::string> label;                // default: the key's CKA_LABEL
    std::optional<std::vector<unsigned char>> id;    // only with force and no matching key
};

struct ImportResult {
    std::string certificate_uri;
    std::string key_uri; // empty when no key matched
    std::string id_hex;
    std::string label;
    bool already_present = false; // the token had this exact certificate; nothing was stored
    int replaced = 0;             // certificates removed because of replace
    int chain_stored = 0;         // issuer certificates stored
};

// Stores the certificate on the token with the CKA_ID and CKA_LABEL of the private key whose
// public key it contains, after logging in. Private and public key objects are both
// compared, so a token that hides private keys still matches. Without force, a certificate
// matching no key is an Error, as is a different certificate already stored for the key
// unless replace is set. With force and no matching key, the CKA_ID is request.id or the
// SHA-1 hash of the subjectPublicKey (RFC 5280, 4.2.1.2). Issuer certificates from the chain
// are stored without a CKA_ID, unless the token already has them. Throws Error or
// Pkcs11Error.
ImportResult import_certificate(const ImportRequest &request, const TokenOptions &options);

} // namespace p11smime
