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

struct HeaderScan {
    size_t header_lines = 0;
    bool nul_in_header = false;
};

// Counts the lines that start like a header field, and looks for NUL bytes in them and in
// the message's own header block (every line before the first empty one).
HeaderScan scan_header_lines(std::string_view message) {
    HeaderScan scan;
    bool in_first_block = true;
    for (size_t start = 0; start < message.size();) {
        size_t end = message.find('\n', start);
        if (end == std::string_view::npos)
            end = message.size();
        std::string_view line = message.substr(start, end - start);
        if (line.empty() || line == "\r")
            in_first_block = false;
        bool header_like = starts_like_header_field(line);
        scan.header_lines += header_like ? 1 : 0;
        if ((header_like || in_first_block) && line.find('\0') != std::string_view::npos)
            scan.nul_in_header = true;
        start = end + 1;
    }
    return scan;
}

std::string mebibytes(size_t bytes) { return std::to_string(bytes / (1024 * 1024)) + " MiB"; }

} // namespace

void check_message_size(std::string_view message) {
    if (message.size() > max_message_size)
        throw Error("the message is " + std::to_string(message.size()) +
                        " bytes long, more than the limit of " + mebibytes(max_message_size),
                    "p11smime handles messages up to " + mebibytes(max_message_size));
}

void check_message_limits(std::string_view message) {
    check_message_size(message);

    HeaderScan scan = scan_header_lines(message);
    if (scan.header_lines > max_header_lines)
        throw Error("the message has more than " + std::to_string(max_header_lines) +
                        " lines that start like a header field",
                    "this is far beyond any real message; it was rejected unparsed");
    if (scan.nul_in_header)
        throw Error("the message has a NUL byte in a header field",
                    "RFC 5322 does not allow NUL in header fields; the message is malformed");
}

} // namespace p11smime
