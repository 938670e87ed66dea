// Internal to cms/: locating the signed part of a message and its exact bytes.
#pragma once

#include <cstdint>
#include <string>

#include "cms/gmime_ptr.h"
#include "cms/source.h"

namespace p11smime {

// The S/MIME signature structure found in a message.
struct SignedPart {
    bool opaque = false; // application/pkcs7-mime rather than multipart/signed
    std::string part;    // part number, "1" for the top level

    // multipart/signed: the first part as transmitted is [content_start, content_end) of the
    // input. Unless binary, its line endings become CRLF for the signature check.
    uint64_t content_start = 0;
    uint64_t content_end = 0;
    bool binary = false;
    std::string der; // the CMS ContentInfo of the detached signature

    // application/pkcs7-mime: the part whose decoded content is the CMS ContentInfo, owned by
    // the parsed message.
    GMimePart *cms_part = nullptr;
};

// Finds the first signature structure in the message that source holds and parsed is parsed
// from, depth first through multiparts. Throws Error when there is none or when its MIME is
// malformed.
SignedPart find_signed_part(const MessageSource &source, GMimeMessage *parsed);

} // namespace p11smime
