// The p11smime subcommands. Each returns the process exit status: 0 success, 1 a failed
// signature or policy check, 2 a usage, input or environment error (raised as Error).
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace p11smime::cli {

struct CommonOptions {
    std::optional<std::string> module;
    std::optional<std::string> pin_file;
};

struct ListOptions {
    CommonOptions common;
    bool json = false;
    bool login = false;
};

struct SignCommandOptions {
    CommonOptions common;
    std::string key;
    std::optional<std::string> cert;
    std::optional<std::string> chain;
    bool opaque = false;
    std::string digest;
    bool rsa_pss = false;
    std::optional<std::string> in;
    std::optional<std::string> out;
};

struct VerifyCommandOptions {
    std::optional<std::string> ca_file;
    std::optional<std::string> ca_path;
    bool no_system_ca = false;
    bool no_sender_check = false;
    std::vector<std::string> signer_certs;
    bool json = false;
    std::optional<std::string> in;
    std::optional<std::string> out;
};

int run_list(const ListOptions &options);
int run_sign(const SignCommandOptions &options);
int run_verify(const VerifyCommandOptions &options);

// Prints a warning on stderr as "p11smime: warning: ...".
void warn(const std::string &message);

} // namespace p11smime::cli
