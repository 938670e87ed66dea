#include "cms/mime.h"

#include <algorithm>
#include <mutex>
#include <strings.h>

#include "cms/gmime_ptr.h"
#include "cms/limits.h"
#include "common/error.h"

namespace p11smime {

// RFC 5322 section 2.1.1: a line is at most 998 characters before its CRLF.
constexpr size_t max_line_length = 998;

void ensure_gmime_initialised() {
    static std::once_flag once;
    std::call_once(once, [] { g_mime_init(); });
}

namespace {

struct ParserOptionsDeleter {
    void operator()(GMimeParserOptions *options) const noexcept {
        g_mime_parser_options_free(options);
    }
};

using ParserOptionsPtr = std::unique_ptr<GMimeParserOptions, ParserOptionsDeleter>;

// Records GMime's report that it stopped descending into nested message/rfc822 parts.
void note_nesting_overflow(gint64, GMimeParserWarning warning, const gchar *, gpointer flag) {
    if (warning == GMIME_CRIT_NESTING_OVERFLOW)
        *static_cast<bool *>(flag) = true;
}

// Returns the nesting depth of object: 1 for a leaf part. Stops counting past limit, so a
// hostile tree costs no more than limit levels of recursion.
int mime_depth(GMimeObject *object, int limit) {
    if (limit <= 0)
        return 1;
    int deepest = 0;
    if (GMIME_IS_MULTIPART(object)) {
        GMimeMultipart *multipart = GMIME_MULTIPART(object);
        for (int i = 0; i < g_mime_multipart_get_count(multipart) && deepest < limit; ++i)
            deepest = std::max(deepest,
                               mime_depth(g_mime_multipart_get_part(multipart, i), limit - 1));
    } else if (GMIME_IS_MESSAGE_PART(object)) {
        GMimeMessage *inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(object));
        GMimeObject *body = inner ? g_mime_message_get_mime_part(inner) : nullptr;
        if (body)
            deepest = mime_depth(body, limit - 1);
    }
    return deepest + 1;
}

void check_mime_depth(GMimeMessage *message, bool overflow) {
    GMimeObject *body = message ? g_mime_message_get_mime_part(message) : nullptr;
    if (overflow || (body && mime_depth(body, max_mime_depth) > max_mime_depth))
        throw Error("the message nests MIME parts more than " + std::to_string(max_mime_depth) +
                        " levels deep",
                    "p11smime rejects deeper nesting, which no mail client produces");
}

} // namespace

GPtr<GMimeMessage> parse_message(const std::string &message) {
    check_message_limits(message);
    ensure_gmime_initialised();
    GPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(
        const_cast<char *>(message.data()), message.size()));
    GPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));

    bool overflow = false;
    ParserOptionsPtr options(g_mime_parser_options_new());
    g_mime_parser_options_set_warning_callback(options.get(), note_nesting_overflow, &overflow);
    GPtr<GMimeMessage> parsed(g_mime_parser_construct_message(parser.get(), options.get()));
    check_mime_depth(parsed.get(), overflow);
    return parsed;
}

GPtr<GMimeMessage> parse_message(const MessageSource &source) {
    check_message_limits(source);
    ensure_gmime_initialised();
    GPtr<GMimeStream> stream(new_gmime_stream(source));
    GPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));

    bool overflow = false;
    ParserOptionsPtr options(g_mime_parser_options_new());
    g_mime_parser_options_set_warning_callback(options.get(), note_nesting_overflow, &overflow);
    GPtr<GMimeMessage> parsed(g_mime_parser_construct_message(parser.get(), options.get()));
    check_mime_depth(parsed.get(), overflow);
    return parsed;
}

std::string write_object_crlf(GMimeObject *object) {
    FormatOptionsPtr options(g_mime_format_options_new());
    g_mime_format_options_set_newline_format(options.get(), GMIME_NEWLINE_FORMAT_DOS);
    GPtr<GMimeStream> stream(g_mime_stream_mem_new());
    if (g_mime_object_write_to_stream(object, options.get(), stream.get()) < 0)
        throw Error("cannot serialise a MIME part");
    GByteArray *bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(stream.get()));
    return std::string(reinterpret_cast<const char *>(bytes->data), bytes->len);
}

std::string decoded_content(GMimePart *part) {
    GMimeDataWrapper *content = g_mime_part_get_content(part);
    if (!content)
        return {};
    GPtr<GMimeStream> stream(g_mime_stream_mem_new());
    if (g_mime_data_wrapper_write_to_stream(content, stream.get()) < 0)
        throw Error("cannot decode the content of a MIME part");
    GByteArray *bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(stream.get()));
    return std::string(reinterpret_cast<const char *>(bytes->data), bytes->len);
}

std::unique_ptr<Reader> decoded_content_reader(GMimePart *part) {
    GMimeDataWrapper *content = g_mime_part_get_content(part);
    if (!content)
        return std::make_unique<StringReader>(std::string());
    GMimeStream *encoded = g_mime_data_wrapper_get_stream(content);
    g_mime_stream_reset(encoded);
    GPtr<GMimeStream> filtered(g_mime_stream_filter_new(encoded));
    switch (GMimeContentEncoding encoding = g_mime_data_wrapper_get_encoding(content)) {
    case GMIME_CONTENT_ENCODING_BASE64:
    case GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE:
    case GMIME_CONTENT_ENCODING_UUENCODE: {
        GPtr<GMimeFilter> decoder(g_mime_filter_basic_new(encoding, FALSE));
        g_mime_stream_filter_add(GMIME_STREAM_FILTER(filtered.get()), decoder.get());
        break;
    }
    default:
        break;
    }
    return std::make_unique<GMimeStreamReader>(filtered.get());
}

namespace {

struct HeaderPosition {
    std::string name;
    size_t offset;
};

void collect_positions(GMimeHeaderList *list, std::vector<HeaderPosition> &positions) {
    if (!list)
        return;
    for (int i = 0; i < g_mime_header_list_get_count(list); ++i) {
        GMimeHeader *header = g_mime_header_list_get_header_at(list, i);
        gint64 offset = g_mime_header_get_offset(header);
        if (offset >= 0)
            positions.push_back({g_mime_header_get_name(header), static_cast<size_t>(offset)});
    }
}

} // namespace

// A header value cannot contain an empty line, so the first one after the last field's start
// ends the block.
size_t find_body_offset(const std::string &message, size_t last_header) {
    for (size_t i = message.find('\n', last_header); i != std::string::npos;
         i = message.find('\n', i + 1)) {
        if (i + 1 < message.size() && message[i + 1] == '\n')
            return i + 2;
        if (i + 2 < message.size() && message[i + 1] == '\r' && message[i + 2] == '\n')
            return i + 3;
    }
    return std::string::npos;
}

uint64_t find_body_offset(const MessageSource &source, uint64_t last_header) {
    std::string window;
    while (last_header + window.size() < source.size()) {
        window += source.read_range(last_header + window.size(), 64 * 1024);
        size_t body = find_body_offset(window, 0);
        if (body != std::string::npos)
            return last_header + body;
        if (window.size() > max_header_block_size)
            throw Error("a header block of '" + source.name() + "' is over " +
                        std::to_string(max_header_block_size / (1024 * 1024)) + " MiB");
    }
    return UINT64_MAX;
}

namespace {

bool is_content_header(const std::string &name) {
    return strncasecmp(name.c_str(), "Content-", 8) == 0;
}

std::vector<std::string> mailboxes(GMimeMessage *message) {
    std::vector<std::string> result;
    InternetAddressList *from = g_mime_message_get_from(message);
    for (int i = 0; from && i < internet_address_list_length(from); ++i) {
        InternetAddress *address = internet_address_list_get_address(from, i);
        if (INTERNET_ADDRESS_IS_MAILBOX(address))
            result.push_back(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(address)));
    }
    return result;
}

} // namespace

SplitMessage split_message(const std::string &message) {
    GPtr<GMimeMessage> parsed = parse_message(message);
    if (!parsed)
        throw Error("the input is not a mail message: no header block found",
                    "give an RFC 5322 message or a MIME entity with its headers");

    std::vector<HeaderPosition> positions;
    collect_positions(g_mime_object_get_header_list(GMIME_OBJECT(parsed.get())), positions);
    if (GMimeObject *part = g_mime_message_get_mime_part(parsed.get()))
        collect_positions(g_mime_object_get_header_list(part), positions);
    std::sort(positions.begin(), positions.end(),
              [](const auto &a, const auto &b) { return a.offset < b.offset; });
    positions.erase(std::unique(positions.begin(), positions.end(),
                                [](const auto &a, const auto &b) { return a.offset == b.offset; }),
                    positions.end());
    if (positions.empty())
        throw Error("the input has no header fields",
                    "give an RFC 5322 message or a MIME entity with its headers");

    SplitMessage split;
    size_t body_start = find_body_offset(message, positions.back().offset);
    size_t header_end = message.size();
    if (body_start == std::string::npos)
        body_start = message.size(); // headers only: the body is empty
    else
        header_end = message.rfind('\n', body_start - 2) + 1;
    for (size_t i = 0; i < positions.size(); ++i) {
        size_t end = i + 1 < positions.size() ? positions[i + 1].offset : header_end;
        if (end - positions[i].offset > max_header_field_size)
            throw Error("header field " + positions[i].name + " is longer than " +
                            std::to_string(max_header_field_size) + " bytes",
                        "p11smime rejects header fields over that size");
        RawHeader header{positions[i].name,
                         message.substr(positions[i].offset, end - positions[i].offset)};
        (is_content_header(header.name) ? split.content_headers : split.routing_headers)
            .push_back(std::move(header));
    }
    split.body = message.substr(body_start);
    size_t first_newline = message.find('\n');
    split.crlf = first_newline != std::string::npos && first_newline > 0 &&
                 message[first_newline - 1] == '\r';
    split.from_addresses = mailboxes(parsed.get());
    split.from_address = split.from_addresses.empty() ? "" : split.from_addresses.front();
    for (const auto &header : split.routing_headers)
        split.from_header_count += strcasecmp(header.name.c_str(), "From") == 0;
    return split;
}

std::string to_crlf(std::string_view text) {
    std::string result;
    result.reserve(text.size() + text.size() / 32);
    for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\n' && (i == 0 || text[i - 1] != '\r'))
            result += '\r';
        result += text[i];
    }
    return result;
}

std::string to_lf(std::string_view text) {
    std::string result;
    result.reserve(text.size());
    for (size_t i = 0; i < text.size(); ++i)
        if (!(text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n'))
            result += text[i];
    return result;
}

bool needs_transfer_encoding(std::string_view text) {
    size_t line_start = 0;
    for (size_t i = 0; i < text.size(); ++i) {
        auto byte = static_cast<unsigned char>(text[i]);
        if (byte == 0 || byte > 127)
            return true;
        if (byte != '\n')
            continue;
        size_t length = i - line_start - (i > line_start && text[i - 1] == '\r' ? 1 : 0);
        if (length > max_line_length)
            return true;
        line_start = i + 1;
    }
    return text.size() - line_start > max_line_length;
}

namespace {

// Returns the end of the first blank line in text at or after from, which ends a header
// block, or npos.
size_t blank_line_end(const std::string &text, size_t from) {
    if (from == 0 && (text.rfind("\n", 0) == 0 || text.rfind("\r\n", 0) == 0))
        return text[0] == '\n' ? 1 : 2;
    for (size_t i = text.find('\n', from); i != std::string::npos; i = text.find('\n', i + 1)) {
        if (i + 1 < text.size() && text[i + 1] == '\n')
            return i + 2;
        if (i + 2 < text.size() && text[i + 1] == '\r' && text[i + 2] == '\n')
            return i + 3;
    }
    return std::string::npos;
}

} // namespace

size_t header_block_end(const std::string &text) { return blank_line_end(text, 0); }

MessageHeaders read_headers(const MessageSource &source) {
    std::string head;
    size_t end = std::string::npos;
    for (uint64_t offset = 0; end == std::string::npos && offset < source.size();) {
        size_t searched = head.size() > 2 ? head.size() - 2 : 0;
        head += source.read_range(offset, 64 * 1024);
        offset = head.size();
        end = blank_line_end(head, searched);
        if (end == std::string::npos && head.size() > max_header_block_size)
            throw Error("the header block of '" + source.name() + "' is over " +
                        std::to_string(max_header_block_size / (1024 * 1024)) + " MiB",
                    "check that the input is a mail message");
    }
    if (end != std::string::npos)
        head.resize(end);

    SplitMessage split = split_message(head);
    MessageHeaders headers = std::move(split);
    headers.body_offset = head.size();
    return headers;
}

bool declares_8bit(const MessageHeaders &split) {
    for (const auto &header : split.content_headers) {
        if (strcasecmp(header.name.c_str(), "Content-Transfer-Encoding") != 0)
            continue;
        std::string value = header.raw.substr(header.raw.find(':') + 1);
        for (auto &c : value)
            c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
        return value.find("8bit") != std::string::npos ||
               value.find("binary") != std::string::npos;
    }
    return false;
}

// Gives every leaf part, binary-labelled ones included, a 7-bit transfer encoding: GMime picks
// quoted-printable or base64 from the part's content.
void encode_leaves_7bit(GMimeObject *object) {
    if (GMIME_IS_MULTIPART(object)) {
        GMimeMultipart *multipart = GMIME_MULTIPART(object);
        for (int i = 0; i < g_mime_multipart_get_count(multipart); ++i)
            encode_leaves_7bit(g_mime_multipart_get_part(multipart, i));
        return;
    }
    if (GMIME_IS_MESSAGE_PART(object)) {
        GMimeMessage *message = g_mime_message_part_get_message(GMIME_MESSAGE_PART(object));
        if (message && g_mime_message_get_mime_part(message))
            encode_leaves_7bit(g_mime_message_get_mime_part(message));
        return;
    }
    if (!GMIME_IS_PART(object))
        return;
    GMimePart *part = GMIME_PART(object);
    GMimeContentEncoding encoding = g_mime_part_get_content_encoding(part);
    if (encoding == GMIME_CONTENT_ENCODING_BASE64 ||
        encoding == GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE ||
        encoding == GMIME_CONTENT_ENCODING_UUENCODE)
        return;
    g_mime_part_set_content_encoding(
        part, g_mime_part_get_best_content_encoding(part, GMIME_ENCODING_CONSTRAINT_7BIT));
}

std::string canonical_entity(const SplitMessage &split, const std::string &message) {
    std::string headers;
    for (const auto &header : split.content_headers)
        headers += header.raw;

    if (!declares_8bit(split) && !needs_transfer_encoding(headers) &&
        !needs_transfer_encoding(split.body))
        return to_crlf(headers + "\n" + split.body);

    GPtr<GMimeMessage> parsed = parse_message(message);
    GMimeObject *part = parsed ? g_mime_message_get_mime_part(parsed.get()) : nullptr;
    if (!part)
        throw Error("cannot re-encode the message body for signing");
    encode_leaves_7bit(part);
    return to_crlf(write_object_crlf(part));
}

} // namespace p11smime
