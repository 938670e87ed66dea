#include "cms/smime_output.h"

#include <strings.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common/error.h"

namespace p11smime {

std::string cms_der(CMS_ContentInfo *cms) {
    unsigned char *der = nullptr;
    int length = i2d_CMS_ContentInfo(cms, &der);
    if (length <= 0)
        throw OpensslError("cannot encode the CMS structure");
    std::string bytes(reinterpret_cast<char *>(der), static_cast<size_t>(length));
    OPENSSL_free(der);
    return bytes;
}

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

SmimeWriter::SmimeWriter(const MessageHeaders &input, BIO *out) : input_(input), out_(out) {}

SmimeWriter::~SmimeWriter() {
    if (base64_)
        BIO_pop(base64_.get()); // the sink BIO belongs to base64_sink_
}

void SmimeWriter::write(const std::string &text) { write_bio(out_, text, "the output"); }

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

void SmimeWriter::begin_multipart_signed(const std::string &micalg) {
    boundary_ = make_boundary();
    std::string text = routing_headers();
    text += line("Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";");
    text += line("\tmicalg=" + micalg + "; boundary=\"" + boundary_ + "\"");
    text += line("");
    text += line("This is a cryptographically signed message in MIME format.");
    text += line("");
    text += line("--" + boundary_);
    write(text);
}

void SmimeWriter::write_entity(const char *data, size_t size) {
    if (input_.crlf) {
        write_bio(out_, data, size, "the output");
        return;
    }
    converted_.clear();
    lf_.convert(data, size, converted_);
    write(converted_);
}

void SmimeWriter::end_multipart_signed(const std::string &signature) {
    converted_.clear();
    lf_.finish(converted_);
    std::string text = converted_;
    text += line("");
    text += line("--" + boundary_);
    text += line("Content-Type: application/pkcs7-signature; name=\"smime.p7s\"");
    text += line("Content-Transfer-Encoding: base64");
    text += line("Content-Disposition: attachment; filename=\"smime.p7s\"");
    text += line("Content-Description: S/MIME Cryptographic Signature");
    text += line("");
    write(text);
    begin_base64();
    write_bio(base64_.get(), signature, "the signature");
    end_base64();
    write(line("--" + boundary_ + "--"));
}

void SmimeWriter::begin_opaque(const std::string &smime_type, const std::string &file_name) {
    std::string text = routing_headers();
    text += line("Content-Type: application/pkcs7-mime; smime-type=" + smime_type + ";");
    text += line("\tname=\"" + file_name + "\"");
    text += line("Content-Transfer-Encoding: base64");
    text += line("Content-Disposition: attachment; filename=\"" + file_name + "\"");
    text += line("");
    write(text);
    begin_base64();
}

void SmimeWriter::end_opaque() { end_base64(); }

void SmimeWriter::rethrow_output_error() const {
    if (base64_sink_)
        base64_sink_->rethrow();
}

void SmimeWriter::opaque(const std::string &smime_type, const std::string &file_name,
                         const std::string &der) {
    begin_opaque(smime_type, file_name);
    write_bio(base64_.get(), der, "the CMS structure");
    end_opaque();
}

// BIO_f_base64 writes lines of 64 characters, under the 76 of RFC 2045 section 6.8, each
// ended by LF, which becomes CRLF when the input uses CRLF.
void SmimeWriter::begin_base64() {
    base64_sink_ = std::make_unique<SinkBio>([this](const char *data, size_t size) {
        if (!input_.crlf) {
            write_bio(out_, data, size, "the output");
            return;
        }
        std::string lines;
        CrlfConverter().convert(data, size, lines);
        write(lines);
    });
    base64_.reset(BIO_new(BIO_f_base64()));
    if (!base64_)
        throw OpensslError("cannot encode base64");
    BIO_push(base64_.get(), base64_sink_->get());
}

void SmimeWriter::end_base64() {
    if (BIO_flush(base64_.get()) != 1) {
        base64_sink_->rethrow();
        throw OpensslError("cannot write the output");
    }
    BIO_pop(base64_.get());
    base64_.reset();
    base64_sink_.reset();
}

} // namespace p11smime
