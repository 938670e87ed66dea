// Bounds on the messages that cms/ accepts, so that the work done on any input is bounded.
// docs/security.md lists them with their reasons.
#pragma once

#include <cstddef>
#include <string_view>

namespace p11smime {

// Maximum message size, in bytes. A chosen bound, well above ordinary mail; the parsed form of
// a message takes a few times its size in memory.
constexpr size_t max_message_size = 64 * 1024 * 1024;

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

// Throws Error when message is larger than max_message_size. Used for input that may be bare
// DER, where the header checks below do not apply.
void check_message_size(std::string_view message);

// Throws Error when the MIME message is larger than max_message_size, has more than
// max_header_lines lines that start like a header field, or has a NUL byte in such a line or
// in its own header block. NUL bytes in bodies are left to the signature or decryption.
void check_message_limits(std::string_view message);

} // namespace p11smime
