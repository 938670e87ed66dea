// p11smime sendmail: a sendmail-compatible wrapper that signs (and optionally encrypts) the
// message on standard input before handing it to the real sendmail.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"

namespace p11smime::cli {

struct SendmailOptions {
    CommonOptions common;
    std::optional<std::string> key; // PKCS#11 URI; default: the certificate of the From address
    std::string sendmail = "/usr/sbin/sendmail";
    std::string encrypt = "never"; // "never", "if-possible" or "always"
    std::optional<std::string> cert_dir;
    std::string cipher = "aes-256-cbc";
    bool rsa_oaep = false;
    std::string digest;
    bool rsa_pss = false;
    bool opaque = false;
};

// The parts of sendmail's own arguments that the wrapper uses.
struct SendmailArguments {
    std::vector<std::string> recipients; // envelope recipients named on the command line
    bool recipients_from_headers = false; // -t
    bool ignore_dots = false;             // -i or -oi: a line holding a lone "." is data
};

// Reads the sendmail arguments that matter here. Options that take a value (-f ADDR, -F NAME,
// -r, -N, -R, -V, -B, -C, -O, -L, -X, -h) may have it attached or as the next argument;
// everything after "--" is a recipient. Throws Error for a mode other than submitting one
// message (-bm), such as -bs or -bp.
SendmailArguments parse_sendmail_arguments(const std::vector<std::string> &arguments);

// Runs `p11smime sendmail [OPTIONS] [SENDMAIL ARGUMENTS]`, given the arguments after
// "sendmail". The wrapper's own options come first and start with "--"; the first argument
// that is not one of them starts sendmail's. The whole of standard input is the message, and
// the real sendmail gets -i when the arguments have neither -i nor -oi. Options also come from a configuration file
// (--config, default $XDG_CONFIG_HOME/p11smime/sendmail.conf). Returns the real sendmail's
// exit status, 1 when encryption is required and a recipient has no certificate, and 0 or
// 2 for --help and usage errors. Throws Error, and never runs sendmail, when signing or
// encryption fails.
int run_sendmail_command(const std::vector<std::string> &arguments);

} // namespace p11smime::cli
