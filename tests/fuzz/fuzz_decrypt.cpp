// libFuzzer target: parsing of an encrypted message and everything inside it. The key lookup
// returns a software RSA key from the test corpus for the inputs encrypted to it, so the
// seeds made for that key reach the decrypted content and the signed layers within.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <openssl/pem.h>

#include "cms/decrypt.h"
#include "common/error.h"
#include "common/ossl.h"

namespace {

struct RecipientKey {
    p11smime::EvpPkeyPtr key;
    p11smime::X509Ptr certificate;
};

RecipientKey load_recipient() {
    const std::string folder = P11SMIME_FUZZ_KEY_DIR;
    p11smime::BioPtr key_file(BIO_new_file((folder + "/rsa_key.pem").c_str(), "r"));
    p11smime::BioPtr certificate_file(BIO_new_file((folder + "/rsa_ca.pem").c_str(), "r"));
    RecipientKey recipient;
    if (key_file)
        recipient.key.reset(PEM_read_bio_PrivateKey(key_file.get(), nullptr, nullptr, nullptr));
    if (certificate_file)
        recipient.certificate.reset(
            PEM_read_bio_X509(certificate_file.get(), nullptr, nullptr, nullptr));
    if (!recipient.key || !recipient.certificate) {
        std::fprintf(stderr, "fuzz_decrypt: cannot read the key and certificate in %s\n",
                     folder.c_str());
        std::abort();
    }
    return recipient;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const RecipientKey recipient = load_recipient();
    p11smime::KeyLookup lookup = [](const std::function<bool(X509 *)> &is_recipient,
                                    const std::vector<std::string> &) {
        if (!is_recipient(recipient.certificate.get()))
            throw p11smime::Error("not encrypted to the fuzzing key");
        return p11smime::DecryptionKey{recipient.key.get(), recipient.certificate.get()};
    };
    p11smime::VerifyOptions options;
    options.system_ca = false;
    try {
        p11smime::decrypt_message(std::string(reinterpret_cast<const char *>(data), size),
                                  lookup, options, true);
    } catch (const p11smime::Error &) {
        // A rejected input is the expected outcome for most inputs.
    }
    return 0;
}
