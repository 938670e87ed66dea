// Internal to cms/: assembly of the outgoing S/MIME message around CMS output.
#pragma once

#include <string>

#include "cms/mime.h"

namespace p11smime {

// Writes a message whose routing headers are those of the input and whose MIME entity is an
// S/MIME structure, using the input's line endings.
class SmimeWriter {
  public:
    explicit SmimeWriter(const SplitMessage &input) : input_(input) {}

    // multipart/signed (RFC 8551 section 3.5.3): canonical_entity is the CRLF entity that was
    // signed, and signature the DER of the detached SignedData.
    std::string multipart_signed(const std::string &micalg, const std::string &canonical_entity,
                                 const std::string &signature) const;

    // application/pkcs7-mime with the given smime-type (RFC 8551 section 3.2.2) and file name,
    // carrying der in base64.
    std::string opaque(const std::string &smime_type, const std::string &file_name,
                       const std::string &der) const;

  private:
    std::string routing_headers() const;
    std::string line(const std::string &text) const;
    std::string base64_lines(const std::string &der) const;

    const SplitMessage &input_;
};

// Returns a new random multipart boundary.
std::string make_boundary();

} // namespace p11smime
