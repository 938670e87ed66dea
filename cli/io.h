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
// standard output when path is empty or "-". A failure leaves no partial file behind. A
// symbolic link is followed, an existing file keeps its mode, and a FIFO or device is
// written through, without atomicity.
void write_output(const std::optional<std::string> &path, const std::string &data);

// Returns true when /dev/tty can be opened, so a person can be asked for a PIN.
bool terminal_available();

// Asks for the PIN of the named token on /dev/tty with echo off. Throws Error when there is
// no terminal or nothing was entered.
SecurePin prompt_pin_on_tty(const std::string &token_label);

// Throws Error naming path when its folder does not exist, so that a command fails before it
// spends a PIN try on a run whose output cannot be written.
void check_output_folder(const std::optional<std::string> &path);

} // namespace p11smime::cli
