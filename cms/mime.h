// MIME handling on GMime 3: splitting a message into its routing headers and MIME entity, and
// the canonical form (RFC 8551 section 3.1) that is hashed for a signature.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace p11smime {

// Initialises GMime once per process; safe to call from several places.
void ensure_gmime_initialised();

// One header field exactly as it appeared in the input, folding and line ending included.
struct RawHeader {
    std::string name;
    std::string raw; // "Name: value" through its final line ending
};

// A message split at the boundary between RFC 5322 and MIME. Content-* fields belong to the
// MIME entity; every other field (From, To, Subject, MIME-Version, ...) is a routing or
// descriptive header that stays outside a signature or envelope.
struct SplitMessage {
    std::vector<RawHeader> routing_headers;
    std::vector<RawHeader> content_headers;
    std::string body;         // the bytes after the blank line, unchanged
    bool crlf = false;        // whether the input's header lines end in CRLF
    std::string from_address; // the first mailbox of From, or empty
    std::vector<std::string> from_addresses; // every mailbox of From
    int from_header_count = 0;
};

// Splits message with GMime. Throws Error when the input has no header block.
SplitMessage split_message(const std::string &message);

// Returns the offset just past the blank line that ends a header block whose last field starts
// at last_header, or std::string::npos when there is no blank line.
size_t find_body_offset(const std::string &message, size_t last_header);

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
