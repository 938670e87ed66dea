// RFC 7512 PKCS#11 URIs, parsed and formatted by p11-kit.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace p11smime {

// A PKCS#11 URI (RFC 7512) split into the attributes p11smime uses. An empty optional means
// the URI does not constrain that attribute.
struct Pkcs11Uri {
    // Token attributes from CK_TOKEN_INFO.
    std::optional<std::string> token;
    std::optional<std::string> manufacturer;
    std::optional<std::string> serial;
    std::optional<std::string> model;

    // Slot and module attributes.
    std::optional<unsigned long> slot_id;
    std::optional<std::string> module_name;
    std::optional<std::string> module_path;

    // Object attributes: CKA_LABEL, CKA_ID and CKA_CLASS ("cert", "private", "public",
    // "secret-key" or "data").
    std::optional<std::string> object;
    std::optional<std::vector<unsigned char>> id;
    std::optional<std::string> type;

    // PIN query attributes.
    std::optional<std::string> pin_source;
    std::optional<std::string> pin_value;

    // Parses text that starts with "pkcs11:". Throws Error naming the text and the fault.
    static Pkcs11Uri parse(const std::string &text);

    // Formats the URI with percent-encoding where RFC 7512 requires it. pin-value is left
    // out, so the text is safe for messages and logs.
    std::string to_string() const;
};

// Returns true when text looks like a PKCS#11 URI rather than a file name.
bool is_pkcs11_uri(const std::string &text);

// Returns text with the value of each pin-value attribute replaced by "***", for messages
// about a URI that may not parse.
std::string without_pin_value(const std::string &text);

} // namespace p11smime
