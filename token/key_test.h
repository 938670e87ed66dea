// Test operations that tell a lost token from a message that cannot be processed.
#pragma once

#include <string>

#include <openssl/evp.h>
#include <openssl/x509.h>

namespace p11smime {

// Signs a fixed SHA-256 digest with key. Returns false and sets error when the token fails.
bool test_signature(EVP_PKEY *key, std::string &error);

// Decrypts, with key, a random secret encrypted to certificate (RSA), or derives an ECDH
// secret with a fresh ephemeral key (EC). Returns false and sets error when the token fails.
bool test_decryption(EVP_PKEY *key, X509 *certificate, std::string &error);

} // namespace p11smime
