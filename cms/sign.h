// S/MIME signing: a whole message in, the same message signed out.
#pragma once

#include <string>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "cms/source.h"

namespace p11smime {

struct SignOptions {
    EVP_PKEY *key = nullptr;        // the signer's private key; not owned
    X509 *certificate = nullptr;    // the signer's certificate; not owned
    STACK_OF(X509) *chain = nullptr; // certificates to include besides the signer's; not owned

    // "sha256", "sha384" or "sha512"; empty picks SHA-256, or the digest that matches the
    // curve of an EC key (SHA-384 for P-384, SHA-512 for P-521) because verifiers such as
    // gpgsm reject a shorter hash.
    std::string digest;
    bool rsa_pss = false; // RSASSA-PSS with salt length equal to the digest length
    bool opaque = false;  // application/pkcs7-mime signed-data instead of multipart/signed

    // Folder for a body too large for memory that must be re-encoded; empty means $TMPDIR,
    // else /tmp.
    std::string temp_folder;
};

// Signs message, an RFC 5322 message or a bare MIME entity. Routing headers stay at the top;
// the MIME entity is signed in canonical form and becomes the first part of a
// multipart/signed (or the content of an opaque signed-data). The signed attributes are
// contentType, messageDigest, signingTime, SMIMECapabilities and ESS signingCertificateV2.
// The output uses the input's line endings. Throws Error or OpensslError.
std::string sign_message(const std::string &message, const SignOptions &options);

// Signs source as sign_message() does and writes the signed message to out as it is produced,
// so that a message of any size costs bounded memory. An opaque signature is streamed in BER
// with indefinite lengths (RFC 5652 allows BER), where sign_message() writes DER. After an
// error, out contains a partial message, which the caller discards. Throws Error or OpensslError.
void sign_stream(const MessageSource &source, BIO *out, const SignOptions &options);

// Signs data byte for byte, with no MIME parsing or canonical form, as git needs for the raw
// bytes of a commit or tag. Returns the DER of a detached SignedData with the same signed
// attributes and certificates as sign_message; options.opaque is ignored. Throws Error or
// OpensslError.
std::string sign_detached(const std::string &data, const SignOptions &options);

// Returns the digest name sign_message uses for key when options.digest is empty.
std::string default_digest(EVP_PKEY *key);

// Returns the RFC 8551 micalg value for a digest name, e.g. "sha-256". Throws Error for a
// digest that S/MIME signing here does not support.
std::string micalg_name(const std::string &digest);

} // namespace p11smime
