#include "cms/limits.h"

#include <atomic>
#include <cstring>
#include <string>
#include <vector>

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

// The header scan of scan_header_lines(), fed in pieces that may split a line anywhere.
class HeaderScanner {
  public:
    void feed(const char *data, size_t size) {
        const char *end = data + size;
        while (data < end) {
            const char *newline = static_cast<const char *>(memchr(data, '\n', end - data));
            const char *stop = newline ? newline : end;
            add_to_line(data, static_cast<size_t>(stop - data));
            if (newline)
                finish_line();
            data = newline ? newline + 1 : end;
        }
    }

    HeaderScan finish() {
        if (length_ > 0)
            finish_line();
        return scan_;
    }

  private:
    enum class Kind { name, header_like, other };

    void add_to_line(const char *data, size_t size) {
        for (size_t i = 0; i < size && kind_ == Kind::name; ++i) {
            char c = data[i];
            if (c > ' ' && c < 127 && c != ':')
                ++name_length_;
            else
                kind_ = c == ':' && name_length_ > 0 ? Kind::header_like : Kind::other;
        }
        if (size > 0)
            last_ = data[size - 1];
        has_nul_ = has_nul_ || memchr(data, '\0', size) != nullptr;
        length_ += size;
    }

    void finish_line() {
        if (length_ == 0 || (length_ == 1 && last_ == '\r'))
            in_first_block_ = false;
        bool header_like = kind_ == Kind::header_like;
        scan_.header_lines += header_like ? 1 : 0;
        if ((header_like || in_first_block_) && has_nul_)
            scan_.nul_in_header = true;
        kind_ = Kind::name;
        name_length_ = 0;
        length_ = 0;
        has_nul_ = false;
        last_ = 0;
    }

    HeaderScan scan_;
    bool in_first_block_ = true;
    Kind kind_ = Kind::name;
    size_t name_length_ = 0;
    uint64_t length_ = 0;
    bool has_nul_ = false;
    char last_ = 0;
};

void check_header_scan(const HeaderScan &scan) {
    if (scan.header_lines > max_header_lines)
        throw Error("the message has more than " + std::to_string(max_header_lines) +
                        " lines that start like a header field",
                    "this is far beyond any real message; it was rejected unparsed");
    if (scan.nul_in_header)
        throw Error("the message has a NUL byte in a header field",
                    "RFC 5322 does not allow NUL in header fields; the message is malformed");
}

std::string mebibytes(size_t bytes) { return std::to_string(bytes / (1024 * 1024)) + " MiB"; }

std::atomic<size_t> message_size_bound{default_max_message_size};

} // namespace

size_t max_message_size() { return message_size_bound.load(); }

void set_max_message_size(size_t bytes) { message_size_bound.store(bytes); }

void check_message_size(uint64_t size, const std::string &name) {
    size_t bound = max_message_size();
    if (bound != 0 && size > bound)
        throw Error(name + " is larger than the limit of " + mebibytes(bound),
                    "p11smime handles messages up to " + mebibytes(bound) +
                        "; --max-size raises the limit");
}

void check_message_size(std::string_view message) {
    check_message_size(message.size(), "the message");
}

void check_message_limits(std::string_view message) {
    check_message_size(message);
    check_header_scan(scan_header_lines(message));
}

void check_message_limits(const MessageSource &source) {
    if (source.in_memory())
        return check_message_limits(source.memory());

    check_message_size(source.size(), "input '" + source.name() + "'");
    HeaderScanner scanner;
    std::vector<char> buffer(1024 * 1024);
    uint64_t offset = 0;
    while (size_t got = source.read_at(offset, buffer.data(), buffer.size())) {
        scanner.feed(buffer.data(), got);
        offset += got;
    }
    check_header_scan(scanner.finish());
}

} // namespace p11smime
