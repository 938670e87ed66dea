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

#include "common/error.h"

namespace p11smime::cli {

std::string read_input(const std::optional<std::string> &path) {
    if (!path || *path == "-") {
        std::ostringstream buffer;
        buffer << std::cin.rdbuf();
        if (std::cin.bad())
            throw Error("cannot read standard input");
        return buffer.str();
    }
    std::ifstream file(*path, std::ios::binary);
    if (!file)
        throw Error("cannot open input file '" + *path + "': " + std::strerror(errno));
    std::string data((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (file.bad())
        throw Error("cannot read input file '" + *path + "'");
    return data;
}

namespace {

void write_all(int fd, const char *data, size_t size, const std::string &name) {
    size_t written = 0;
    while (written < size) {
        ssize_t count = write(fd, data + written, size - written);
        if (count < 0 && errno == EINTR)
            continue;
        if (count < 0)
            throw Error("cannot write '" + name + "': " + std::strerror(errno));
        written += static_cast<size_t>(count);
    }
}

void write_all(int fd, const std::string &data, const std::string &name) {
    write_all(fd, data.data(), data.size(), name);
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
        if (close(fd) != 0)
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

InputMessage::InputMessage(const std::optional<std::string> &path) {
    if (!path || *path == "-") {
        read_standard_input();
        return;
    }
    source_.emplace(MessageSource::open_file(*path));
    if (source_->size() > max_file_in_memory)
        return;
    // A small file is read once into memory, instead of once for every pass over it.
    memory_ = source_->read_range(0, static_cast<size_t>(source_->size()));
    source_.emplace(MessageSource::from_memory(memory_));
}

void InputMessage::read_standard_input() {
    std::vector<char> buffer(256 * 1024);
    for (;;) {
        ssize_t count = read(STDIN_FILENO, buffer.data(), buffer.size());
        if (count < 0 && errno == EINTR)
            continue;
        if (count < 0)
            throw Error(std::string("cannot read standard input: ") + std::strerror(errno));
        if (count == 0)
            break;
        if (!spool_ && memory_.size() + static_cast<size_t>(count) > max_stdin_in_memory) {
            spool_ = std::make_unique<TempFile>(temporary_folder());
            write_all(spool_->fd(), memory_, "a temporary file");
            memory_.clear();
            memory_.shrink_to_fit();
        }
        if (spool_)
            write_all(spool_->fd(), buffer.data(), static_cast<size_t>(count), "a temporary file");
        else
            memory_.append(buffer.data(), static_cast<size_t>(count));
    }
    if (spool_)
        source_.emplace(MessageSource::from_fd(spool_->fd(), "standard input"));
    else
        source_.emplace(MessageSource::from_memory(memory_));
}

namespace {

// Output is written through a buffer of this size, so that a large message costs few system
// calls.
constexpr int output_buffer_size = 64 * 1024;

BioPtr buffered_fd_bio(int fd) {
    BioPtr chain(BIO_new(BIO_f_buffer()));
    BIO *file = BIO_new_fd(fd, BIO_NOCLOSE);
    if (!chain || !file || BIO_set_write_buffer_size(chain.get(), output_buffer_size) != 1) {
        BIO_free(file);
        throw OpensslError("cannot set up the output");
    }
    BIO_push(chain.get(), file);
    return chain;
}

void copy_to_standard_output(int fd) {
    if (lseek(fd, 0, SEEK_SET) != 0)
        throw Error(std::string("cannot read a temporary file: ") + std::strerror(errno));
    std::vector<char> buffer(output_buffer_size);
    for (;;) {
        ssize_t count = read(fd, buffer.data(), buffer.size());
        if (count < 0 && errno == EINTR)
            continue;
        if (count < 0)
            throw Error(std::string("cannot read a temporary file: ") + std::strerror(errno));
        if (count == 0)
            return;
        write_all(STDOUT_FILENO, buffer.data(), static_cast<size_t>(count), "standard output");
    }
}

} // namespace

OutputFile::OutputFile(const std::optional<std::string> &path) {
    if (!path || *path == "-") {
        folder_ = temporary_folder();
        spool_ = std::make_unique<TempFile>(folder_);
        fd_ = spool_->fd();
        bio_ = buffered_fd_bio(fd_);
        return;
    }
    path_ = *path;
    folder_ = folder_of(*path);
    std::vector<char> name(path->begin(), path->end());
    for (char c : std::string(".p11smime-XXXXXX"))
        name.push_back(c);
    name.push_back('\0');
    fd_ = mkstemp(name.data());
    if (fd_ < 0)
        throw Error("cannot create a file next to '" + *path + "': " + std::strerror(errno),
                    "check that the output folder exists and is writable");
    temporary_ = name.data();
    bio_ = buffered_fd_bio(fd_);
}

OutputFile::~OutputFile() {
    bio_.reset();
    if (!path_ || committed_)
        return;
    if (fd_ >= 0)
        close(fd_);
    unlink(temporary_.c_str());
}

void OutputFile::commit() {
    if (BIO_flush(bio_.get()) != 1)
        throw Error("cannot write '" + path_.value_or("standard output") + "'",
                    "check the free space of the output folder");
    if (!path_) {
        copy_to_standard_output(fd_);
        committed_ = true;
        return;
    }
    int fd = fd_;
    fd_ = -1;
    if (close(fd) != 0)
        throw Error("cannot write '" + *path_ + "': " + std::strerror(errno));
    if (rename(temporary_.c_str(), path_->c_str()) != 0)
        throw Error("cannot rename the output into '" + *path_ + "': " + std::strerror(errno));
    committed_ = true;
}

ProgressBar::ProgressBar(MessageSource &source) {
    if (source.size() <= min_size || !isatty(STDERR_FILENO))
        return;
    source_ = &source;
    source.set_progress([this](uint64_t done, uint64_t total) { show(done, total); });
}

ProgressBar::~ProgressBar() {
    if (!source_)
        return;
    source_->set_progress(nullptr);
    if (shown_)
        std::cerr << "\r\033[K" << std::flush; // erase the bar
}

void ProgressBar::show(uint64_t done, uint64_t total) {
    int percent = static_cast<int>(std::min<uint64_t>(done, total) * 100 / total);
    if (percent == last_percent_)
        return;
    last_percent_ = percent;
    shown_ = true;
    constexpr int width = 30;
    int filled = percent * width / 100;
    std::cerr << "\rp11smime: [" << std::string(filled, '#') << std::string(width - filled, ' ')
              << "] " << percent << "% of " << total / (1024 * 1024) << " MiB" << std::flush;
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
