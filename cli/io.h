// Input and output for the command: files or standard streams, atomic writes, PIN prompts.
#pragma once

#include <optional>
#include <string>

#include "token/pin.h"

namespace p11smime::cli {

// Reads a whole file, or standard input when path is empty or "-". Throws Error naming it,
// also when it is larger than max_message_size (cms/limits.h).
std::string read_input(const std::optional<std::string> &path);

// Writes data to a file atomically (a temporary file in the same folder, then rename), or to
// standard output when path is empty or "-". A failure leaves no partial file behind.
void write_output(const std::optional<std::string> &path, const std::string &data);

// Asks for the PIN of the named token on /dev/tty with echo off. Returns an empty function
// result when there is no terminal, so the caller knows the login is non-interactive.
bool terminal_available();
SecurePin prompt_pin_on_tty(const std::string &token_label);

} // namespace p11smime::cli
