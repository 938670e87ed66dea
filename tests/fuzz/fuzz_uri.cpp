// libFuzzer target: PKCS#11 URI parsing (RFC 7512) and formatting. A URI that parses must
// format into text that parses again to the same attributes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/error.h"
#include "token/uri.h"

namespace {

bool same_attributes(const p11smime::Pkcs11Uri &a, const p11smime::Pkcs11Uri &b) {
    return a.token == b.token && a.manufacturer == b.manufacturer && a.serial == b.serial &&
           a.model == b.model && a.slot_id == b.slot_id && a.module_name == b.module_name &&
           a.module_path == b.module_path && a.object == b.object && a.id == b.id &&
           a.type == b.type && a.pin_source == b.pin_source;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::string text(reinterpret_cast<const char *>(data), size);
    p11smime::without_pin_value(text);
    p11smime::Pkcs11Uri uri;
    try {
        uri = p11smime::Pkcs11Uri::parse(text);
    } catch (const p11smime::Error &) {
        return 0;
    }
    p11smime::Pkcs11Uri again = p11smime::Pkcs11Uri::parse(uri.to_string());
    if (!same_attributes(uri, again))
        std::abort();
    return 0;
}
