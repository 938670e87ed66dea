// p11smime-git: the part of gpgsm's command line that git's X.509 signing uses
// (gpg.format=x509 with gpg.x509.program=p11smime-git), backed by a key on a PKCS#11 token.
#pragma once

#include <optional>
#include <string>

namespace p11smime::cli {

// Settings that git cannot pass on the command line. Each comes from an environment variable,
// else from git's configuration (the p11smime section), else a default.
struct GitSettings {
    std::optional<std::string> module;   // P11SMIME_MODULE, p11smime.module
    std::optional<std::string> pin_file; // P11SMIME_PIN_FILE, p11smime.pinFile
    std::optional<std::string> ca_file;  // P11SMIME_CA_FILE, p11smime.caFile
    std::optional<std::string> ca_path;  // P11SMIME_CA_PATH, p11smime.caPath
    bool system_ca = true;               // P11SMIME_SYSTEM_CA, p11smime.systemCa
};

// Reads the settings from the environment and from `git config` in the current folder.
// Throws Error when a boolean setting is neither true nor false.
GitSettings read_git_settings();

// A request to sign, as git sends it: `--status-fd=2 -bsau KEY` with the data on stdin.
struct GitSignRequest {
    std::string key;    // a PKCS#11 URI, "Name <email>", an email or a SHA-1 fingerprint
    bool armor = true;  // PEM "SIGNED MESSAGE" armor, else DER
    int status_fd = -1; // where the SIG_CREATED status line goes, or -1 for nowhere
};

// Signs standard input and writes a detached CMS signature to standard output. Returns 0;
// throws Error when the key cannot be found or used.
int run_git_sign(const GitSignRequest &request, const GitSettings &settings);

// A request to verify, as git sends it: `--status-fd=1 --verify SIGFILE -`.
struct GitVerifyRequest {
    std::string signature_file;   // PEM-armored or DER detached CMS signature
    std::string data_file = "-";  // "-" for standard input
    int status_fd = -1;
};

// Verifies the signature over the data and writes gpgsm's status lines (NEWSIG, GOODSIG or
// BADSIG, VALIDSIG, TRUST_FULLY or TRUST_NEVER) and a readable report on standard error.
// Returns 0 when the signature and certificate are valid, 1 otherwise; throws Error for
// unreadable input.
int run_git_verify(const GitVerifyRequest &request, const GitSettings &settings);

} // namespace p11smime::cli
