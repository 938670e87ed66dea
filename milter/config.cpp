#include "milter/config.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace p11smime::milter {
namespace {

constexpr int max_sessions = 16; // the size of libp11 0.4.12's session pool per slot
constexpr std::string_view credentials_variable = "${CREDENTIALS_DIRECTORY}";

struct Entry {
    std::string value;
    int line = 0;
};

// One section of the file as written: [name] and its key = value lines.
struct Section {
    std::string name; // empty for the global settings before the first [section]
    int line = 0;
    std::map<std::string, Entry> entries;
};

std::string trim(std::string_view text) {
    size_t begin = 0;
    size_t end = text.size();
    while (begin < end && std::isspace(static_cast<unsigned char>(text[begin])))
        ++begin;
    while (end > begin && std::isspace(static_cast<unsigned char>(text[end - 1])))
        --end;
    return std::string(text.substr(begin, end - begin));
}

std::string lowercase(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return text;
}

std::vector<std::string> split_list(const std::string &value) {
    std::vector<std::string> items;
    std::string item;
    std::istringstream stream(value);
    while (std::getline(stream, item, ','))
        if (std::string trimmed = trim(item); !trimmed.empty())
            items.push_back(trimmed);
    return items;
}

class Parser {
  public:
    explicit Parser(const std::string &file) : file_(file) {}

    std::vector<Section> read_sections(std::string_view text);
    Config interpret(const std::vector<Section> &sections);

  private:
    [[noreturn]] void fail(int line, const std::string &message, std::string hint = {}) const {
        throw ConfigError(file_, line, message, std::move(hint));
    }

    void read_line(std::string_view line, int number, std::vector<Section> &sections);
    void check_keys(const Section &section, const std::set<std::string> &allowed) const;
    void read_global(const Section &section, Config &config);
    void read_networks(const Section &section, Config &config);
    void read_timing(const Section &section, Config &config);
    SignRule read_sign(const Section &section, const Config &config);
    DecryptRule read_decrypt(const Section &section, const Config &config);
    void read_verify(const Section &section, Config &config);

    const Entry *find(const Section &section, const std::string &key) const;
    const Entry &require(const Section &section, const std::string &key,
                         const std::string &hint) const;
    bool read_bool(const Section &section, const std::string &key, bool fallback) const;
    int read_int(const Section &section, const std::string &key, int fallback, int minimum,
                 int maximum) const;
    AddressPatterns read_patterns(const Entry &entry) const;
    Pkcs11Uri read_uri(const Entry &entry, const std::string &key) const;
    KeyReference read_key(const Section &section, const Config &config) const;

    std::string file_;
};

std::vector<Section> Parser::read_sections(std::string_view text) {
    std::vector<Section> sections(1);
    sections.front().line = 1;
    int number = 0;
    size_t start = 0;
    while (start <= text.size()) {
        size_t end = text.find('\n', start);
        if (end == std::string_view::npos)
            end = text.size();
        read_line(text.substr(start, end - start), ++number, sections);
        start = end + 1;
    }
    return sections;
}

void Parser::read_line(std::string_view raw, int number, std::vector<Section> &sections) {
    std::string line = trim(raw);
    if (line.empty() || line[0] == '#' || line[0] == ';')
        return;

    if (line[0] == '[') {
        if (line.back() != ']')
            fail(number, "section header '" + line + "' has no closing ']'",
                 "write it as [sign], [decrypt] or [verify]");
        std::string name = lowercase(trim(std::string_view(line).substr(1, line.size() - 2)));
        if (name != "sign" && name != "decrypt" && name != "verify")
            fail(number, "unknown section [" + name + "]", "use [sign], [decrypt] or [verify]");
        sections.push_back(Section{name, number, {}});
        return;
    }

    size_t equals = line.find('=');
    if (equals == std::string::npos)
        fail(number, "expected 'key = value', found '" + line + "'",
             "add '=' between the setting's name and its value, or start a comment with '#'");
    std::string key = lowercase(trim(std::string_view(line).substr(0, equals)));
    std::string value = trim(std::string_view(line).substr(equals + 1));
    if (key.empty())
        fail(number, "a value without a setting name", "write the name before '='");
    if (value.empty())
        fail(number, "setting '" + key + "' has no value",
             "give it a value, or delete the line to use the default");

    Section &section = sections.back();
    if (auto previous = section.entries.find(key); previous != section.entries.end())
        fail(number, "setting '" + key + "' repeats line " + std::to_string(previous->second.line),
             "keep one of the two lines; lists take commas: a, b, c");
    section.entries[key] = Entry{value, number};
}

void Parser::check_keys(const Section &section, const std::set<std::string> &allowed) const {
    for (const auto &[key, entry] : section.entries) {
        if (allowed.count(key))
            continue;
        std::string names;
        for (const auto &name : allowed)
            names += (names.empty() ? "" : ", ") + name;
        std::string where =
            section.name.empty() ? "before the first section" : "in [" + section.name + "]";
        fail(entry.line, "unknown setting '" + key + "' " + where,
             "the settings here are " + names);
    }
}

const Entry *Parser::find(const Section &section, const std::string &key) const {
    auto found = section.entries.find(key);
    return found == section.entries.end() ? nullptr : &found->second;
}

const Entry &Parser::require(const Section &section, const std::string &key,
                             const std::string &hint) const {
    if (const Entry *entry = find(section, key))
        return *entry;
    std::string where = section.name.empty() ? "the global settings" : "[" + section.name + "]";
    fail(section.line, where + " lacks the setting '" + key + "'", hint);
}

bool Parser::read_bool(const Section &section, const std::string &key, bool fallback) const {
    const Entry *entry = find(section, key);
    if (!entry)
        return fallback;
    std::string value = lowercase(entry->value);
    if (value == "yes" || value == "true" || value == "on")
        return true;
    if (value == "no" || value == "false" || value == "off")
        return false;
    fail(entry->line, "setting '" + key + "' is '" + entry->value + "', not yes or no",
         "write " + key + " = yes or " + key + " = no");
}

int Parser::read_int(const Section &section, const std::string &key, int fallback, int minimum,
                     int maximum) const {
    const Entry *entry = find(section, key);
    if (!entry)
        return fallback;
    std::string range = std::to_string(minimum) + " to " + std::to_string(maximum);
    bool digits = !entry->value.empty() && entry->value.size() <= 9 &&
                  std::all_of(entry->value.begin(), entry->value.end(),
                              [](unsigned char c) { return std::isdigit(c); });
    int value = digits ? std::stoi(entry->value) : -1;
    if (!digits || value < minimum || value > maximum)
        fail(entry->line,
             "setting '" + key + "' is '" + entry->value + "', not a number from " + range,
             "write a whole number from " + range);
    return value;
}

AddressPatterns Parser::read_patterns(const Entry &entry) const {
    AddressPatterns result;
    for (std::string item : split_list(entry.value)) {
        item = lowercase(item);
        if (item.front() == '<' && item.back() == '>')
            item = item.substr(1, item.size() - 2);
        if (item.front() == '@')
            item.erase(0, 1);
        size_t at = item.find('@');
        bool valid = !item.empty() && item.find_first_of(" \t<>\"") == std::string::npos &&
                     at != 0 &&
                     item.find('@', at == std::string::npos ? 0 : at + 1) == std::string::npos &&
                     item.back() != '@';
        if (!valid)
            fail(entry.line, "'" + item + "' is not an address or domain",
                 "write user@example.org for one mailbox or example.org for a domain");
        result.patterns.push_back(item);
    }
    if (result.patterns.empty())
        fail(entry.line, "the address list is empty", "list addresses or domains, with commas");
    return result;
}

Pkcs11Uri Parser::read_uri(const Entry &entry, const std::string &key) const {
    Pkcs11Uri uri;
    try {
        uri = Pkcs11Uri::parse(entry.value);
    } catch (const Error &error) {
        fail(entry.line, "setting '" + key + "': " + error.what(),
             "write an RFC 7512 URI such as pkcs11:token=Mail;object=signing-key");
    }
    if (uri.pin_value || uri.pin_source)
        fail(entry.line, "setting '" + key + "' carries a PIN (pin-value or pin-source)",
             "remove it from the URI and set pin_file in the global settings");
    return uri;
}

// Fills the token attributes that the key URI leaves open from the global token URI.
Pkcs11Uri inherit_token(Pkcs11Uri uri, const Pkcs11Uri &token) {
    if (!uri.token)
        uri.token = token.token;
    if (!uri.manufacturer)
        uri.manufacturer = token.manufacturer;
    if (!uri.serial)
        uri.serial = token.serial;
    if (!uri.model)
        uri.model = token.model;
    if (!uri.slot_id)
        uri.slot_id = token.slot_id;
    return uri;
}

KeyReference Parser::read_key(const Section &section, const Config &config) const {
    KeyReference reference;
    const Entry &key =
        require(section, "key", "name the private key, e.g. key = pkcs11:object=signing-key");
    reference.uri = inherit_token(read_uri(key, "key"), config.token);
    if (reference.uri.type && *reference.uri.type != "private")
        fail(key.line, "the key URI names type=" + *reference.uri.type,
             "use type=private, or leave type out");
    reference.uri.type = "private";

    if (const Entry *certificate = find(section, "certificate")) {
        if (is_pkcs11_uri(certificate->value))
            reference.certificate_uri =
                inherit_token(read_uri(*certificate, "certificate"), config.token);
        else
            reference.certificate_file = certificate->value;
    }
    if (const Entry *chain = find(section, "chain"))
        reference.chain_file = chain->value;
    return reference;
}

void Parser::read_global(const Section &section, Config &config) {
    check_keys(section, {"socket", "module", "token", "pin_file", "sessions", "log", "authserv_id",
                         "trusted_networks", "retry_initial", "retry_max", "shutdown_timeout"});

    const Entry &socket = require(section, "socket",
                                  "add e.g. socket = inet:8891@127.0.0.1 or "
                                  "socket = unix:/run/p11smime-milter/milter.sock");
    const std::string &value = socket.value;
    bool unix_socket = (value.rfind("unix:/", 0) == 0 || value.rfind("local:/", 0) == 0);
    bool inet_socket = (value.rfind("inet:", 0) == 0 || value.rfind("inet6:", 0) == 0) &&
                       value.find('@') != std::string::npos;
    if (!unix_socket && !inet_socket)
        fail(socket.line, "socket '" + value + "' is neither unix:/PATH nor inet:PORT@HOST",
             "write socket = unix:/run/p11smime-milter/milter.sock or "
             "socket = inet:8891@127.0.0.1");
    config.socket = value;

    if (const Entry *module = find(section, "module"))
        config.module = module->value;
    if (const Entry *token = find(section, "token")) {
        config.token = read_uri(*token, "token");
        if (config.token.object || config.token.id || config.token.type)
            fail(token->line, "the token URI names an object",
                 "keep only token attributes here (token=, serial=, ...) and name keys in "
                 "the [sign] and [decrypt] sections");
    }
    if (const Entry *pin_file = find(section, "pin_file")) {
        config.pin_file = pin_file->value;
        config.pin_file_line = pin_file->line;
    }
    config.sessions = read_int(section, "sessions", config.sessions, 1, max_sessions);
    if (const Entry *id = find(section, "authserv_id"))
        config.authserv_id = id->value;
    if (const Entry *log = find(section, "log"); log && log->value == "syslog")
        config.log = LogTarget::syslog;
    else if (log && log->value != "stderr")
        fail(log->line, "log is '" + log->value + "'", "write log = stderr or log = syslog");
    read_networks(section, config);
    read_timing(section, config);
}

void Parser::read_networks(const Section &section, Config &config) {
    const Entry *networks = find(section, "trusted_networks");
    std::vector<std::string> items =
        networks ? split_list(networks->value) : std::vector<std::string>{"127.0.0.0/8", "::1"};
    for (const auto &item : items) {
        std::optional<Network> network = parse_network(item);
        if (!network)
            fail(networks->line, "'" + item + "' is not a network in CIDR notation",
                 "write e.g. trusted_networks = 127.0.0.0/8, ::1, 192.0.2.0/24");
        config.trusted_networks.push_back(*network);
    }
}

void Parser::read_timing(const Section &section, Config &config) {
    config.retry_initial_seconds =
        read_int(section, "retry_initial", config.retry_initial_seconds, 1, 3600);
    config.retry_max_seconds = read_int(section, "retry_max", config.retry_max_seconds, 1, 3600);
    if (config.retry_max_seconds < config.retry_initial_seconds)
        fail(find(section, "retry_max")->line, "retry_max is less than retry_initial",
             "make retry_max at least " + std::to_string(config.retry_initial_seconds));
    config.shutdown_timeout_seconds =
        read_int(section, "shutdown_timeout", config.shutdown_timeout_seconds, 0, 3600);
}

SignRule Parser::read_sign(const Section &section, const Config &config) {
    check_keys(section, {"senders", "key", "certificate", "chain", "digest", "rsa_pss", "opaque"});
    SignRule rule;
    rule.line = section.line;
    rule.senders = read_patterns(require(section, "senders",
                                         "list the From addresses or domains to sign for, "
                                         "e.g. senders = example.org"));
    rule.key = read_key(section, config);
    if (const Entry *digest = find(section, "digest")) {
        rule.digest = lowercase(digest->value);
        if (rule.digest != "sha256" && rule.digest != "sha384" && rule.digest != "sha512")
            fail(digest->line, "digest '" + digest->value + "' is not supported",
                 "write sha256, sha384 or sha512, or delete the line for the key's default");
    }
    rule.rsa_pss = read_bool(section, "rsa_pss", false);
    rule.opaque = read_bool(section, "opaque", false);
    return rule;
}

DecryptRule Parser::read_decrypt(const Section &section, const Config &config) {
    check_keys(section, {"recipients", "key", "certificate"});
    DecryptRule rule;
    rule.line = section.line;
    rule.recipients = read_patterns(require(section, "recipients",
                                            "list the recipient addresses or domains whose "
                                            "mail this key decrypts"));
    rule.key = read_key(section, config);
    return rule;
}

void Parser::read_verify(const Section &section, Config &config) {
    if (config.verify.enabled)
        fail(section.line, "a second [verify] section",
             "merge the two: there is one set of trust anchors");
    check_keys(section, {"recipients", "ca_file", "ca_path", "system_ca", "sender_check"});
    VerifySettings &verify = config.verify;
    verify.enabled = true;
    if (const Entry *recipients = find(section, "recipients"))
        verify.recipients = read_patterns(*recipients);
    if (const Entry *file = find(section, "ca_file"))
        verify.ca_file = file->value;
    if (const Entry *path = find(section, "ca_path"))
        verify.ca_path = path->value;
    verify.system_ca = read_bool(section, "system_ca", true);
    verify.sender_check = read_bool(section, "sender_check", true);
    if (!verify.system_ca && !verify.ca_file && !verify.ca_path)
        fail(section.line, "[verify] trusts no certificate authority",
             "set ca_file or ca_path, or system_ca = yes");
}

Config Parser::interpret(const std::vector<Section> &sections) {
    Config config;
    config.file = file_;
    read_global(sections.front(), config);
    for (size_t i = 1; i < sections.size(); ++i) {
        const Section &section = sections[i];
        if (section.name == "sign")
            config.sign_rules.push_back(read_sign(section, config));
        else if (section.name == "decrypt")
            config.decrypt_rules.push_back(read_decrypt(section, config));
        else
            read_verify(section, config);
    }

    bool uses_keys = !config.sign_rules.empty() || !config.decrypt_rules.empty();
    if (uses_keys && !config.pin_file)
        fail(sections.front().line, "the rules use token keys but no pin_file is set",
             "add pin_file = /etc/p11smime-milter/pin, or "
             "pin_file = ${CREDENTIALS_DIRECTORY}/token-pin under systemd");
    if (!uses_keys && !config.verify.enabled)
        fail(sections.back().line, "no [sign], [decrypt] or [verify] section",
             "add at least one rule; docs/milter.conf.example shows each");
    return config;
}

} // namespace

ConfigError::ConfigError(const std::string &file, int line, const std::string &message,
                         std::string hint)
    : Error(file + (line > 0 ? ":" + std::to_string(line) : "") + ": " + message, std::move(hint)),
      file_(file), line_(line) {}

std::string KeyReference::identity() const {
    return uri.to_string() + "\n" + (certificate_uri ? certificate_uri->to_string() : "") + "\n" +
           certificate_file.value_or("") + "\n" + chain_file.value_or("");
}

bool AddressPatterns::matches(const std::string &address) const {
    std::string lower = lowercase(address);
    size_t at = lower.rfind('@');
    std::string domain = at == std::string::npos ? std::string() : lower.substr(at + 1);
    for (const auto &pattern : patterns) {
        bool is_domain = pattern.find('@') == std::string::npos;
        if (is_domain ? domain == pattern : lower == pattern)
            return true;
    }
    return false;
}

bool Network::contains(int address_family, const unsigned char *bytes) const {
    if (address_family != family)
        return false;
    int full_bytes = prefix_length / 8;
    if (std::memcmp(address, bytes, static_cast<size_t>(full_bytes)) != 0)
        return false;
    int remaining_bits = prefix_length % 8;
    if (remaining_bits == 0)
        return true;
    unsigned char mask = static_cast<unsigned char>(0xff << (8 - remaining_bits));
    return (address[full_bytes] & mask) == (bytes[full_bytes] & mask);
}

std::optional<Network> parse_network(const std::string &text) {
    Network network;
    size_t slash = text.find('/');
    std::string host = text.substr(0, slash);
    if (inet_pton(AF_INET, host.c_str(), network.address) == 1) {
        network.family = AF_INET;
        network.prefix_length = 32;
    } else if (inet_pton(AF_INET6, host.c_str(), network.address) == 1) {
        network.family = AF_INET6;
        network.prefix_length = 128;
    } else {
        return std::nullopt;
    }
    if (slash == std::string::npos)
        return network;

    std::string prefix = text.substr(slash + 1);
    if (prefix.empty() || prefix.size() > 3 ||
        !std::all_of(prefix.begin(), prefix.end(),
                     [](unsigned char c) { return std::isdigit(c); }))
        return std::nullopt;
    int length = std::stoi(prefix);
    if (length > network.prefix_length)
        return std::nullopt;
    network.prefix_length = length;
    return network;
}

Config parse_config(std::string_view text, const std::string &file) {
    Parser parser(file);
    return parser.interpret(parser.read_sections(text));
}

Config load_config(const std::string &path) {
    std::ifstream stream(path, std::ios::binary);
    if (!stream)
        throw ConfigError(
            path, 0, "cannot read the configuration file: " + std::string(std::strerror(errno)),
            "check the path given with --config and its permissions");
    std::ostringstream text;
    text << stream.rdbuf();
    return parse_config(text.str(), path);
}

std::string resolve_pin_file(const Config &config, const char *credentials_directory) {
    const std::string &path = config.pin_file.value_or("");
    if (path.rfind(credentials_variable, 0) != 0)
        return path;
    if (!credentials_directory || !*credentials_directory)
        throw ConfigError(config.file, config.pin_file_line,
                          "pin_file uses ${CREDENTIALS_DIRECTORY}, which is not set",
                          "start the milter from a systemd unit with LoadCredential=, or "
                          "give pin_file a plain path");
    return credentials_directory + path.substr(credentials_variable.size());
}

} // namespace p11smime::milter
