// The p11smime-milter configuration file: its settings and the parser that reads them.
// docs/milter.conf.example documents the format.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "token/uri.h"

namespace p11smime::milter {

// Error in a configuration file. what() reads "FILE:LINE: message", or "FILE: message" when
// the file cannot be read (line 0); hint() is the fix.
class ConfigError : public Error {
  public:
    ConfigError(const std::string &file, int line, const std::string &message,
                std::string hint = {});

    const std::string &file() const noexcept { return file_; }
    int line() const noexcept { return line_; }

  private:
    std::string file_;
    int line_;
};

// A key on the token with the certificate that goes with it.
struct KeyReference {
    Pkcs11Uri uri; // the private key, merged with the global token URI
    // A certificate URI on the token, or a PEM file; neither means the token certificate with
    // the key's CKA_ID.
    std::optional<Pkcs11Uri> certificate_uri;
    std::optional<std::string> certificate_file;
    std::optional<std::string> chain_file; // PEM certificates sent along with a signature

    // A text that is equal for two references exactly when they name the same objects.
    std::string identity() const;
};

// Addresses and domains that a rule applies to: "user@example.org" is one mailbox, and
// "example.org" or "@example.org" is every mailbox of that domain. Compared ignoring case.
struct AddressPatterns {
    std::vector<std::string> patterns; // lowercase, a domain without its leading '@'

    bool matches(const std::string &address) const;
};

// A [sign] section: outbound mail whose From address matches is signed.
struct SignRule {
    int line = 0;
    AddressPatterns senders;
    KeyReference key;
    std::string digest; // empty: the default of sign_message
    bool rsa_pss = false;
    bool opaque = false;
};

// A [decrypt] section: inbound encrypted mail to the matching recipients is decrypted.
struct DecryptRule {
    int line = 0;
    AddressPatterns recipients;
    KeyReference key;
};

// The [verify] section: inbound signed mail gets an Authentication-Results header. Its trust
// settings also check the inner signature of decrypted mail.
struct VerifySettings {
    bool enabled = false;                      // a [verify] section is present
    std::optional<AddressPatterns> recipients; // empty: every message
    std::optional<std::string> ca_file;
    std::optional<std::string> ca_path;
    bool system_ca = true;
    bool sender_check = true;
};

// An IPv4 or IPv6 network in CIDR notation.
struct Network {
    int family = 0;                 // AF_INET or AF_INET6
    unsigned char address[16] = {}; // network byte order
    int prefix_length = 0;

    bool contains(int address_family, const unsigned char *bytes) const;
};

enum class LogTarget { stderr_stream, syslog };

struct Config {
    std::string file;
    std::string socket; // libmilter form: unix:/path, inet:PORT@HOST or inet6:PORT@HOST
    std::optional<std::string> module;
    Pkcs11Uri token;                     // token attributes that every key URI inherits
    std::optional<std::string> pin_file; // may start with ${CREDENTIALS_DIRECTORY}/
    int pin_file_line = 0;
    int sessions = 4; // concurrent token operations, 1 to 16
    LogTarget log = LogTarget::stderr_stream;
    std::string authserv_id; // empty: the host name
    std::vector<Network> trusted_networks;
    int retry_initial_seconds = 1;
    int retry_max_seconds = 60;
    int shutdown_timeout_seconds = 30;

    std::vector<SignRule> sign_rules;
    std::vector<DecryptRule> decrypt_rules;
    VerifySettings verify;
};

// Parses the text of a configuration file. file names it in errors. Reads nothing else: no
// file, no environment. Throws ConfigError naming the line and the fix.
Config parse_config(std::string_view text, const std::string &file);

// Reads and parses the file at path. Throws ConfigError, also when it cannot be read.
Config load_config(const std::string &path);

// Returns the PIN file path with a leading ${CREDENTIALS_DIRECTORY} replaced by
// credentials_directory, which systemd sets for a unit with LoadCredential=. Throws
// ConfigError when the path uses the variable and credentials_directory is null.
std::string resolve_pin_file(const Config &config, const char *credentials_directory);

// Parses a network in CIDR notation ("10.0.0.0/8", "::1/128"; a bare address is a host).
// Returns nothing when text is not one.
std::optional<Network> parse_network(const std::string &text);

} // namespace p11smime::milter
