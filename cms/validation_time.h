// The time a certification path is validated at, and the times a signed message states: the
// signingTime attribute and the Date header.
#pragma once

#include <ctime>
#include <optional>
#include <string>

#include <openssl/asn1.h>

// Declared as openssl/cms.h does, which this header leaves out because it must not come before
// openssl/pem.h in files that include both.
typedef struct CMS_SignerInfo_st CMS_SignerInfo;

namespace p11smime {

// Validation time that `verify --at-time` selects.
struct AtTime {
    enum class Kind { now, signing, given };
    Kind kind = Kind::now;
    std::time_t given = 0; // seconds since the epoch, for Kind::given
};

// Parses "now", "signing" or a UTC date: "YYYY-MM-DD", "YYYY-MM-DDTHH:MM:SSZ" or
// "YYYY-MM-DD HH:MM:SS" (a trailing "Z" is optional). Throws Error naming the text.
AtTime parse_at_time(const std::string &text);

// Returns the signingTime attribute of signer, or nothing when it is absent or malformed.
std::optional<std::time_t> signing_time_of(CMS_SignerInfo *signer);

// Converts an ASN1_TIME to seconds since the epoch; nothing when the value is invalid.
std::optional<std::time_t> to_time_t(const ASN1_TIME *time);

// Formats seconds since the epoch as ISO 8601 in UTC, such as "2026-01-26T14:40:10Z".
std::string iso8601(std::time_t time);

// Parses an RFC 5322 Date header value with GMime; nothing when it cannot be read.
std::optional<std::time_t> parse_date_header(const std::string &value);

} // namespace p11smime
