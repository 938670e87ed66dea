// Internal to cms/: owning handles for GMime objects.
#pragma once

#include <memory>
#include <string>

#include <gmime/gmime.h>

#include "cms/source.h"
#include "cms/stream.h"

namespace p11smime {

struct GObjectDeleter {
    void operator()(void *object) const noexcept { g_object_unref(object); }
};

template <typename T> using GPtr = std::unique_ptr<T, GObjectDeleter>;

struct FormatOptionsDeleter {
    void operator()(GMimeFormatOptions *options) const noexcept {
        g_mime_format_options_free(options);
    }
};

using FormatOptionsPtr = std::unique_ptr<GMimeFormatOptions, FormatOptionsDeleter>;

// Parses bytes held in memory into a GMime message. The returned message keeps its own copy of
// the bytes. Returns null when GMime finds no message. Throws Error when the message exceeds
// a bound of cms/limits.h, before parsing where the bound allows.
GPtr<GMimeMessage> parse_message(const std::string &message);

// Parses a message source. For a file, the contents of parts stay in the file and are read
// from it on demand, so parsing costs the memory of the MIME structure only. Throws Error when
// the message exceeds a bound of cms/limits.h (for a file, every bound but the size).
GPtr<GMimeMessage> parse_message(const MessageSource &source);

// Gives every leaf part under object, binary-labelled ones included, a 7-bit transfer
// encoding, for signing.
void encode_leaves_7bit(GMimeObject *object);

// Writes object with CRLF line endings into a string.
std::string write_object_crlf(GMimeObject *object);

// Returns the decoded content of a leaf part (transfer encoding removed).
std::string decoded_content(GMimePart *part);

// Returns a reader of the decoded content of a leaf part, for content too large to hold.
std::unique_ptr<Reader> decoded_content_reader(GMimePart *part);

} // namespace p11smime
