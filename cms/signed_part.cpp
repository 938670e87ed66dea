#include "cms/signed_part.h"

#include <strings.h>

#include <algorithm>
#include <cstdint>

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

// Returns the start of the line at or after from that is the delimiter "--boundary",
// optionally followed by "--" (close) and transport padding (RFC 2046 section 5.1.1).
size_t find_delimiter(const std::string &message, const std::string &boundary, size_t from,
                      bool &is_close) {
    std::string delimiter = "--" + boundary;
    for (size_t line = from; line < message.size();) {
        size_t end = message.find('\n', line);
        size_t stop = end == std::string::npos ? message.size() : end;
        if (message.compare(line, delimiter.size(), delimiter) == 0) {
            size_t rest = line + delimiter.size();
            is_close = message.compare(rest, 2, "--") == 0;
            if (is_close)
                rest += 2;
            while (rest < stop && (message[rest] == ' ' || message[rest] == '\t' ||
                                   message[rest] == '\r'))
                ++rest;
            if (rest == stop)
                return line;
        }
        line = stop + 1;
    }
    return std::string::npos;
}

// Cuts the first part of a multipart/signed out of the original bytes. The line break before
// a delimiter belongs to the delimiter, so it is not part of the signed content.
std::string first_part_bytes(const std::string &message, GMimeObject *object) {
    const char *boundary = g_mime_object_get_content_type_parameter(object, "boundary");
    if (!boundary || !*boundary)
        throw Error("multipart/signed has no boundary parameter");

    size_t body = find_body_offset(message, header_span(object).second);
    if (body == std::string::npos)
        throw Error("multipart/signed has no body");
    bool is_close = false;
    size_t opening = find_delimiter(message, boundary, body, is_close);
    if (opening == std::string::npos || is_close)
        throw Error("multipart/signed has no first part");
    size_t start = message.find('\n', opening);
    if (start == std::string::npos)
        throw Error("multipart/signed ends after its first delimiter");
    ++start;

    size_t next = find_delimiter(message, boundary, start, is_close);
    if (next == std::string::npos || next == start)
        throw Error("multipart/signed has no second delimiter");
    size_t end = next - 1;
    if (end > start && message[end - 1] == '\r')
        --end;
    return message.substr(start, end - start);
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

SignedPart read_multipart_signed(const std::string &message, const Found &found) {
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
    result.raw_content = first_part_bytes(message, found.object);
    result.signed_content =
        is_binary_part(content) ? result.raw_content : to_crlf(result.raw_content);
    result.der = decoded_content(GMIME_PART(signature));
    return result;
}

} // namespace

SignedPart find_signed_part(const std::string &message, GMimeMessage *parsed) {
    GMimeObject *top = g_mime_message_get_mime_part(parsed);
    Found found = top ? find_structure(top, "") : Found{};
    if (!found.object)
        throw Error("no S/MIME signature found in the message",
                    "expected multipart/signed or application/pkcs7-mime; smime-type=signed-data");

    if (!found.opaque)
        return read_multipart_signed(message, found);

    SignedPart result;
    result.opaque = true;
    result.part = found.part;
    result.der = decoded_content(GMIME_PART(found.object));
    return result;
}

} // namespace p11smime
