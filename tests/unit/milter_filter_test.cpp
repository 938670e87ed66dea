#include <doctest/doctest.h>

#include <string>

#include "milter/filter.h"

using namespace p11smime::milter;

namespace {

const std::string configuration = "socket = unix:/m\n"
                                  "pin_file = /p\n"
                                  "authserv_id = gw.example.org\n"
                                  "[sign]\n"
                                  "senders = example.org\n"
                                  "key = pkcs11:token=t;object=sign\n"
                                  "[decrypt]\n"
                                  "recipients = bob@example.org\n"
                                  "key = pkcs11:token=t;object=decrypt\n";

// A key store that was never configured: every lease raises TokenUnavailable, as while the
// token is lost.
struct Fixture {
    Logger logger;
    KeyStore keys{logger};
    Runtime runtime{parse_config(configuration, "test.conf"), "gw.example.org"};
    Envelope envelope{"ABC123", "alice@example.org", {"carol@example.net"}, true};
};

std::vector<HeaderField> plain_headers(const std::string &from) {
    return {{"From", from},
            {"To", "carol@example.net"},
            {"Subject", "hello"},
            {"Content-Type", "text/plain"}};
}

bool has_edit(const FilterResult &result, HeaderEdit::Kind kind, const std::string &name) {
    for (const auto &edit : result.edits.headers)
        if (edit.kind == kind && edit.name == name)
            return true;
    return false;
}

} // namespace

TEST_CASE("filter: sign rule without token tempfails") {
    Fixture fixture;
    FilterResult result = filter_message(fixture.runtime, fixture.keys, fixture.envelope,
                                         plain_headers("Alice <alice@example.org>"), "hi\r\n");
    CHECK(result.verdict == Verdict::tempfail);
    CHECK(result.reply_code == "451");
    CHECK(result.extended_code == "4.7.0");
    CHECK(result.action == "sign");
    CHECK(result.result == "tempfail");
    CHECK(result.edits.headers.empty());
    CHECK_FALSE(result.edits.body);
}

TEST_CASE("filter: untrusted client is not signed") {
    Fixture fixture;
    fixture.envelope.trusted_client = false;
    FilterResult result = filter_message(fixture.runtime, fixture.keys, fixture.envelope,
                                         plain_headers("alice@example.org"), "hi\r\n");
    CHECK(result.verdict == Verdict::accept);
    CHECK(result.action == "none");
    CHECK(result.detail.find("not trusted") != std::string::npos);
    CHECK_FALSE(result.edits.body);
}

TEST_CASE("filter: other senders pass unchanged") {
    Fixture fixture;
    FilterResult result = filter_message(fixture.runtime, fixture.keys, fixture.envelope,
                                         plain_headers("mallory@example.net"), "hi\r\n");
    CHECK(result.verdict == Verdict::accept);
    CHECK(result.action == "none");
    CHECK(result.edits.headers.empty());
    CHECK_FALSE(result.edits.body);
}

TEST_CASE("filter: forged trace fields are removed") {
    Fixture fixture;
    std::vector<HeaderField> headers = plain_headers("mallory@example.net");
    headers.push_back({"Authentication-Results", "GW.example.org; smime=pass"});
    headers.push_back({"Authentication-Results", "other.example; smime=pass"});
    headers.push_back({"X-P11SMIME-Decrypted", "gw.example.org; signature=pass"});
    FilterResult result =
        filter_message(fixture.runtime, fixture.keys, fixture.envelope, headers, "hi\r\n");
    REQUIRE(result.edits.headers.size() == 2);
    CHECK(result.edits.headers[0].name == "X-P11SMIME-Decrypted");
    CHECK(result.edits.headers[0].index == 1);
    CHECK(result.edits.headers[1].name == "Authentication-Results");
    CHECK(result.edits.headers[1].index == 1);
    CHECK(has_edit(result, HeaderEdit::Kind::remove, "Authentication-Results"));
}

TEST_CASE("filter: encrypted mail without token tempfails") {
    Fixture fixture;
    fixture.envelope.recipients = {"bob@example.org"};
    std::vector<HeaderField> headers = {
        {"From", "carol@example.net"},
        {"To", "bob@example.org"},
        {"Content-Type", "application/pkcs7-mime; smime-type=enveloped-data"}};
    FilterResult result =
        filter_message(fixture.runtime, fixture.keys, fixture.envelope, headers, "MIAG\r\n");
    CHECK(result.verdict == Verdict::tempfail);
    CHECK(result.action == "decrypt");
}

TEST_CASE("filter: encrypted mail to an uncovered recipient passes") {
    Fixture fixture;
    fixture.envelope.recipients = {"bob@example.org", "eve@example.net"};
    std::vector<HeaderField> headers = {
        {"From", "carol@example.net"},
        {"To", "bob@example.org, eve@example.net"},
        {"Content-Type", "application/pkcs7-mime; smime-type=enveloped-data"}};
    FilterResult result =
        filter_message(fixture.runtime, fixture.keys, fixture.envelope, headers, "MIAG\r\n");
    CHECK(result.verdict == Verdict::accept);
    CHECK(result.action == "none");
    CHECK(result.detail.find("eve@example.net has no decrypt rule") != std::string::npos);
    CHECK_FALSE(result.edits.body);
}
