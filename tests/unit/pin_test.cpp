#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "common/error.h"
#include "token/pin.h"

using p11smime::read_pin_file;
using p11smime::SecurePin;

namespace {

// A file in a fresh temporary folder, removed with the folder at the end of the test.
class TemporaryFile {
  public:
    TemporaryFile(const std::string &content, mode_t mode) {
        char folder[] = "/tmp/p11smime-pin-test.XXXXXX";
        folder_ = mkdtemp(folder);
        path_ = folder_ + "/pin";
        std::ofstream(path_, std::ios::binary) << content;
        chmod(path_.c_str(), mode);
    }
    ~TemporaryFile() {
        unlink(path_.c_str());
        rmdir(folder_.c_str());
    }
    const std::string &path() const { return path_; }

  private:
    std::string folder_;
    std::string path_;
};

} // namespace

TEST_CASE("pin file drops the line ending") {
    TemporaryFile file("123456\n", 0600);
    bool readable_by_others = true;
    SecurePin pin = read_pin_file(file.path(), readable_by_others);
    CHECK(std::string(pin.c_str()) == "123456");
    CHECK(pin.size() == 6);
    CHECK_FALSE(readable_by_others);
}

TEST_CASE("pin file keeps only the first line") {
    TemporaryFile file("9876\r\nsecond line\n", 0600);
    bool readable_by_others = false;
    CHECK(std::string(read_pin_file(file.path(), readable_by_others).c_str()) == "9876");
}

TEST_CASE("pin file readable by others is reported") {
    TemporaryFile file("1234", 0644);
    bool readable_by_others = false;
    read_pin_file(file.path(), readable_by_others);
    CHECK(readable_by_others);
}

TEST_CASE("pin file errors name the file") {
    bool readable_by_others = false;
    TemporaryFile empty("\n", 0600);
    try {
        read_pin_file(empty.path(), readable_by_others);
        FAIL("an empty PIN file was accepted");
    } catch (const p11smime::Error &error) {
        CHECK(std::string(error.what()).find(empty.path()) != std::string::npos);
    }
    CHECK_THROWS_AS(read_pin_file("/nonexistent/pin", readable_by_others), p11smime::Error);
    TemporaryFile huge(std::string(1000, '1'), 0600);
    CHECK_THROWS_AS(read_pin_file(huge.path(), readable_by_others), p11smime::Error);
}

TEST_CASE("pin buffer is emptied when moved from") {
    SecurePin first(std::vector<char>{'4', '2'});
    SecurePin second(std::move(first));
    CHECK(first.empty());
    CHECK(std::string(second.c_str()) == "42");
}

TEST_CASE("pin source accepts file URIs and paths only") {
    CHECK(p11smime::pin_source_path("file:/run/pin") == "/run/pin");
    CHECK(p11smime::pin_source_path("/run/pin") == "/run/pin");
    CHECK_THROWS_AS(p11smime::pin_source_path("https://example.invalid/pin"), p11smime::Error);
}

TEST_CASE("pin buffer is zeroed when cleared") {
    SecurePin pin(std::vector<char>{'8', '6', '7', '5', '3', '0', '9'});
    const char *characters = pin.c_str();
    const size_t size = pin.size();
    pin.clear();
    CHECK(pin.empty());
    // clear() keeps the vector's storage, so its old bytes can still be read here.
    for (size_t i = 0; i <= size; ++i)
        CHECK(characters[i] == '\0');
}

TEST_CASE("pin file buffer is zeroed past the line ending") {
    TemporaryFile file("2468\nsecret second line\n", 0600);
    bool readable_by_others = false;
    SecurePin pin = read_pin_file(file.path(), readable_by_others);
    CHECK(std::string(pin.c_str()) == "2468");
    // The bytes after the PIN (the rest of the file) were wiped before the buffer shrank.
    const char *characters = pin.c_str();
    for (size_t i = pin.size() + 1; i < 4 + 20; ++i)
        CHECK(characters[i] == '\0');
}
