#include "cli/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <vector>

#include <openssl/crypto.h>

#include "cms/limits.h"
#include "common/error.h"

namespace p11smime::cli {

namespace {

// Reads at most max_message_size + 1 bytes from stream, so an endless or huge input costs no
// more memory than the largest message p11smime accepts.
std::string read_bounded(std::istream &stream, const std::string &name) {
    std::string data;
    char chunk[65536];
    while (stream && data.size() <= max_message_size) {
        stream.read(chunk, sizeof chunk);
        data.append(chunk, static_cast<size_t>(stream.gcount()));
    }
    if (stream.bad())
        throw Error("cannot read " + name);
    if (data.size() > max_message_size)
        throw Error(name + " is larger than the limit of " +
                        std::to_string(max_message_size / (1024 * 1024)) + " MiB",
                    "p11smime handles messages up to that size");
    return data;
}

} // namespace

std::string read_input(const std::optional<std::string> &path) {
    if (!path || *path == "-")
        return read_bounded(std::cin, "standard input");
    std::ifstream file(*path, std::ios::binary);
    if (!file)
        throw Error("cannot open input file '" + *path + "': " + std::strerror(errno));
    return read_bounded(file, "input file '" + *path + "'");
}

namespace {

void write_all(int fd, const std::string &data, const std::string &name) {
    size_t written = 0;
    while (written < data.size()) {
        ssize_t count = write(fd, data.data() + written, data.size() - written);
        if (count < 0 && errno == EINTR)
            continue;
        if (count < 0)
            throw Error("cannot write '" + name + "': " + std::strerror(errno));
        written += static_cast<size_t>(count);
    }
}

} // namespace

void write_output(const std::optional<std::string> &path, const std::string &data) {
    if (!path || *path == "-") {
        write_all(STDOUT_FILENO, data, "standard output");
        return;
    }

    std::string temporary = *path + ".p11smime-XXXXXX";
    std::vector<char> name(temporary.begin(), temporary.end());
    name.push_back('\0');
    int fd = mkstemp(name.data());
    if (fd < 0)
        throw Error("cannot create a file next to '" + *path + "': " + std::strerror(errno),
                    "check that the output folder exists and is writable");
    try {
        write_all(fd, data, *path);
        if (fsync(fd) != 0 || close(fd) != 0)
            throw Error("cannot write '" + *path + "': " + std::strerror(errno));
        fd = -1;
        if (rename(name.data(), path->c_str()) != 0)
            throw Error("cannot rename the output into '" + *path + "': " +
                        std::strerror(errno));
    } catch (...) {
        if (fd >= 0)
            close(fd);
        unlink(name.data());
        throw;
    }
}

bool terminal_available() {
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

namespace {

// Restores the terminal's echo setting however the prompt ends.
class EchoOff {
  public:
    explicit EchoOff(int fd) : fd_(fd) {
        active_ = tcgetattr(fd_, &saved_) == 0;
        if (!active_)
            return;
        termios quiet = saved_;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        tcsetattr(fd_, TCSAFLUSH, &quiet);
    }
    ~EchoOff() {
        if (active_)
            tcsetattr(fd_, TCSAFLUSH, &saved_);
    }
    EchoOff(const EchoOff &) = delete;
    EchoOff &operator=(const EchoOff &) = delete;

  private:
    int fd_;
    termios saved_{};
    bool active_ = false;
};

std::vector<char> read_line(int fd) {
    std::vector<char> line;
    line.reserve(64); // no reallocation, so no unwiped copy, for PINs under 64 characters
    char c = 0;
    while (read(fd, &c, 1) == 1 && c != '\n' && c != '\r') {
        if (line.size() == line.capacity()) {
            std::vector<char> bigger;
            bigger.reserve(line.capacity() * 2);
            bigger.assign(line.begin(), line.end());
            OPENSSL_cleanse(line.data(), line.size());
            line.swap(bigger);
        }
        line.push_back(c);
    }
    c = 0;
    return line;
}

} // namespace

SecurePin prompt_pin_on_tty(const std::string &token_label) {
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        throw Error("cannot open /dev/tty to ask for the PIN",
                    "pass --pin-file FILE when no terminal is attached");
    std::string prompt = "PIN for token '" + token_label + "': ";
    SecurePin pin;
    {
        EchoOff echo_off(fd);
        (void)!write(fd, prompt.data(), prompt.size());
        pin = SecurePin(read_line(fd));
        (void)!write(fd, "\n", 1);
    }
    close(fd);
    if (pin.empty())
        throw Error("no PIN entered for token '" + token_label + "'");
    return pin;
}

} // namespace p11smime::cli
