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

struct EncryptionSettings {
    std::vector<std::string> recipients; // certificate files or PKCS#11 URIs
    std::optional<std::string> cert_dir;
    std::string cipher = "aes-256-cbc";
    bool rsa_oaep = false;
};

struct SignCommandOptions {
    CommonOptions common;
    EncryptionSettings encryption; // used when recipients are given with --encrypt-to
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
    bool allow_sha1 = false;
    bool json = false;
    std::optional<std::string> in;
    std::optional<std::string> out;
};

struct EncryptCommandOptions {
    CommonOptions common;
    EncryptionSettings encryption;
    bool json = false;
    std::optional<std::string> in;
    std::optional<std::string> out;
};

struct DecryptCommandOptions {
    CommonOptions common;
    std::optional<std::string> key;
    bool no_verify = false;
    VerifyCommandOptions verify; // its json, in and out are those of decrypt
};

int run_list(const ListOptions &options);
int run_sign(const SignCommandOptions &options);
int run_verify(const VerifyCommandOptions &options);
int run_encrypt(const EncryptCommandOptions &options);
int run_decrypt(const DecryptCommandOptions &options);

// Prints a warning on stderr as "p11smime: warning: ...".
void warn(const std::string &message);

} // namespace p11smime::cli
