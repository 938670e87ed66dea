// Key pair generation on a token, for `p11smime keygen`.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "token/token.h"

namespace p11smime {

// The key types `p11smime keygen --type` accepts: "rsa:2048", "rsa:3072", "rsa:4096",
// "ec:p256" and "ec:p384".
const std::vector<std::string> &key_generation_types();

struct KeyGenerationRequest {
    Pkcs11Uri token_uri; // token attributes only
    std::string type;    // one of key_generation_types()
    std::string label;   // CKA_LABEL of both keys
    // CKA_ID of both keys; when empty, the lowest one-byte ID that no object on the token has.
    std::optional<std::vector<unsigned char>> id;
};

struct GeneratedKey {
    std::string private_key_uri;
    std::string public_key_uri;
    std::string token_label;
    std::string id_hex;
};

// Generates a key pair on the token (C_GenerateKeyPair) after logging in. The private key is
// a token object with CKA_PRIVATE, CKA_SENSITIVE and CKA_SIGN true and CKA_EXTRACTABLE false.
// It can also decrypt (RSA) or derive (EC), so it can read S/MIME mail. When the token
// reports the new private key as extractable or not sensitive, both keys are destroyed and
// Error is thrown. Throws Error when the token is not found or the label or CKA_ID is taken,
// and Pkcs11Error when a PKCS#11 call fails.
GeneratedKey generate_key_pair(const KeyGenerationRequest &request, const TokenOptions &options);

} // namespace p11smime
