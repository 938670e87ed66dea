// Internal to cms/: locating the signed part of a message and its exact bytes.
#pragma once

#include <string>

#include "cms/gmime_ptr.h"

namespace p11smime {

// The S/MIME signature structure found in a message.
struct SignedPart {
    bool opaque = false;        // application/pkcs7-mime rather than multipart/signed
    std::string part;           // part number, "1" for the top level
    std::string signed_content; // multipart/signed: the first part in canonical form
    std::string raw_content;    // multipart/signed: the first part as transmitted
    std::string der;            // the CMS ContentInfo
};

// Finds the first signature structure in message, depth first through multiparts. Throws
// Error when there is none or when its MIME is malformed.
SignedPart find_signed_part(const std::string &message, GMimeMessage *parsed);

} // namespace p11smime
