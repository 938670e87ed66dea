// A message as libmilter delivers it (header fields, then body chunks), and the header and
// body edits that turn it into a rewritten message.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace p11smime::milter {

// A header field as libmilter passes it: the value without the space after the colon, and
// continuation lines joined by "\n" or "\r\n".
struct HeaderField {
    std::string name;
    std::string value;
};

// Returns the RFC 5322 message with CRLF line endings: each field as "Name: value", a blank
// line, then body, which the MTA already sends with CRLF.
std::string assemble_message(const std::vector<HeaderField> &headers, const std::string &body);

// Splits message (with CRLF or LF line endings) into its header fields, values normalised as
// libmilter passes them with "\n" between continuation lines, and its body in CRLF. Throws
// Error when the message has no header block.
std::vector<HeaderField> parse_header_fields(const std::string &message, std::string &body);

// One header change, in the order the milter must send them.
struct HeaderEdit {
    enum class Kind { remove, insert_at_top, append };
    Kind kind = Kind::append;
    std::string name;
    int index = 0;     // for remove: 1-based position among the fields of this name
    std::string value; // for insert_at_top and append, with "\n" between continuation lines
};

struct MessageEdits {
    std::vector<HeaderEdit> headers;
    std::optional<std::string> body; // the new body in CRLF, when it changes
};

// Computes the edits that turn original into desired. Each field of original without an equal
// field (same name ignoring case, same value) in desired is removed, from the last to the
// first so that earlier indexes stay valid. Each unmatched field of desired is appended, and
// equal fields keep their place. trace fields are inserted at the top, in the given order.
MessageEdits compute_edits(const std::vector<HeaderField> &original,
                           const std::vector<HeaderField> &desired,
                           const std::vector<HeaderField> &trace);

// Returns value with CRLF and CR turned into "\n", as compute_edits compares values.
std::string normalise_value(const std::string &value);

} // namespace p11smime::milter
