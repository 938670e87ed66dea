// Internal to cms/: assembly of the outgoing S/MIME message around CMS output.
#pragma once

#include <string>

#include <openssl/cms.h>

#include "cms/mime.h"
#include "cms/stream.h"

namespace p11smime {

// Writes a message whose routing headers are those of the input and whose MIME entity is an
// S/MIME structure, using the input's line endings, to a BIO as it is produced.
class SmimeWriter {
  public:
    SmimeWriter(const MessageHeaders &input, BIO *out);
    ~SmimeWriter();

    // multipart/signed (RFC 8551 section 3.5.3), in three steps: the headers up to the first
    // delimiter, the canonical (CRLF) entity that is signed, in chunks, and the signature part
    // with the DER of the detached SignedData.
    void begin_multipart_signed(const std::string &micalg);
    void write_entity(const char *data, size_t size);
    void end_multipart_signed(const std::string &signature);

    // application/pkcs7-mime with the given smime-type (RFC 8551 section 3.2.2) and file name:
    // the headers, then a BIO into which the CMS structure is written and encoded in base64,
    // then end_opaque() to flush it.
    void begin_opaque(const std::string &smime_type, const std::string &file_name);
    BIO *base64_body() const { return base64_.get(); }
    void end_opaque();

    // Throws the error that made a write to the output fail inside the base64 BIO, if any,
    // so that the caller reports it instead of OpenSSL's generic write failure.
    void rethrow_output_error() const;

    // The same in one step, for a DER structure held in memory.
    void opaque(const std::string &smime_type, const std::string &file_name,
                const std::string &der);

  private:
    void begin_base64();
    void end_base64();
    void write(const std::string &text);
    std::string line(const std::string &text) const;
    std::string routing_headers() const;

    const MessageHeaders &input_;
    BIO *out_;
    std::string boundary_;
    LfConverter lf_;
    std::string converted_;
    std::unique_ptr<SinkBio> base64_sink_;
    BioPtr base64_;
};

// Returns the DER encoding of cms. Throws OpensslError when it cannot be encoded.
std::string cms_der(CMS_ContentInfo *cms);

// Returns a new random multipart boundary.
std::string make_boundary();

} // namespace p11smime
