#include "token/key_test.h"

#include <vector>

#include <openssl/rand.h>

#include "common/error.h"
#include "common/ossl.h"

namespace p11smime {
namespace {

using EvpPkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, CDeleter<EVP_PKEY_CTX_free>>;

bool fail_with_queue(std::string &error, const std::string &operation) {
    error = operation + " failed: " + drain_openssl_errors();
    return false;
}

bool test_rsa_decryption(EVP_PKEY *key, X509 *certificate, std::string &error) {
    unsigned char secret[32];
    if (RAND_bytes(secret, sizeof secret) != 1)
        return fail_with_queue(error, "RAND_bytes");

    EvpPkeyCtxPtr encrypt(EVP_PKEY_CTX_new(X509_get0_pubkey(certificate), nullptr));
    size_t length = 0;
    if (!encrypt || EVP_PKEY_encrypt_init(encrypt.get()) != 1 ||
        EVP_PKEY_encrypt(encrypt.get(), nullptr, &length, secret, sizeof secret) != 1)
        return fail_with_queue(error, "encryption to the certificate");
    std::vector<unsigned char> wrapped(length);
    if (EVP_PKEY_encrypt(encrypt.get(), wrapped.data(), &length, secret, sizeof secret) != 1)
        return fail_with_queue(error, "encryption to the certificate");

    EvpPkeyCtxPtr decrypt(EVP_PKEY_CTX_new(key, nullptr));
    std::vector<unsigned char> plain(wrapped.size());
    size_t plain_length = plain.size();
    if (!decrypt || EVP_PKEY_decrypt_init(decrypt.get()) != 1 ||
        EVP_PKEY_decrypt(decrypt.get(), plain.data(), &plain_length, wrapped.data(), length) != 1)
        return fail_with_queue(error, "decryption on the token");
    if (plain_length != sizeof secret || CRYPTO_memcmp(plain.data(), secret, sizeof secret) != 0) {
        error = "decryption on the token returned a different secret";
        return false;
    }
    return true;
}

bool test_ecdh(EVP_PKEY *key, X509 *certificate, std::string &error) {
    EvpPkeyCtxPtr generate(EVP_PKEY_CTX_new(X509_get0_pubkey(certificate), nullptr));
    EVP_PKEY *ephemeral_raw = nullptr;
    if (!generate || EVP_PKEY_keygen_init(generate.get()) != 1 ||
        EVP_PKEY_keygen(generate.get(), &ephemeral_raw) != 1)
        return fail_with_queue(error, "ephemeral EC key generation");
    EvpPkeyPtr ephemeral(ephemeral_raw);

    EvpPkeyCtxPtr derive(EVP_PKEY_CTX_new(key, nullptr));
    size_t length = 0;
    if (!derive || EVP_PKEY_derive_init(derive.get()) != 1 ||
        EVP_PKEY_derive_set_peer(derive.get(), ephemeral.get()) != 1 ||
        EVP_PKEY_derive(derive.get(), nullptr, &length) != 1)
        return fail_with_queue(error, "ECDH on the token");
    std::vector<unsigned char> secret(length);
    if (EVP_PKEY_derive(derive.get(), secret.data(), &length) != 1)
        return fail_with_queue(error, "ECDH on the token");
    return true;
}

} // namespace

bool test_signature(EVP_PKEY *key, std::string &error) {
    clear_openssl_errors();
    unsigned char digest[32] = {0};
    EvpPkeyCtxPtr context(EVP_PKEY_CTX_new(key, nullptr));
    size_t length = 0;
    if (!context || EVP_PKEY_sign_init(context.get()) != 1 ||
        EVP_PKEY_CTX_set_signature_md(context.get(), EVP_sha256()) != 1 ||
        EVP_PKEY_sign(context.get(), nullptr, &length, digest, sizeof digest) != 1)
        return fail_with_queue(error, "signing on the token");
    std::vector<unsigned char> signature(length);
    if (EVP_PKEY_sign(context.get(), signature.data(), &length, digest, sizeof digest) != 1)
        return fail_with_queue(error, "signing on the token");
    return true;
}

bool test_decryption(EVP_PKEY *key, X509 *certificate, std::string &error) {
    clear_openssl_errors();
    if (!certificate) {
        error = "no certificate to encrypt the test secret to";
        return false;
    }
    if (EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA)
        return test_rsa_decryption(key, certificate, error);
    return test_ecdh(key, certificate, error);
}

} // namespace p11smime
