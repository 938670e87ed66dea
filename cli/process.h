// Child processes for the command: a program fed a message on its standard input, and the
// output of a short query such as `git config`.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace p11smime::cli {

// Runs argv[0], searched on PATH, with input on its standard input; its standard output and
// standard error are those of this process. Returns its exit status, or 128 plus the signal
// number when a signal ended it, as shells report it. Throws Error when the program cannot be
// started, or when it exits 0 without reading the whole input.
int run_with_input(const std::vector<std::string> &argv, const std::string &input);

// Runs argv[0], searched on PATH, with standard input and standard error on /dev/null.
// Returns its standard output when it exits 0, and nothing when it cannot be started or
// exits with another status.
std::optional<std::string> command_output(const std::vector<std::string> &argv);

} // namespace p11smime::cli
