#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <sys/socket.h>

#include <string>

#include "milter/config.h"

using namespace p11smime::milter;

namespace {

const std::string global = "socket = inet:8891@127.0.0.1\n"
                           "token = pkcs11:token=Mail%20HSM\n"
                           "pin_file = /etc/p11smime-milter/pin\n";

const std::string sign_section = "[sign]\n"
                                 "senders = alice@example.org, @Example.COM\n"
                                 "key = pkcs11:object=alice\n";

// Parses text and returns the error it raises, or fails the test when it parses.
ConfigError parse_error(const std::string &text) {
    try {
        parse_config(text, "test.conf");
    } catch (const ConfigError &error) {
        return error;
    }
    FAIL("the configuration parsed: " << text);
    return ConfigError("", 0, "");
}

} // namespace

TEST_CASE("config: minimal signing configuration") {
    Config config = parse_config(global + sign_section, "test.conf");
    CHECK(config.socket == "inet:8891@127.0.0.1");
    CHECK(config.sessions == 4);
    CHECK(config.log == LogTarget::stderr_stream);
    CHECK(config.retry_initial_seconds == 1);
    CHECK(config.retry_max_seconds == 60);
    REQUIRE(config.sign_rules.size() == 1);
    const SignRule &rule = config.sign_rules[0];
    CHECK(rule.line == 4);
    CHECK(rule.senders.patterns == std::vector<std::string>{"alice@example.org", "example.com"});
    CHECK(rule.key.uri.token == "Mail HSM");
    CHECK(rule.key.uri.object == "alice");
    CHECK(rule.key.uri.type == "private");
    CHECK_FALSE(rule.key.certificate_uri);
    CHECK_FALSE(rule.key.certificate_file);
}

TEST_CASE("config: comments, blank lines and CRLF") {
    std::string text = "# comment\r\n\r\n; another\r\n" + global + "  [ Sign ]  \r\n" +
                       "senders = example.org\r\nkey = pkcs11:object=k\r\n";
    Config config = parse_config(text, "test.conf");
    REQUIRE(config.sign_rules.size() == 1);
    CHECK(config.sign_rules[0].key.uri.object == "k");
}

TEST_CASE("config: key URI keeps its own token attributes") {
    Config config = parse_config(global + "[sign]\nsenders = example.org\n"
                                          "key = pkcs11:token=Other;object=k\n",
                                 "test.conf");
    CHECK(config.sign_rules[0].key.uri.token == "Other");
}

TEST_CASE("config: certificate as URI or file, and every section") {
    std::string text = global +
                       "sessions = 16\nlog = syslog\nauthserv_id = mx.example.org\n"
                       "trusted_networks = 10.0.0.0/8, 2001:db8::/32\n"
                       "retry_initial = 2\nretry_max = 30\nshutdown_timeout = 5\n" +
                       "[sign]\nsenders = example.org\nkey = pkcs11:object=s\n"
                       "certificate = pkcs11:object=s-cert;type=cert\nchain = /etc/chain.pem\n"
                       "digest = SHA384\nrsa_pss = yes\nopaque = on\n"
                       "[decrypt]\nrecipients = bob@example.org\nkey = pkcs11:object=d\n"
                       "certificate = /etc/d.pem\n"
                       "[verify]\nrecipients = example.org\nca_file = /etc/ca.pem\n"
                       "system_ca = no\nsender_check = false\n";
    Config config = parse_config(text, "test.conf");
    CHECK(config.sessions == 16);
    CHECK(config.log == LogTarget::syslog);
    CHECK(config.authserv_id == "mx.example.org");
    CHECK(config.trusted_networks.size() == 2);
    CHECK(config.retry_initial_seconds == 2);
    CHECK(config.retry_max_seconds == 30);
    CHECK(config.shutdown_timeout_seconds == 5);

    const SignRule &sign = config.sign_rules.at(0);
    REQUIRE(sign.key.certificate_uri);
    CHECK(sign.key.certificate_uri->object == "s-cert");
    CHECK(sign.key.certificate_uri->token == "Mail HSM");
    CHECK(sign.key.chain_file == "/etc/chain.pem");
    CHECK(sign.digest == "sha384");
    CHECK(sign.rsa_pss);
    CHECK(sign.opaque);

    const DecryptRule &decrypt = config.decrypt_rules.at(0);
    CHECK(decrypt.key.certificate_file == "/etc/d.pem");
    CHECK(decrypt.recipients.matches("Bob@Example.org"));

    CHECK(config.verify.enabled);
    CHECK(config.verify.ca_file == "/etc/ca.pem");
    CHECK_FALSE(config.verify.system_ca);
    CHECK_FALSE(config.verify.sender_check);
    REQUIRE(config.verify.recipients);
    CHECK(config.verify.recipients->matches("carol@example.org"));
}

TEST_CASE("config: errors name the file, the line and a fix") {
    struct Case {
        std::string text;
        int line;
        std::string message;
    };
    const Case cases[] = {
        {sign_section, 1, "lacks the setting 'socket'"},
        {global + "colour = blue\n" + sign_section, 4, "unknown setting 'colour'"},
        {global + "[encrypt]\n", 4, "unknown section [encrypt]"},
        {global + "[sign\n", 4, "has no closing ']'"},
        {global + "sessions = 2\nsessions = 3\n" + sign_section, 5, "repeats line 4"},
        {global + "sessions = 17\n" + sign_section, 4, "not a number from 1 to 16"},
        {global + "sessions = 0\n" + sign_section, 4, "not a number from 1 to 16"},
        {global + "sessions = many\n" + sign_section, 4, "'many', not a number"},
        {global + "log = journal\n" + sign_section, 4, "log is 'journal'"},
        {global + "trusted_networks = 10.0.0.0/33\n" + sign_section, 4, "not a network"},
        {global + "retry_initial = 10\nretry_max = 5\n" + sign_section, 5,
         "retry_max is less than retry_initial"},
        {"socket = tcp:8891\npin_file = /p\n" + sign_section, 1, "neither unix:/PATH"},
        {global + "just words\n", 4, "expected 'key = value'"},
        {global + "socket_x =\n", 4, "has no value"},
        {"socket = unix:/m\npin_file = /p\ntoken = pkcs11:token=x;object=y\n" + sign_section, 3,
         "names an object"},
        {global + "[sign]\nsenders = a@@example.org\nkey = pkcs11:object=k\n", 5,
         "not an address or domain"},
        {global + "[sign]\nsenders = ,\nkey = pkcs11:object=k\n", 5, "address list is empty"},
        {global + "[sign]\nsenders = example.org\n", 4, "[sign] lacks the setting 'key'"},
        {global + "[sign]\nsenders = example.org\nkey = pkcs11:object=k;pin-value=1234\n", 6,
         "carries a PIN"},
        {global + "[sign]\nsenders = example.org\nkey = pkcs11:object=k;type=cert\n", 6,
         "names type=cert"},
        {global + "[sign]\nsenders = example.org\nkey = /etc/key.pem\n", 6, "setting 'key'"},
        {global + "[sign]\nsenders = example.org\nkey = pkcs11:object=k\ndigest = md5\n", 7,
         "digest 'md5' is not supported"},
        {global + "[sign]\nsenders = example.org\nkey = pkcs11:object=k\nopaque = maybe\n", 7,
         "not yes or no"},
        {global + "[decrypt]\nkey = pkcs11:object=k\n", 4, "lacks the setting 'recipients'"},
        {global + "[verify]\n[verify]\n", 5, "a second [verify] section"},
        {global + "[verify]\nsystem_ca = no\n", 4, "trusts no certificate authority"},
        {global, 1, "no [sign], [decrypt] or [verify] section"},
        {"socket = inet:1@127.0.0.1\n" + sign_section, 1, "no pin_file is set"},
    };
    for (const Case &test : cases) {
        CAPTURE(test.text);
        ConfigError error = parse_error(test.text);
        CHECK(error.file() == "test.conf");
        CHECK(error.line() == test.line);
        CHECK(std::string(error.what()).find("test.conf:" + std::to_string(test.line) + ": ") ==
              0);
        CHECK(std::string(error.what()).find(test.message) != std::string::npos);
        CHECK_FALSE(error.hint().empty());
    }
}

TEST_CASE("config: the documented example parses") {
    Config config = load_config(TEST_DATA_DIR "/../../docs/milter.conf.example");
    CHECK(config.socket == "unix:/var/spool/postfix/p11smime/milter.sock");
    CHECK(config.sign_rules.size() == 2);
    CHECK(config.decrypt_rules.size() == 1);
    CHECK(config.verify.enabled);
    CHECK(resolve_pin_file(config, "/run/credentials/x") == "/run/credentials/x/token-pin");
}

TEST_CASE("config: verify alone needs no PIN file") {
    Config config = parse_config("socket = unix:/run/m.sock\n[verify]\n", "test.conf");
    CHECK(config.verify.enabled);
    CHECK_FALSE(config.pin_file);
}

TEST_CASE("config: load_config names an unreadable file") {
    try {
        load_config("/nonexistent/milter.conf");
        FAIL("load_config read a missing file");
    } catch (const ConfigError &error) {
        CHECK(std::string(error.what()).find("/nonexistent/milter.conf") == 0);
        CHECK_FALSE(error.hint().empty());
    }
}

TEST_CASE("config: PIN file in the systemd credentials directory") {
    Config config = parse_config(
        "socket = unix:/m\npin_file = ${CREDENTIALS_DIRECTORY}/token-pin\n" + sign_section,
        "test.conf");
    CHECK(resolve_pin_file(config, "/run/credentials/m.service") ==
          "/run/credentials/m.service/token-pin");
    CHECK_THROWS_AS(resolve_pin_file(config, nullptr), ConfigError);

    Config plain = parse_config(global + sign_section, "test.conf");
    CHECK(resolve_pin_file(plain, nullptr) == "/etc/p11smime-milter/pin");
}

TEST_CASE("address patterns: mailbox and domain") {
    AddressPatterns patterns{{"alice@example.org", "example.com"}};
    CHECK(patterns.matches("alice@example.org"));
    CHECK(patterns.matches("ALICE@Example.Org"));
    CHECK(patterns.matches("bob@example.com"));
    CHECK_FALSE(patterns.matches("bob@example.org"));
    CHECK_FALSE(patterns.matches("bob@sub.example.com"));
    CHECK_FALSE(patterns.matches("example.com"));
    CHECK_FALSE(patterns.matches(""));
}

TEST_CASE("network: CIDR parsing and containment") {
    auto v4 = [](const char *text) {
        unsigned char bytes[16] = {};
        inet_pton(AF_INET, text, bytes);
        return std::string(reinterpret_cast<char *>(bytes), 16);
    };
    auto v6 = [](const char *text) {
        unsigned char bytes[16] = {};
        inet_pton(AF_INET6, text, bytes);
        return std::string(reinterpret_cast<char *>(bytes), 16);
    };
    auto bytes = [](const std::string &text) {
        return reinterpret_cast<const unsigned char *>(text.data());
    };

    std::optional<Network> loopback = parse_network("127.0.0.0/8");
    REQUIRE(loopback);
    CHECK(loopback->contains(AF_INET, bytes(v4("127.1.2.3"))));
    CHECK_FALSE(loopback->contains(AF_INET, bytes(v4("128.0.0.1"))));
    CHECK_FALSE(loopback->contains(AF_INET6, bytes(v6("::1"))));

    std::optional<Network> odd = parse_network("192.0.2.128/25");
    REQUIRE(odd);
    CHECK(odd->contains(AF_INET, bytes(v4("192.0.2.200"))));
    CHECK_FALSE(odd->contains(AF_INET, bytes(v4("192.0.2.100"))));

    std::optional<Network> host = parse_network("::1");
    REQUIRE(host);
    CHECK(host->prefix_length == 128);
    CHECK(host->contains(AF_INET6, bytes(v6("::1"))));
    CHECK_FALSE(host->contains(AF_INET6, bytes(v6("::2"))));

    CHECK_FALSE(parse_network("10.0.0.0/33"));
    CHECK_FALSE(parse_network("10.0.0.0/"));
    CHECK_FALSE(parse_network("10.0.0.0/a"));
    CHECK_FALSE(parse_network("example.org"));
}
