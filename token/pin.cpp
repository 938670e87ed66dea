#include "pin.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <openssl/crypto.h>

#include "common/error.h"

namespace p11smime {

// Longest PIN accepted from a file; PKCS#11 tokens allow far less, so a longer file is a
// mistake such as a key file given in place of a PIN file.
constexpr size_t max_pin_file_size = 256;

SecurePin::SecurePin(std::vector<char> &&characters) : buffer_(std::move(characters)) {
    buffer_.push_back('\0');
}

SecurePin::SecurePin(SecurePin &&other) noexcept : buffer_(std::move(other.buffer_)) {
    other.buffer_.clear();
}

SecurePin &SecurePin::operator=(SecurePin &&other) noexcept {
    if (this != &other) {
        wipe();
        buffer_ = std::move(other.buffer_);
        other.buffer_.clear();
    }
    return *this;
}

SecurePin::~SecurePin() { wipe(); }

void SecurePin::wipe() noexcept {
    if (!buffer_.empty())
        OPENSSL_cleanse(buffer_.data(), buffer_.size());
    buffer_.clear();
}

namespace {

// Reads at most max_pin_file_size + 1 bytes into a buffer that is wiped by the caller's
// SecurePin, so the PIN never sits in an unmanaged string.
std::vector<char> read_bounded(int fd, const std::string &path) {
    std::vector<char> data(max_pin_file_size + 1);
    size_t length = 0;
    while (length < data.size()) {
        ssize_t count = read(fd, data.data() + length, data.size() - length);
        if (count < 0 && errno == EINTR)
            continue;
        if (count < 0) {
            OPENSSL_cleanse(data.data(), data.size());
            throw Error("cannot read PIN file '" + path + "': " + std::strerror(errno));
        }
        if (count == 0)
            break;
        length += static_cast<size_t>(count);
    }
    if (length > max_pin_file_size) {
        OPENSSL_cleanse(data.data(), data.size());
        throw Error("PIN file '" + path + "' is longer than " +
                        std::to_string(max_pin_file_size) + " bytes",
                    "the file must contain only the PIN");
    }
    data.resize(length);
    return data;
}

void strip_line_ending(std::vector<char> &data) {
    for (size_t i = 0; i < data.size(); ++i) {
        if (data[i] == '\n' || data[i] == '\r') {
            OPENSSL_cleanse(data.data() + i, data.size() - i);
            data.resize(i);
            return;
        }
    }
}

} // namespace

SecurePin read_pin_file(const std::string &path, bool &group_or_other_readable) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        throw Error("cannot open PIN file '" + path + "': " + std::strerror(errno),
                    "check the path given to --pin-file or pin-source");

    struct stat status {};
    group_or_other_readable = fstat(fd, &status) == 0 && (status.st_mode & (S_IRGRP | S_IROTH));

    std::vector<char> data;
    try {
        data = read_bounded(fd, path);
    } catch (...) {
        close(fd);
        throw;
    }
    close(fd);

    strip_line_ending(data);
    SecurePin pin(std::move(data));
    if (pin.empty())
        throw Error("PIN file '" + path + "' is empty", "write the PIN on its first line");
    return pin;
}

std::string pin_source_path(const std::string &pin_source) {
    if (pin_source.rfind("file:", 0) == 0)
        return pin_source.substr(5);
    if (pin_source.find(':') == std::string::npos)
        return pin_source;
    throw Error("unsupported pin-source '" + pin_source + "'",
                "use pin-source=file:/path/to/pinfile or --pin-file");
}

} // namespace p11smime
