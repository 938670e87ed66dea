#include "error.h"

#include <openssl/err.h>

namespace p11smime {

std::string drain_openssl_errors(std::vector<unsigned long> *codes) {
    std::string reasons;
    const char *data = nullptr;
    int flags = 0;
    while (unsigned long code = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) {
        if (codes)
            codes->push_back(code);
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

OpensslError::Drained OpensslError::drain(const std::string &operation) {
    Drained drained;
    std::string reasons = drain_openssl_errors(&drained.codes);
    drained.message = reasons.empty() ? operation : operation + ": " + reasons;
    return drained;
}

OpensslError::OpensslError(const std::string &operation, std::string hint)
    : OpensslError(drain(operation), std::move(hint)) {}

OpensslError::OpensslError(Drained drained, std::string hint)
    : Error(drained.message, std::move(hint)), error_codes_(std::move(drained.codes)) {}

} // namespace p11smime
