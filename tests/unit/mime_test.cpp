#include <doctest/doctest.h>

#include <string>

#include "cms/mime.h"

using namespace p11smime;

TEST_CASE("crlf conversion leaves existing CRLF alone") {
    CHECK(to_crlf("a\nb\r\nc\n") == "a\r\nb\r\nc\r\n");
    CHECK(to_crlf("") == "");
    CHECK(to_crlf("\n") == "\r\n");
    CHECK(to_crlf("lone\rcr") == "lone\rcr");
}

TEST_CASE("lf conversion removes only CR before LF") {
    CHECK(to_lf("a\r\nb\rc\n") == "a\nb\rc\n");
}

TEST_CASE("transfer encoding is needed for 8-bit, NUL and long lines") {
    CHECK_FALSE(needs_transfer_encoding("plain ascii\r\n"));
    CHECK(needs_transfer_encoding("caf\xc3\xa9\n"));
    CHECK(needs_transfer_encoding(std::string("nul\0byte", 8)));
    CHECK(needs_transfer_encoding(std::string(999, 'x') + "\n"));
    CHECK_FALSE(needs_transfer_encoding(std::string(998, 'x') + "\r\n"));
}

TEST_CASE("split message separates routing and content headers") {
    std::string message = "From: Alice <alice@example.org>\n"
                          "To: bob@example.org\n"
                          "Subject: folded\n"
                          " subject line\n"
                          "MIME-Version: 1.0\n"
                          "Content-Type: text/plain; charset=us-ascii\n"
                          "\n"
                          "Body line  \n";
    SplitMessage split = split_message(message);
    REQUIRE(split.routing_headers.size() == 4);
    CHECK(split.routing_headers[2].raw == "Subject: folded\n subject line\n");
    REQUIRE(split.content_headers.size() == 1);
    CHECK(split.content_headers[0].name == "Content-Type");
    CHECK(split.body == "Body line  \n");
    CHECK_FALSE(split.crlf);
    CHECK(split.from_address == "alice@example.org");
}

TEST_CASE("canonical entity keeps trailing whitespace and converts to CRLF") {
    std::string message = "From: a@example.org\n"
                          "Content-Type: text/plain\n"
                          "Content-Transfer-Encoding: quoted-printable\n"
                          "\n"
                          "soft=\n"
                          "break  \n";
    SplitMessage split = split_message(message);
    CHECK(canonical_entity(split, message) ==
          "Content-Type: text/plain\r\n"
          "Content-Transfer-Encoding: quoted-printable\r\n"
          "\r\n"
          "soft=\r\n"
          "break  \r\n");
}

TEST_CASE("canonical entity re-encodes an 8-bit body as 7-bit") {
    std::string message = "From: a@example.org\r\n"
                          "Content-Type: text/plain; charset=utf-8\r\n"
                          "Content-Transfer-Encoding: 8bit\r\n"
                          "\r\n"
                          "Gr\xc3\xbc\xc3\x9f" "e\r\n";
    SplitMessage split = split_message(message);
    CHECK(split.crlf);
    std::string entity = canonical_entity(split, message);
    CHECK_FALSE(needs_transfer_encoding(entity));
    CHECK(entity.find("Content-Transfer-Encoding: 8bit") == std::string::npos);
    bool quoted_printable = entity.find("quoted-printable") != std::string::npos;
    bool base64 = entity.find("base64") != std::string::npos;
    CHECK((quoted_printable || base64));
    CHECK(to_crlf(entity) == entity);
}

TEST_CASE("split message rejects input without headers") {
    CHECK_THROWS(split_message(""));
}
