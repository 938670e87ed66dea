#include "cms/signed_part.h"

#include <strings.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <tuple>

#include "cms/mime.h"
#include "common/error.h"

namespace p11smime {
namespace {

struct Found {
    GMimeObject *object = nullptr;
    bool opaque = false;
    std::string part;
};

bool has_p7m_name(GMimeObject *object) {
    if (!GMIME_IS_PART(object))
        return false;
    const char *name = g_mime_part_get_filename(GMIME_PART(object));
    size_t length = name ? strlen(name) : 0;
    return length >= 4 && strcasecmp(name + length - 4, ".p7m") == 0;
}

// Returns true for application/pkcs7-mime and application/x-pkcs7-mime whose smime-type is
// signed-data or absent, and for a part named *.p7m; the CMS content type decides later.
bool is_opaque_candidate(GMimeObject *object) {
    if (GMIME_IS_APPLICATION_PKCS7_MIME(object)) {
        auto type = g_mime_application_pkcs7_mime_get_smime_type(
            GMIME_APPLICATION_PKCS7_MIME(object));
        return type == GMIME_SECURE_MIME_TYPE_SIGNED_DATA ||
               type == GMIME_SECURE_MIME_TYPE_UNKNOWN;
    }
    return has_p7m_name(object);
}

Found find_structure(GMimeObject *object, const std::string &part) {
    if (GMIME_IS_MULTIPART_SIGNED(object))
        return {object, false, part};
    if (is_opaque_candidate(object))
        return {object, true, part};
    if (!GMIME_IS_MULTIPART(object))
        return {};
    GMimeMultipart *multipart = GMIME_MULTIPART(object);
    for (int i = 0; i < g_mime_multipart_get_count(multipart); ++i) {
        std::string child = (part.empty() ? "" : part + ".") + std::to_string(i + 1);
        Found found = find_structure(g_mime_multipart_get_part(multipart, i), child);
        if (found.object)
            return found;
    }
    return {};
}

// Returns the header offsets of object in the input: the first field and the last one.
std::pair<size_t, size_t> header_span(GMimeObject *object) {
    GMimeHeaderList *list = g_mime_object_get_header_list(object);
    size_t first = SIZE_MAX;
    size_t last = 0;
    for (int i = 0; list && i < g_mime_header_list_get_count(list); ++i) {
        gint64 offset = g_mime_header_get_offset(g_mime_header_list_get_header_at(list, i));
        if (offset < 0)
            continue;
        first = std::min(first, static_cast<size_t>(offset));
        last = std::max(last, static_cast<size_t>(offset));
    }
    if (first == SIZE_MAX)
        throw Error("cannot locate the multipart/signed headers in the input");
    return {first, last};
}

// Reads a message source line by line, keeping the first bytes of each line, which is all a
// delimiter check needs, so that lines of any length cost no memory.
class LineScanner {
  public:
    LineScanner(const MessageSource &source, uint64_t start)
        : source_(source), next_(start), buffer_start_(start) {}

    // Reads the next line: its offset, its length without the LF, and up to max_kept of its
    // bytes. Returns false at the end of the source.
    bool next(uint64_t &start, uint64_t &length, std::string &kept) {
        if (next_ >= source_.size())
            return false;
        start = next_;
        length = 0;
        kept.clear();
        for (;;) {
            if (begin_ == end_ && !refill())
                return true; // the last line has no LF
            const char *data = buffer_.data() + begin_;
            size_t available = end_ - begin_;
            auto *newline = static_cast<const char *>(std::memchr(data, '\n', available));
            size_t taken = newline ? static_cast<size_t>(newline - data) : available;
            if (kept.size() < max_kept)
                kept.append(data, std::min(taken, max_kept - kept.size()));
            length += taken;
            begin_ += taken + (newline ? 1 : 0);
            next_ = start + length + (newline ? 1 : 0);
            if (newline)
                return true;
        }
    }

    // Maximum length of a delimiter line that is kept whole: "--", a boundary of at most 70
    // characters (RFC 2046 section 5.1.1), "--" and generous transport padding.
    static constexpr size_t max_kept = 1024;

  private:
    // Reads the bytes after the buffer, which is always used up first.
    bool refill() {
        buffer_.resize(stream_chunk_size);
        buffer_start_ += end_;
        end_ = source_.read_at(buffer_start_, buffer_.data(), buffer_.size());
        begin_ = 0;
        return end_ > 0;
    }

    const MessageSource &source_;
    uint64_t next_;         // where the next line starts
    uint64_t buffer_start_; // the offset of buffer_[0] in the source
    std::vector<char> buffer_;
    size_t begin_ = 0;
    size_t end_ = 0;
};

// Returns the start of the line at or after from that is the delimiter "--boundary",
// optionally followed by "--" (close) and transport padding (RFC 2046 section 5.1.1).
uint64_t find_delimiter(const MessageSource &source, const std::string &boundary,
                        uint64_t from, bool &is_close) {
    std::string delimiter = "--" + boundary;
    LineScanner lines(source, from);
    uint64_t start = 0;
    uint64_t length = 0;
    std::string line;
    while (lines.next(start, length, line)) {
        if (length > LineScanner::max_kept || line.compare(0, delimiter.size(), delimiter) != 0)
            continue;
        size_t rest = delimiter.size();
        is_close = line.compare(rest, 2, "--") == 0;
        if (is_close)
            rest += 2;
        if (line.find_first_not_of(" \t\r", rest) == std::string::npos)
            return start;
    }
    return UINT64_MAX;
}

// Returns the first part of a multipart/signed as offsets into the source. The line break
// before a delimiter belongs to the delimiter, so it is not part of the signed content.
std::pair<uint64_t, uint64_t> first_part_range(const MessageSource &source,
                                               GMimeObject *object) {
    const char *boundary = g_mime_object_get_content_type_parameter(object, "boundary");
    if (!boundary || !*boundary)
        throw Error("multipart/signed has no boundary parameter");

    uint64_t body = find_body_offset(source, header_span(object).second);
    if (body == UINT64_MAX)
        throw Error("multipart/signed has no body");
    bool is_close = false;
    uint64_t opening = find_delimiter(source, boundary, body, is_close);
    if (opening == UINT64_MAX || is_close)
        throw Error("multipart/signed has no first part");
    LineScanner lines(source, opening);
    uint64_t line_start = 0;
    uint64_t line_length = 0;
    std::string line;
    lines.next(line_start, line_length, line);
    uint64_t start = opening + line_length + 1;
    if (start > source.size())
        throw Error("multipart/signed ends after its first delimiter");

    uint64_t next = find_delimiter(source, boundary, start, is_close);
    if (next == UINT64_MAX || next == start)
        throw Error("multipart/signed has no second delimiter");
    uint64_t end = next - 1;
    if (end > start && source.read_range(end - 1, 1) == "\r")
        --end;
    return {start, end};
}

bool is_binary_part(GMimeObject *object) {
    return GMIME_IS_PART(object) &&
           g_mime_part_get_content_encoding(GMIME_PART(object)) == GMIME_CONTENT_ENCODING_BINARY;
}

// Rejects a multipart/signed whose protocol is not S/MIME, such as a PGP/MIME signature.
void check_protocol(GMimeObject *object) {
    const char *protocol = g_mime_object_get_content_type_parameter(object, "protocol");
    if (protocol && (strcasecmp(protocol, "application/pkcs7-signature") == 0 ||
                     strcasecmp(protocol, "application/x-pkcs7-signature") == 0))
        return;
    throw Error(std::string("multipart/signed has protocol '") + (protocol ? protocol : "") +
                    "', which is not S/MIME",
                "S/MIME signatures use protocol=\"application/pkcs7-signature\"");
}

// RFC 8551 section 3.5.3 requires application/pkcs7-signature for the second part; the
// x-pkcs7 form is what older clients write. Anything else is not an S/MIME signature, and
// decoding it as CMS would only produce a confusing error.
void check_signature_type(GMimeObject *signature) {
    GMimeContentType *type = g_mime_object_get_content_type(signature);
    if (g_mime_content_type_is_type(type, "application", "pkcs7-signature") ||
        g_mime_content_type_is_type(type, "application", "x-pkcs7-signature"))
        return;
    char *text = g_mime_content_type_get_mime_type(type);
    std::string name = text ? text : "no content type";
    g_free(text);
    throw Error("the second part of multipart/signed is " + name +
                    " instead of application/pkcs7-signature",
                "the message is not S/MIME signed, or its signature part is mislabelled");
}

SignedPart read_multipart_signed(const MessageSource &source, const Found &found) {
    check_protocol(found.object);
    GMimeMultipart *multipart = GMIME_MULTIPART(found.object);
    if (g_mime_multipart_get_count(multipart) != 2)
        throw Error("multipart/signed has " +
                    std::to_string(g_mime_multipart_get_count(multipart)) +
                    " parts instead of 2");
    GMimeObject *content = g_mime_multipart_get_part(multipart, 0);
    GMimeObject *signature = g_mime_multipart_get_part(multipart, 1);
    if (!GMIME_IS_PART(signature))
        throw Error("the signature part of multipart/signed is not a leaf part");
    check_signature_type(signature);

    SignedPart result;
    result.part = found.part;
    std::tie(result.content_start, result.content_end) = first_part_range(source, found.object);
    result.binary = is_binary_part(content);
    result.der = decoded_content(GMIME_PART(signature));
    return result;
}

} // namespace

SignedPart find_signed_part(const MessageSource &source, GMimeMessage *parsed) {
    GMimeObject *top = parsed ? g_mime_message_get_mime_part(parsed) : nullptr;
    Found found = top ? find_structure(top, "") : Found{};
    if (!found.object)
        throw Error("no S/MIME signature found in the message",
                    "expected multipart/signed or application/pkcs7-mime; smime-type=signed-data");

    if (!found.opaque)
        return read_multipart_signed(source, found);

    SignedPart result;
    result.opaque = true;
    result.part = found.part;
    result.cms_part = GMIME_PART(found.object);
    return result;
}

} // namespace p11smime
