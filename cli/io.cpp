#include "cli/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <climits>
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
    struct stat status {};
    if (stat(path->c_str(), &status) == 0 && S_ISDIR(status.st_mode))
        throw Error("input '" + *path + "' is a directory", "give --in a message file");
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

// Writes a temporary file in the target's folder and renames it over the target, so a failure
// leaves no partial file and readers see either the old or the new content.
void write_atomically(const std::string &path, const std::string &data, mode_t mode) {
    std::string temporary = path + ".p11smime-XXXXXX";
    std::vector<char> name(temporary.begin(), temporary.end());
    name.push_back('\0');
    int fd = mkstemp(name.data());
    if (fd < 0)
        throw Error("cannot create a file next to '" + path + "': " + std::strerror(errno),
                    "check that the output folder exists and is writable");
    try {
        write_all(fd, data, path);
        if (fchmod(fd, mode) != 0 || fsync(fd) != 0 || close(fd) != 0)
            throw Error("cannot write '" + path + "': " + std::strerror(errno));
        fd = -1;
        if (rename(name.data(), path.c_str()) != 0)
            throw Error("cannot rename the output into '" + path + "': " +
                        std::strerror(errno));
    } catch (...) {
        if (fd >= 0)
            close(fd);
        unlink(name.data());
        throw;
    }
}

// Writes into an existing file that is not a regular file, such as a FIFO or a device, where
// a rename would replace the node instead of writing through it.
void write_special(const std::string &path, const std::string &data) {
    int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        throw Error("cannot open '" + path + "' for writing: " + std::strerror(errno));
    try {
        write_all(fd, data, path);
    } catch (...) {
        close(fd);
        throw;
    }
    if (close(fd) != 0)
        throw Error("cannot write '" + path + "': " + std::strerror(errno));
}

// Returns the mode a new output file gets: that of the file it replaces, else 0666 less the
// umask, as the shell's redirection would give.
mode_t output_mode(const struct stat *existing) {
    if (existing)
        return existing->st_mode & 07777;
    mode_t mask = umask(0);
    umask(mask);
    return 0666 & ~mask;
}

std::string resolve_symlink(const std::string &path) {
    std::vector<char> target(PATH_MAX + 1, '\0');
    if (!realpath(path.c_str(), target.data()))
        throw Error("cannot resolve the output link '" + path + "': " + std::strerror(errno));
    return target.data();
}

} // namespace

void write_output(const std::optional<std::string> &path_option, const std::string &data) {
    if (!path_option || *path_option == "-") {
        write_all(STDOUT_FILENO, data, "standard output");
        return;
    }

    std::string path = *path_option;
    struct stat status {};
    bool exists = lstat(path.c_str(), &status) == 0;
    if (exists && S_ISLNK(status.st_mode)) {
        path = resolve_symlink(path);
        exists = stat(path.c_str(), &status) == 0;
    }
    if (exists && S_ISDIR(status.st_mode))
        throw Error("output '" + path + "' is a directory", "give --out a file name");
    if (exists && !S_ISREG(status.st_mode)) {
        write_special(path, data);
        return;
    }
    write_atomically(path, data, output_mode(exists ? &status : nullptr));
}

void check_output_folder(const std::optional<std::string> &path) {
    if (!path || *path == "-")
        return;
    size_t slash = path->rfind('/');
    std::string folder = slash == std::string::npos ? "." : path->substr(0, slash + 1);
    struct stat status {};
    if (stat(folder.c_str(), &status) != 0 || !S_ISDIR(status.st_mode))
        throw Error("output folder '" + folder + "' does not exist",
                    "create it, or give --out a path in an existing folder");
    if (access(folder.c_str(), W_OK) != 0)
        throw Error("output folder '" + folder + "' is not writable",
                    "give --out a path in a folder you can write");
    if (stat(path->c_str(), &status) == 0 && S_ISDIR(status.st_mode))
        throw Error("output '" + *path + "' is a directory", "give --out a file name");
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
