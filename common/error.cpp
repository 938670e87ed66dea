#include "error.h"

#include <openssl/err.h>

namespace p11smime {

std::string drain_openssl_errors() {
    std::string reasons;
    const char *data = nullptr;
    int flags = 0;
    while (unsigned long code = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) {
        char text[256];
        ERR_error_string_n(code, text, sizeof text);
        if (!reasons.empty())
            reasons += "; ";
        reasons += text;
        if ((flags & ERR_TXT_STRING) && data && *data)
            reasons += std::string(" (") + data + ")";
    }
    return reasons;
}

void clear_openssl_errors() noexcept { ERR_clear_error(); }

static std::string with_reasons(const std::string &operation) {
    std::string reasons = drain_openssl_errors();
    return reasons.empty() ? operation : operation + ": " + reasons;
}

OpensslError::OpensslError(const std::string &operation, std::string hint)
    : Error(with_reasons(operation), std::move(hint)) {}

} // namespace p11smime
