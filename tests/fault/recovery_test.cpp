// Signs in a loop with a RecoveringTokenKey while the fault module fails calls mid-run, and
// checks that every signature is made and verifies. Driven by tests/integration/token-faults.sh.
//
// Usage: token_recovery_test MODULE KEY_URI PIN_FILE CONTROL_FILE SIGNATURES FAULT_AT RULE...
//   Writes the RULE lines to CONTROL_FILE before signature number FAULT_AT. A RULE of
//   "wrong-pin" instead overwrites PIN_FILE with a wrong PIN at that point.
// Exit status: 0 when all signatures were made and verified, 1 when recovery failed, 2 on
// wrong usage. Prints the recovery log and a summary line on standard error.
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "common/error.h"
#include "common/ossl.h"
#include "token/recovery.h"

using namespace p11smime;

namespace {

using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, CDeleter<EVP_PKEY_CTX_free>>;

std::string digest_of(const std::string &text) {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char *>(text.data()), text.size(), digest);
    return std::string(reinterpret_cast<char *>(digest), sizeof digest);
}

// Signs digest on the token (C_Sign through libp11) with PKCS#1 v1.5 or ECDSA.
std::string sign_digest(EVP_PKEY *key, const std::string &digest) {
    PkeyCtxPtr context(EVP_PKEY_CTX_new(key, nullptr));
    size_t length = 0;
    clear_openssl_errors();
    if (!context || EVP_PKEY_sign_init(context.get()) <= 0 ||
        EVP_PKEY_CTX_set_signature_md(context.get(), EVP_sha256()) <= 0 ||
        EVP_PKEY_sign(context.get(), nullptr, &length,
                      reinterpret_cast<const unsigned char *>(digest.data()), digest.size()) <= 0)
        throw OpensslError("cannot set up signing");
    std::string signature(length, '\0');
    if (EVP_PKEY_sign(context.get(), reinterpret_cast<unsigned char *>(signature.data()),
                      &length, reinterpret_cast<const unsigned char *>(digest.data()),
                      digest.size()) <= 0)
        throw OpensslError("signing on the token failed");
    signature.resize(length);
    return signature;
}

// Verifies signature in software with the certificate's public key.
bool verifies(X509 *certificate, const std::string &digest, const std::string &signature) {
    PkeyCtxPtr context(EVP_PKEY_CTX_new(X509_get0_pubkey(certificate), nullptr));
    bool valid =
        context && EVP_PKEY_verify_init(context.get()) > 0 &&
        EVP_PKEY_CTX_set_signature_md(context.get(), EVP_sha256()) > 0 &&
        EVP_PKEY_verify(context.get(), reinterpret_cast<const unsigned char *>(signature.data()),
                        signature.size(), reinterpret_cast<const unsigned char *>(digest.data()),
                        digest.size()) == 1;
    clear_openssl_errors();
    return valid;
}

struct Arguments {
    std::string module;
    std::string key_uri;
    std::string pin_file;
    std::string control_file;
    int signatures = 0;
    int fault_at = 0;
    std::vector<std::string> rules;
};

void inject_faults(const Arguments &arguments) {
    std::ofstream control(arguments.control_file, std::ios::trunc);
    for (const auto &rule : arguments.rules) {
        if (rule == "wrong-pin")
            std::ofstream(arguments.pin_file, std::ios::trunc) << "000000\n";
        else
            control << rule << "\n";
    }
}

int run(const Arguments &arguments) {
    TokenOptions token;
    token.module = arguments.module;
    token.pin_file = arguments.pin_file;
    token.warn = [](const std::string &message) { std::cerr << "warning: " << message << "\n"; };
    RecoveryOptions recovery;
    recovery.first_delay = std::chrono::milliseconds(20);
    recovery.max_attempts = 5;
    recovery.log = [](const std::string &line) { std::cerr << "recovery: " << line << "\n"; };

    RecoveringTokenKey key(Pkcs11Uri::parse(arguments.key_uri), std::nullopt, token, recovery);
    int verified = 0;
    for (int i = 0; i < arguments.signatures; ++i) {
        if (i == arguments.fault_at)
            inject_faults(arguments);
        std::string digest = digest_of("message " + std::to_string(i));
        std::string signature;
        key.run([&](const TokenKey &open) { signature = sign_digest(open.key(), digest); });
        if (verifies(key.certificate(), digest, signature))
            ++verified;
    }
    std::cerr << verified << " of " << arguments.signatures << " signatures verified, "
              << key.recoveries() << " recoveries\n";
    return verified == arguments.signatures ? 0 : 1;
}

} // namespace

int main(int argc, char **argv) {
    if (argc < 8) {
        std::cerr << "usage: token_recovery_test MODULE KEY_URI PIN_FILE CONTROL_FILE "
                     "SIGNATURES FAULT_AT RULE...\n";
        return 2;
    }
    Arguments arguments{argv[1], argv[2], argv[3], argv[4], std::atoi(argv[5]),
                        std::atoi(argv[6]), {}};
    for (int i = 7; i < argc; ++i)
        arguments.rules.emplace_back(argv[i]);
    try {
        return run(arguments);
    } catch (const Error &error) {
        std::cerr << "error: " << error.what() << "\n";
        return 1;
    }
}
