// Internal to cms/: owning handles for GMime objects.
#pragma once

#include <memory>

#include <gmime/gmime.h>

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

// Writes object with CRLF line endings into a string.
std::string write_object_crlf(GMimeObject *object);

// Returns the decoded content of a leaf part (transfer encoding removed).
std::string decoded_content(GMimePart *part);

} // namespace p11smime
