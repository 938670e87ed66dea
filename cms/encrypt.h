// S/MIME encryption to recipient certificates: EnvelopedData, or AuthEnvelopedData for GCM.
#pragma once

#include <string>
#include <vector>

#include <openssl/bio.h>
#include <openssl/x509.h>

#include "cms/source.h"

namespace p11smime {

struct EncryptOptions {
    std::vector<X509 *> recipients; // not owned
    // Content cipher: "aes-128-cbc", "aes-256-cbc" (the default), "aes-128-gcm" or
    // "aes-256-gcm". GCM gives AuthEnvelopedData (RFC 5083, RFC 5084).
    std::string cipher = "aes-256-cbc";
    bool rsa_oaep = false; // RSAES-OAEP with SHA-256 for RSA recipients, else PKCS#1 v1.5

    // Folder for a body too large for memory that must be re-encoded; empty means $TMPDIR,
    // else /tmp.
    std::string temp_folder;
};

// Checks that certificate may receive S/MIME encrypted mail now: within its validity period,
// an RSA or EC key, keyEncipherment (RSA) or keyAgreement (EC) when key usage is present, and
// emailProtection when extended key usage is present. Throws Error naming the certificate by
// its subject and by label.
void check_recipient_certificate(X509 *certificate, const std::string &label);

// Encrypts message, an RFC 5322 message or a bare MIME entity: the routing headers stay
// outside and the MIME entity, in canonical form, becomes the encrypted content of an
// application/pkcs7-mime part. EC recipients get ECDH (dhSinglePass-stdDH with a SHA-256 KDF
// and AES key wrap). Throws Error or OpensslError.
std::string encrypt_message(const std::string &message, const EncryptOptions &options);

// Encrypts source as encrypt_message() does and writes the result to out as it is produced,
// so that a message of any size costs bounded memory. The CMS structure is streamed in BER
// with indefinite lengths, where encrypt_message() writes DER. After an error, out contains
// a partial message, which the caller discards. Throws Error or OpensslError.
void encrypt_stream(const MessageSource &source, BIO *out, const EncryptOptions &options);

// Returns the To, Cc and Bcc addresses in the header block of source, in that order.
std::vector<std::string> recipient_addresses(const MessageSource &source);

// Returns the To, Cc and Bcc addresses of message, in that order.
std::vector<std::string> recipient_addresses(const std::string &message);

} // namespace p11smime
