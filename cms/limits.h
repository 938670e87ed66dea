// Bounds on the messages that cms/ accepts, so that the work done on any input is bounded.
// docs/security.md lists them with their reasons.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "cms/source.h"

namespace p11smime {

// Default maximum message size, in bytes. A chosen bound, well above ordinary mail; the parsed
// form of a message held in memory takes a few times its size.
constexpr size_t default_max_message_size = 64 * 1024 * 1024;

// The maximum message size in force, in bytes; 0 means no bound. Messages read from a file are
// streamed in bounded memory, so a caller may raise the bound for them.
size_t max_message_size();
void set_max_message_size(size_t bytes);

// Throws Error when a message of size bytes is over max_message_size(); name says which input.
void check_message_size(uint64_t size, const std::string &name);

// Maximum number of lines that start like a header field ("Name:" at the start of a line), counted
// anywhere in the message. GMime 3.2 keeps about 500 bytes per parsed field, so 3 million
// tiny fields in 21 MB took 1.4 GB and 4.6 s to parse; this bound keeps that near 25 MB.
// Body text may contain such lines too, so the count errs on the side of rejecting.
constexpr size_t max_header_lines = 50000;

// Maximum size of one header field of a message or MIME entity, folded lines included, in bytes.
constexpr size_t max_header_field_size = 64 * 1024;

// Maximum MIME nesting depth: multiparts and message/rfc822 parts within each other. A chosen
// bound with wide room above ordinary mail. GMime 3.2 itself stops descending at a much deeper
// level and then treats the rest as one leaf part, without an error.
constexpr int max_mime_depth = 32;

// Throws Error when message is larger than max_message_size(). Used for input that may be bare
// DER, where the header checks below do not apply.
void check_message_size(std::string_view message);

// Throws Error when the MIME message is larger than max_message_size(), has more than
// max_header_lines lines that start like a header field, or has a NUL byte in such a line or
// in its own header block. NUL bytes in bodies are left to the signature or decryption.
void check_message_limits(std::string_view message);

// Checks source as check_message_limits() does, reading a file source in pieces. Throws Error.
void check_message_limits(const MessageSource &source);

} // namespace p11smime
