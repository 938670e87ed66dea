#include "cli/sendmail.h"

#include <strings.h>

#include <cctype>
#include <cstdlib>
#include <iostream>
#include <set>

#include <CLI/CLI.hpp>

#include "cli/io.h"
#include "cli/process.h"
#include "cms/encrypt.h"
#include "cms/mime.h"
#include "cms/sign.h"
#include "common/x509_text.h"
#include "common/error.h"

namespace p11smime::cli {
namespace {

constexpr int exit_usage = 2;
constexpr int exit_check_failed = 1;

// A header that requests an encryption mode for its message; removed before signing.
constexpr const char *encrypt_header = "X-P11smime-Encrypt";

// sendmail options whose value may be the next argument ("-f ADDR" as well as "-fADDR").
const std::string options_with_value = "fFrNRVBCOLXh";

std::string default_config_file() {
    const char *config_home = std::getenv("XDG_CONFIG_HOME");
    if (config_home && *config_home)
        return std::string(config_home) + "/p11smime/sendmail.conf";
    const char *home = std::getenv("HOME");
    return std::string(home ? home : "") + "/.config/p11smime/sendmail.conf";
}

void add_options(CLI::App &app, SendmailOptions &options) {
    app.set_config("--config", default_config_file(),
                   "configuration file of 'option = value' lines, named as the long options "
                   "without dashes (default: $XDG_CONFIG_HOME/p11smime/sendmail.conf)");
    app.allow_config_extras(CLI::config_extras_mode::error);
    app.add_option("--key", options.key,
                   "PKCS#11 URI of the signing key (default: the token key whose certificate "
                   "has the From address)");
    app.add_option("--module", options.common.module,
                   "PKCS#11 module to load (default: $P11SMIME_MODULE, else p11-kit's proxy)");
    app.add_option("--pin-file", options.common.pin_file,
                   "file whose first line is the user PIN (default: ask on the terminal)");
    app.add_option("--sendmail", options.sendmail,
                   "program that sends the signed message (default: /usr/sbin/sendmail)");
    app.add_option("--encrypt", options.encrypt,
                   "never; if-possible: when every recipient has a certificate; always: "
                   "refuse to send otherwise (default: never)")
        ->check(CLI::IsMember({"never", "if-possible", "always"}));
    app.add_option("--cert-dir", options.cert_dir,
                   "folder of recipient certificates, picked by email address");
    app.add_option("--cipher", options.cipher, "content cipher (default: aes-256-cbc)")
        ->check(CLI::IsMember({"aes-128-cbc", "aes-256-cbc", "aes-128-gcm", "aes-256-gcm"}));
    app.add_flag("--rsa-oaep", options.rsa_oaep, "RSAES-OAEP for RSA recipients");
    app.add_option("--digest", options.digest, "sha256, sha384 or sha512")
        ->check(CLI::IsMember({"sha256", "sha384", "sha512"}));
    app.add_flag("--rsa-pss", options.rsa_pss, "sign with RSASSA-PSS");
    app.add_flag("--opaque", options.opaque, "sign as application/pkcs7-mime signed-data");
}

// Names of the wrapper's options that take no value.
const std::set<std::string> wrapper_flags = {"--rsa-oaep", "--rsa-pss", "--opaque", "--help"};
const std::set<std::string> wrapper_options = {"--config", "--key",    "--module",
                                               "--pin-file", "--sendmail", "--encrypt",
                                               "--cert-dir", "--cipher", "--digest"};

// Splits arguments into the wrapper's leading "--name [value]" options and sendmail's.
void split_arguments(const std::vector<std::string> &arguments, std::vector<std::string> &own,
                     std::vector<std::string> &sendmail) {
    size_t i = 0;
    while (i < arguments.size()) {
        const std::string &argument = arguments[i];
        std::string name = argument.substr(0, argument.find('='));
        bool is_flag = wrapper_flags.count(argument) != 0;
        bool is_option = wrapper_options.count(name) != 0;
        if (!is_flag && !is_option)
            break;
        own.push_back(argument);
        ++i;
        if (is_option && name == argument && i < arguments.size())
            own.push_back(arguments[i++]);
    }
    sendmail.assign(arguments.begin() + static_cast<long>(i), arguments.end());
}

// Returns the address of "Name <address>", or text itself.
std::string bare_address(const std::string &text) {
    size_t open = text.rfind('<');
    size_t close = text.rfind('>');
    if (open != std::string::npos && close != std::string::npos && open < close)
        return text.substr(open + 1, close - open - 1);
    return text;
}

std::string lowercase(std::string text) {
    for (auto &c : text)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return text;
}

// Removes the encryption request header, returning its value, or an empty string.
std::string take_encrypt_header(std::string &message) {
    SplitMessage split = split_message(message);
    for (const auto &header : split.routing_headers) {
        if (strcasecmp(header.name.c_str(), encrypt_header) != 0)
            continue;
        size_t position = message.find(header.raw);
        std::string value = header.raw.substr(header.raw.find(':') + 1);
        if (position != std::string::npos)
            message.erase(position, header.raw.size());
        size_t first = value.find_first_not_of(" \t\r\n");
        size_t last = value.find_last_not_of(" \t\r\n");
        return first == std::string::npos ? "" : lowercase(value.substr(first, last - first + 1));
    }
    return {};
}

std::string encryption_mode(const std::string &requested, const std::string &configured) {
    if (requested.empty())
        return configured;
    if (requested == "yes")
        return "always";
    if (requested == "no")
        return "never";
    if (requested == "never" || requested == "if-possible" || requested == "always")
        return requested;
    throw Error(std::string(encrypt_header) + " header has the invalid value '" + requested +
                    "'",
                "use always, if-possible or never");
}

TokenKey open_sender_key(const SendmailOptions &options, const std::string &from) {
    TokenOptions token = token_options(options.common);
    if (options.key)
        return open_token_key(Pkcs11Uri::parse(*options.key), std::nullopt, token);
    if (from.empty())
        throw Error("the message has no From address to pick the signing key by",
                    "add a From header, or name the key with --key");

    auto wanted = [&from](X509 *certificate) {
        return certificate_has_email(certificate, from) &&
               X509_cmp_current_time(X509_get0_notBefore(certificate)) < 0 &&
               X509_cmp_current_time(X509_get0_notAfter(certificate)) > 0;
    };
    std::optional<TokenKey> key = open_key_by_certificate(wanted, token);
    if (!key)
        throw Error("no token certificate valid now has the From address " + from,
                    "run 'p11smime list' and name the key with --key, or fix the From address");
    return std::move(*key);
}

std::string sign(const std::string &message, const SendmailOptions &options,
                 const TokenKey &key) {
    SignOptions sign_options;
    sign_options.key = key.key();
    sign_options.certificate = key.certificate();
    sign_options.chain = key.chain();
    sign_options.digest = options.digest;
    sign_options.rsa_pss = options.rsa_pss;
    sign_options.opaque = options.opaque;
    return sign_message(message, sign_options);
}

// Returns the addresses to encrypt to: the envelope recipients, and with -t the To, Cc and
// Bcc addresses, without duplicates.
std::vector<std::string> encryption_addresses(const SendmailArguments &envelope,
                                              const std::string &message) {
    std::vector<std::string> addresses;
    std::set<std::string> seen;
    auto add = [&](const std::string &address) {
        std::string bare = bare_address(address);
        if (!bare.empty() && seen.insert(lowercase(bare)).second)
            addresses.push_back(bare);
    };
    for (const auto &recipient : envelope.recipients)
        add(recipient);
    if (envelope.recipients_from_headers)
        for (const auto &address : recipient_addresses(message))
            add(address);
    return addresses;
}

// The usable certificates found for the recipients, and the recipients without one.
struct RecipientCertificates {
    std::vector<X509Ptr> certificates;
    std::vector<std::string> missing;
};

RecipientCertificates find_recipient_certificates(const std::vector<std::string> &addresses,
                                                  const std::string &folder) {
    std::multimap<std::string, X509Ptr> index = read_certificate_folder(folder);
    RecipientCertificates result;
    for (const auto &address : addresses) {
        X509 *chosen = nullptr;
        auto range = index.equal_range(lowercase(address));
        for (auto it = range.first; it != range.second && !chosen; ++it) {
            try {
                check_recipient_certificate(it->second.get(), address);
                chosen = it->second.get();
            } catch (const Error &) {
                // An expired or unsuitable certificate counts as none; the next may do.
            }
        }
        if (!chosen) {
            result.missing.push_back(address);
            continue;
        }
        X509_up_ref(chosen);
        result.certificates.emplace_back(chosen);
    }
    return result;
}

std::string joined(const std::vector<std::string> &items) {
    std::string text;
    for (const auto &item : items)
        text += (text.empty() ? "" : ", ") + item;
    return text;
}

} // namespace

SendmailArguments parse_sendmail_arguments(const std::vector<std::string> &arguments) {
    SendmailArguments result;
    for (size_t i = 0; i < arguments.size(); ++i) {
        const std::string &argument = arguments[i];
        if (argument == "--") {
            result.recipients.insert(result.recipients.end(),
                                     arguments.begin() + static_cast<long>(i) + 1,
                                     arguments.end());
            break;
        }
        if (argument.size() < 2 || argument[0] != '-') {
            result.recipients.push_back(argument);
            continue;
        }
        char letter = argument[1];
        if (letter == 't' && argument.size() == 2)
            result.recipients_from_headers = true;
        else if (argument == "-i" || argument == "-oi")
            result.ignore_dots = true;
        else if (letter == 'b' && argument != "-bm")
            throw Error("sendmail mode '" + argument + "' does not submit a message",
                        "p11smime sendmail only signs and submits messages (-bm)");
        else if (options_with_value.find(letter) != std::string::npos && argument.size() == 2)
            ++i;
    }
    return result;
}

namespace {

int send_signed(const SendmailOptions &options, const std::vector<std::string> &sendmail_args) {
    SendmailArguments envelope = parse_sendmail_arguments(sendmail_args);
    std::string message = read_input(std::nullopt);
    std::vector<std::string> command = {options.sendmail};
    // The whole input is signed, as msmtp and other sendmail replacements read it to the end.
    // With -i, sendmail itself does not end the signed message at a line holding a lone ".".
    if (!envelope.ignore_dots)
        command.push_back("-i");
    command.insert(command.end(), sendmail_args.begin(), sendmail_args.end());

    std::string mode = encryption_mode(take_encrypt_header(message), options.encrypt);
    if (mode != "never" && !options.cert_dir)
        throw Error("encryption (" + mode + ") needs recipient certificates",
                    "set --cert-dir to a folder of recipient certificates");

    RecipientCertificates recipients;
    if (mode != "never") {
        recipients = find_recipient_certificates(encryption_addresses(envelope, message),
                                                 *options.cert_dir);
        if (!recipients.missing.empty() && mode == "always") {
            std::cerr << "p11smime: error: not sent: no usable certificate in '"
                      << *options.cert_dir << "' for " << joined(recipients.missing) << "\n"
                      << "p11smime: hint: add their certificates, or send with encryption "
                         "if-possible or never\n";
            return exit_check_failed;
        }
        if (!recipients.missing.empty())
            warn("sending signed but not encrypted: no usable certificate for " +
                 joined(recipients.missing));
    }

    TokenKey key = open_sender_key(options, split_message(message).from_address);
    std::string outgoing = sign(message, options, key);
    if (mode != "never" && recipients.missing.empty() && !recipients.certificates.empty()) {
        EncryptOptions encrypt;
        for (const auto &certificate : recipients.certificates)
            encrypt.recipients.push_back(certificate.get());
        encrypt.cipher = options.cipher;
        encrypt.rsa_oaep = options.rsa_oaep;
        outgoing = encrypt_message(outgoing, encrypt);
    }
    return run_with_input(command, outgoing);
}

} // namespace

int run_sendmail_command(const std::vector<std::string> &arguments) {
    std::vector<std::string> own;
    std::vector<std::string> sendmail_args;
    split_arguments(arguments, own, sendmail_args);

    CLI::App app("p11smime sendmail: sign the message on standard input with a token key, "
                 "encrypt it when asked, and pass it to sendmail with the remaining arguments.\n"
                 "Exit status: the real sendmail's; 1 when encryption is required and a "
                 "recipient has no certificate; 2 when signing fails, and then nothing is "
                 "sent.",
                 "p11smime sendmail");
    SendmailOptions options;
    add_options(app, options);
    try {
        std::vector<std::string> reversed(own.rbegin(), own.rend());
        app.parse(reversed);
    } catch (const CLI::ParseError &error) {
        if (error.get_exit_code() == 0) {
            std::cout << app.help();
            return 0;
        }
        std::cerr << "p11smime: error: " << error.what() << "\n"
                  << "p11smime: hint: see 'p11smime sendmail --help' and p11smime-sendmail(1)\n";
        return exit_usage;
    }
    return send_signed(options, sendmail_args);
}

} // namespace p11smime::cli
