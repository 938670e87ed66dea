// The milter's decision for one message: sign, decrypt, verify or pass, and the edits or the
// SMTP reply that carry it out. Independent of libmilter, so tests can drive it directly.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "milter/config.h"
#include "milter/key_store.h"
#include "milter/message.h"

namespace p11smime::milter {

// A configuration in force, with the values derived from it at load time.
struct Runtime {
    Config config;
    std::string authserv_id; // the configured one, else the host name
};

struct Envelope {
    std::string queue_id;
    std::string sender;
    std::vector<std::string> recipients; // without angle brackets
    bool trusted_client = false;         // from trusted_networks, or SASL-authenticated
};

enum class Verdict { accept, tempfail, reject };

struct FilterResult {
    Verdict verdict = Verdict::accept;
    MessageEdits edits;
    std::string reply_code;    // for tempfail and reject, e.g. "451"
    std::string extended_code; // e.g. "4.7.0"
    std::string reply_text;
    std::string action; // for the log: sign, decrypt, verify or none
    std::string result; // for the log: e.g. signed, decrypted, tempfail
    std::string detail; // for the log: the reason, never message content
};

// Name of the header that marks a decrypted message.
inline constexpr const char *decrypted_header = "X-P11SMIME-Decrypted";

// Processes one message by the rules of runtime. Encrypted mail whose every recipient matches
// a [decrypt] rule is decrypted. Otherwise the first [sign] rule whose senders match the From
// address signs mail from a trusted client, and other signed mail is verified when [verify]
// applies. Authentication-Results fields with this authserv-id and X-P11SMIME-Decrypted
// fields that arrive with the message are removed, so a sender cannot forge them.
FilterResult filter_message(const Runtime &runtime, KeyStore &keys, const Envelope &envelope,
                            const std::vector<HeaderField> &headers, const std::string &body);

// Returns the text of an RFC 8601 comment: printable ASCII, without parentheses or
// backslashes, at most 200 characters.
std::string header_comment(const std::string &text);

} // namespace p11smime::milter
