#include <doctest/doctest.h>

#include <string>

#include "milter/filter.h"
#include "milter/message.h"

using namespace p11smime::milter;

namespace {

std::vector<HeaderField> sample_headers() {
    return {{"From", "Alice <alice@example.org>"},
            {"To", "bob@example.net"},
            {"Subject", "folded\n\tsubject"},
            {"Content-Type", "text/plain; charset=utf-8"},
            {"Content-Transfer-Encoding", "8bit"}};
}

} // namespace

TEST_CASE("message: assembled with CRLF, folding kept") {
    std::string message = assemble_message(sample_headers(), "body\r\n");
    CHECK(message == "From: Alice <alice@example.org>\r\n"
                     "To: bob@example.net\r\n"
                     "Subject: folded\r\n\tsubject\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Transfer-Encoding: 8bit\r\n"
                     "\r\n"
                     "body\r\n");
}

TEST_CASE("message: header fields parsed back in order") {
    std::string body;
    std::vector<HeaderField> fields =
        parse_header_fields(assemble_message(sample_headers(), "line 1\r\nline 2\r\n"), body);
    REQUIRE(fields.size() == 5);
    std::vector<HeaderField> expected = sample_headers();
    for (size_t i = 0; i < fields.size(); ++i) {
        CAPTURE(i);
        CHECK(fields[i].name == expected[i].name);
        CHECK(fields[i].value == expected[i].value);
    }
    CHECK(body == "line 1\r\nline 2\r\n");
}

TEST_CASE("message: LF input gives a CRLF body") {
    std::string body;
    std::vector<HeaderField> fields = parse_header_fields("Subject: x\n\na\nb\n", body);
    REQUIRE(fields.size() == 1);
    CHECK(fields[0].value == "x");
    CHECK(body == "a\r\nb\r\n");
}

TEST_CASE("edits: equal headers give no edit") {
    MessageEdits edits = compute_edits(sample_headers(), sample_headers(), {});
    CHECK(edits.headers.empty());
    CHECK_FALSE(edits.body);
}

TEST_CASE("edits: CRLF and LF folding compare equal") {
    std::vector<HeaderField> crlf = sample_headers();
    crlf[2].value = "folded\r\n\tsubject";
    CHECK(compute_edits(sample_headers(), crlf, {}).headers.empty());
}

TEST_CASE("edits: replaced content headers are removed and appended") {
    std::vector<HeaderField> desired = {sample_headers()[0],
                                        sample_headers()[1],
                                        sample_headers()[2],
                                        {"Content-Type", "multipart/signed; boundary=\"b\""}};
    MessageEdits edits = compute_edits(sample_headers(), desired, {});
    REQUIRE(edits.headers.size() == 3);
    CHECK(edits.headers[0].kind == HeaderEdit::Kind::remove);
    CHECK(edits.headers[0].name == "Content-Transfer-Encoding");
    CHECK(edits.headers[0].index == 1);
    CHECK(edits.headers[1].kind == HeaderEdit::Kind::remove);
    CHECK(edits.headers[1].name == "Content-Type");
    CHECK(edits.headers[2].kind == HeaderEdit::Kind::append);
    CHECK(edits.headers[2].name == "Content-Type");
    CHECK(edits.headers[2].value == "multipart/signed; boundary=\"b\"");
}

TEST_CASE("edits: repeated names removed from the last index down") {
    std::vector<HeaderField> original = {{"X-Note", "a"}, {"X-Note", "b"}, {"X-Note", "c"}};
    std::vector<HeaderField> desired = {{"x-note", "b"}};
    MessageEdits edits = compute_edits(original, desired, {});
    REQUIRE(edits.headers.size() == 2);
    CHECK(edits.headers[0].index == 3);
    CHECK(edits.headers[1].index == 1);
    CHECK(edits.headers[0].kind == HeaderEdit::Kind::remove);
    CHECK(edits.headers[1].kind == HeaderEdit::Kind::remove);
}

TEST_CASE("edits: trace fields go to the top in their order") {
    std::vector<HeaderField> trace = {{"X-First", "1"}, {"X-Second", "2"}};
    MessageEdits edits = compute_edits(sample_headers(), sample_headers(), trace);
    REQUIRE(edits.headers.size() == 2);
    // Each is inserted at index 0, so the last inserted ends up first.
    CHECK(edits.headers[0].name == "X-Second");
    CHECK(edits.headers[1].name == "X-First");
    CHECK(edits.headers[0].kind == HeaderEdit::Kind::insert_at_top);
}

TEST_CASE("header comment: printable ASCII without delimiters") {
    CHECK(header_comment("bad (sig) \"x\"\\") == "bad 'sig' 'x''");
    CHECK(header_comment("line\nnext\x01") == "line next");
    CHECK(header_comment(std::string(300, 'a')).size() == 200);
}
