// libFuzzer target: the milter's configuration parser. Any text either parses or raises
// ConfigError (an Error); it never crashes, hangs or throws anything else.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/error.h"
#include "milter/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::string_view text(reinterpret_cast<const char *>(data), size);
    try {
        p11smime::milter::parse_config(text, "fuzz.conf");
    } catch (const p11smime::Error &) {
    }
    return 0;
}
