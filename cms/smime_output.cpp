#include "cms/smime_output.h"

#include <strings.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common/error.h"

namespace p11smime {

std::string make_boundary() {
    unsigned char random[16];
    if (RAND_bytes(random, sizeof random) != 1)
        throw OpensslError("cannot generate a MIME boundary");
    static const char digits[] = "0123456789abcdef";
    std::string boundary = "----=_p11smime_";
    for (unsigned char byte : random) {
        boundary += digits[byte >> 4];
        boundary += digits[byte & 0x0f];
    }
    return boundary;
}

std::string SmimeWriter::line(const std::string &text) const {
    return text + (input_.crlf ? "\r\n" : "\n");
}

std::string SmimeWriter::routing_headers() const {
    std::string text;
    bool has_mime_version = false;
    for (const auto &header : input_.routing_headers) {
        text += header.raw;
        has_mime_version |= strcasecmp(header.name.c_str(), "MIME-Version") == 0;
    }
    if (!has_mime_version)
        text += line("MIME-Version: 1.0");
    return text;
}

std::string SmimeWriter::base64_lines(const std::string &der) const {
    // EVP_EncodeUpdate writes lines of 64 characters, under the 76 of RFC 2045 section 6.8.
    EVP_ENCODE_CTX *context = EVP_ENCODE_CTX_new();
    if (!context)
        throw OpensslError("cannot encode base64");
    std::string encoded(der.size() / 48 * 65 + 66 + 4, '\0');
    int length = 0;
    int final_length = 0;
    EVP_EncodeInit(context);
    int ok = EVP_EncodeUpdate(context, reinterpret_cast<unsigned char *>(&encoded[0]), &length,
                              reinterpret_cast<const unsigned char *>(der.data()),
                              static_cast<int>(der.size()));
    EVP_EncodeFinal(context, reinterpret_cast<unsigned char *>(&encoded[length]), &final_length);
    EVP_ENCODE_CTX_free(context);
    if (ok != 1)
        throw OpensslError("cannot encode base64");
    encoded.resize(static_cast<size_t>(length + final_length));
    return input_.crlf ? to_crlf(encoded) : encoded;
}

std::string SmimeWriter::multipart_signed(const std::string &micalg,
                                          const std::string &canonical_entity,
                                          const std::string &signature) const {
    std::string boundary = make_boundary();
    std::string text = routing_headers();
    text += line("Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";");
    text += line("\tmicalg=" + micalg + "; boundary=\"" + boundary + "\"");
    text += line("");
    text += line("This is a cryptographically signed message in MIME format.");
    text += line("");
    text += line("--" + boundary);
    text += input_.crlf ? canonical_entity : to_lf(canonical_entity);
    text += line("");
    text += line("--" + boundary);
    text += line("Content-Type: application/pkcs7-signature; name=\"smime.p7s\"");
    text += line("Content-Transfer-Encoding: base64");
    text += line("Content-Disposition: attachment; filename=\"smime.p7s\"");
    text += line("Content-Description: S/MIME Cryptographic Signature");
    text += line("");
    text += base64_lines(signature);
    text += line("--" + boundary + "--");
    return text;
}

std::string SmimeWriter::opaque(const std::string &smime_type, const std::string &file_name,
                                const std::string &der) const {
    std::string text = routing_headers();
    text += line("Content-Type: application/pkcs7-mime; smime-type=" + smime_type + ";");
    text += line("\tname=\"" + file_name + "\"");
    text += line("Content-Transfer-Encoding: base64");
    text += line("Content-Disposition: attachment; filename=\"" + file_name + "\"");
    text += line("");
    text += base64_lines(der);
    return text;
}

} // namespace p11smime
