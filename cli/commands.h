// The p11smime subcommands. Each returns the process exit status: 0 success, 1 a failed
// signature or policy check, 2 a usage, input or environment error (raised as Error).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/ossl.h"
#include "token/token.h"

namespace p11smime::cli {

struct CommonOptions {
    std::optional<std::string> module;
    std::optional<std::string> pin_file;
};

// The batch form of sign, verify, encrypt and decrypt: FILE... with --out-dir and --jobs.
struct BatchSettings {
    std::vector<std::string> files; // batch mode when not empty
    std::optional<std::string> out_dir;
    std::optional<unsigned> jobs; // worker threads; default: the number of cores
    std::optional<unsigned> max_size_mib; // input size limit in MiB, 0 for none
    std::optional<unsigned> token_wait_seconds; // wait for a lost token; 0 fails at once
};

// How long a batch waits for a lost token to come back when --token-wait is not given.
constexpr unsigned default_token_wait_seconds = 60;

struct ListOptions {
    CommonOptions common;
    bool json = false;
    bool login = false;
};

struct EncryptionSettings {
    std::vector<std::string> recipients; // certificate files or PKCS#11 URIs
    std::optional<std::string> cert_dir;
    std::string cipher = "aes-256-cbc";
    bool cipher_given = false; // --cipher was given; else learned SMIMECapabilities may choose
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
    BatchSettings batch;
};


struct VerifyCommandOptions {
    std::optional<std::string> ca_file;
    std::optional<std::string> ca_path;
    bool no_system_ca = false;
    bool no_sender_check = false;
    std::vector<std::string> signer_certs;
    std::string at_time = "now";
    std::string date_mismatch = "warn";
    std::vector<std::string> crl_files;
    std::optional<std::string> crl_dir;
    bool online = false;
    std::optional<std::string> ocsp_url;
    std::string revocation = "soft";
    int timeout_seconds = 5;
    std::optional<std::string> cache_dir;
    std::optional<std::string> learn_dir; // verify only
    bool allow_sha1 = false;
    bool json = false;
    std::optional<std::string> in;
    std::optional<std::string> out;
    BatchSettings batch;
};

struct EncryptCommandOptions {
    CommonOptions common;
    EncryptionSettings encryption;
    bool json = false;
    std::optional<std::string> in;
    std::optional<std::string> out;
    BatchSettings batch;
};

struct DecryptCommandOptions {
    CommonOptions common;
    std::optional<std::string> key;
    bool no_verify = false;
    VerifyCommandOptions verify; // its json, in and out are those of decrypt
    BatchSettings batch;
};

struct CertsCommandOptions {
    std::string action; // "list", "show" or "remove"
    std::string cert_dir;
    std::string email;  // for show and remove
    bool json = false;
};

int run_list(const ListOptions &options);
int run_sign(const SignCommandOptions &options);
int run_verify(const VerifyCommandOptions &options);
int run_encrypt(const EncryptCommandOptions &options);
int run_decrypt(const DecryptCommandOptions &options);
int run_certs(const CertsCommandOptions &options);

// Returns the token settings of the command line, with the PIN prompt on /dev/tty when a
// terminal is attached and warnings printed by warn().
TokenOptions token_options(const CommonOptions &common);

// Reads the certificates of a --cert-dir folder (*.pem, *.crt, *.cer, *.der), indexed by
// lowercase email address. Throws Error when the folder or a file cannot be read.
std::multimap<std::string, X509Ptr> read_certificate_folder(const std::string &folder);

// Prints a warning on stderr as "p11smime: warning: ...".
void warn(const std::string &message);

// Reads every certificate in a PEM file, or the one certificate of a DER file. Throws
// OpensslError naming the file when it has none.
X509StackPtr read_certificates(const std::string &path);

// Reads the first certificate of a PEM or DER file.
X509Ptr read_certificate(const std::string &path);

} // namespace p11smime::cli
