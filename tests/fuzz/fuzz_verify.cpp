// libFuzzer target: MIME parsing and S/MIME signature verification of an untrusted message.
#include <cstddef>
#include <cstdint>
#include <string>

#include "cms/verify.h"
#include "common/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    p11smime::VerifyOptions options;
    options.system_ca = false; // loading the system store on every input would be the cost
    try {
        p11smime::verify_message(std::string(reinterpret_cast<const char *>(data), size),
                                 options);
    } catch (const p11smime::Error &) {
        // A rejected input is the expected outcome for most inputs.
    }
    return 0;
}
