// S/MIME decryption and the unwrapping of signed and encrypted layers.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "cms/verify.h"

namespace p11smime {

// A private key that can decrypt, with its certificate; neither is owned.
struct DecryptionKey {
    EVP_PKEY *key = nullptr;
    X509 *certificate = nullptr;
};

// Supplies the key for an encrypted layer. is_recipient tells whether a certificate matches one
// of the layer's RecipientInfos (issuer and serial number, or subject key identifier);
// recipients describes them for an error message. Throws Error when no key matches.
using KeyLookup = std::function<DecryptionKey(const std::function<bool(X509 *)> &is_recipient,
                                              const std::vector<std::string> &recipients)>;

// One layer taken off the message, outermost first.
struct Layer {
    std::string type;     // "signed-data", "multipart/signed", "enveloped-data" or
                          // "authEnveloped-data"
    std::string recipient; // subject of the certificate whose key decrypted the layer
    bool rsa_oaep = false; // the content-encryption key is wrapped with RSAES-OAEP
    bool has_verification = false;
    VerifyResult verification; // for a signed layer
};

struct DecryptResult {
    bool valid = false;                // every layer decrypted and every signature verified
    std::vector<Layer> layers;
    std::vector<std::string> failures; // each failed check, in words
    bool decryption_failed = false;    // a layer could not be decrypted, as opposed to verified
    std::string detail;                // low-level cause of a decryption failure, for a debug log
    std::vector<unsigned long> error_codes; // OpenSSL's packed codes behind detail, oldest first
    std::string content;               // the innermost message, in the input's line endings
};

// Decrypts message and unwraps its layers: encrypted (EnvelopedData or AuthEnvelopedData) and
// signed (multipart/signed or signed-data), in any order, up to a fixed depth. Signed layers
// are verified with verify_options unless verify is false; then unwrapping stops at the first
// signed layer. Content of AuthEnvelopedData is released only after its tag checks. Any
// failure to decrypt the content-encryption key or the content gives the same failure text,
// so the result cannot serve as a padding oracle. Throws Error when the message has no
// encrypted layer or when lookup finds no key.
DecryptResult decrypt_message(const std::string &message, const KeyLookup &lookup,
                              const VerifyOptions &verify_options, bool verify);

// Decrypts source as decrypt_message() does, reading it in pieces so that a message of any
// size costs bounded memory. Intermediate layers go to unnamed temporary files in
// verify_options.temp_folder. The innermost message goes to content_out instead of
// DecryptResult::content. The last layer is decrypted straight into content_out, before the
// tag of an AuthEnvelopedData is checked at its end, so content_out must be a place that
// nobody reads until the result says valid, such as a temporary file renamed only then.
DecryptResult decrypt_stream(const MessageSource &source, const KeyLookup &lookup,
                             const VerifyOptions &verify_options, bool verify,
                             BIO *content_out);

} // namespace p11smime
