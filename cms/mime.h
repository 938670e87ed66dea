// MIME handling on GMime 3: splitting a message into its routing headers and MIME entity, and
// the canonical form (RFC 8551 section 3.1) that is hashed for a signature.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cms/source.h"

namespace p11smime {

// Initialises GMime once per process; safe to call from several places.
void ensure_gmime_initialised();

// One header field exactly as it appeared in the input, folding and line ending included.
struct RawHeader {
    std::string name;
    std::string raw; // "Name: value" through its final line ending
};

// The header block of a message, split at the boundary between RFC 5322 and MIME. Content-*
// fields belong to the MIME entity; every other field (From, To, Subject, MIME-Version, ...)
// is a routing or descriptive header that stays outside a signature or envelope.
struct MessageHeaders {
    std::vector<RawHeader> routing_headers;
    std::vector<RawHeader> content_headers;
    uint64_t body_offset = 0; // where the bytes after the blank line start
    bool crlf = false;        // whether the input's header lines end in CRLF
    std::string from_address; // the first mailbox of From, or empty
    std::vector<std::string> from_addresses; // every mailbox of From
    int from_header_count = 0;
};

// A message split into its header block and its body.
struct SplitMessage : MessageHeaders {
    std::string body; // the bytes after the blank line, unchanged
};

// Splits message with GMime. Throws Error when the input has no header block.
SplitMessage split_message(const std::string &message);

// Reads only the header block of source and splits it as split_message() does, so a message
// of any size costs the memory of its headers. Throws Error when there is no header block or
// when it is over max_header_block_size.
MessageHeaders read_headers(const MessageSource &source);

// Returns the end of the blank line that ends the header block at the start of text, or npos
// when text holds no blank line.
size_t header_block_end(const std::string &text);

// Largest header block that read_headers() accepts. Real header blocks are a few kilobytes;
// mailing lists and long Received chains rarely pass 100 KiB.
constexpr size_t max_header_block_size = 4 * 1024 * 1024;

// Returns true when split declares an 8bit or binary Content-Transfer-Encoding.
bool declares_8bit(const MessageHeaders &split);

// Returns the offset just past the blank line that ends a header block whose last field starts
// at last_header, or std::string::npos when there is no blank line.
size_t find_body_offset(const std::string &message, size_t last_header);

// Returns the offset just past the blank line that ends a header block whose last field starts
// at last_header in source, or UINT64_MAX when there is no blank line. Throws Error
// when the header block runs on for over max_header_block_size.
uint64_t find_body_offset(const MessageSource &source, uint64_t last_header);

// Converts every line ending to CRLF (RFC 5652 canonical text); CRLF pairs stay as they are.
std::string to_crlf(std::string_view text);

// Converts CRLF pairs to LF, for output in a file that uses LF line endings.
std::string to_lf(std::string_view text);

// Returns true when text contains a byte that a 7-bit mail transport may alter: a NUL, a byte
// over 127, or a line longer than the 998 characters of RFC 5322 section 2.1.1.
bool needs_transfer_encoding(std::string_view text);

// Returns the MIME entity of split in canonical form for signing: content headers, blank line
// and body, in CRLF. A body with 8-bit data or long lines is first re-encoded by GMime as
// quoted-printable or base64, so that no relay changes the signed bytes. Trailing whitespace
// and quoted-printable text are kept exactly as given.
std::string canonical_entity(const SplitMessage &split, const std::string &message);

} // namespace p11smime
