#include "cms/limits.h"

#include <string>

#include "common/error.h"

namespace p11smime {
namespace {

// Returns true when line starts with an RFC 5322 field name (printable ASCII other than
// the colon) directly followed by a colon.
bool starts_like_header_field(std::string_view line) {
    size_t i = 0;
    while (i < line.size() && line[i] > ' ' && line[i] < 127 && line[i] != ':')
        ++i;
    return i > 0 && i < line.size() && line[i] == ':';
}

size_t count_header_lines(std::string_view message) {
    size_t count = 0;
    for (size_t start = 0; start < message.size();) {
        size_t end = message.find('\n', start);
        if (end == std::string_view::npos)
            end = message.size();
        if (starts_like_header_field(message.substr(start, end - start)))
            ++count;
        start = end + 1;
    }
    return count;
}

std::string mebibytes(size_t bytes) { return std::to_string(bytes / (1024 * 1024)) + " MiB"; }

} // namespace

void check_message_limits(std::string_view message) {
    if (message.size() > max_message_size)
        throw Error("the message is " + std::to_string(message.size()) +
                        " bytes long, more than the limit of " + mebibytes(max_message_size),
                    "p11smime handles messages up to " + mebibytes(max_message_size));

    if (count_header_lines(message) > max_header_lines)
        throw Error("the message has more than " + std::to_string(max_header_lines) +
                        " lines that start like a header field",
                    "this is far beyond any real message; it was rejected unparsed");
}

} // namespace p11smime
