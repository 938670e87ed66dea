#include "cli/io.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <mutex>
#include <sstream>
#include <vector>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "cms/limits.h"
#include "common/error.h"

namespace p11smime::cli {

namespace {

// Reads at most max_message_size() + 1 bytes from stream, so an endless or huge input costs no
// more memory than the largest message p11smime accepts.
std::string read_bounded(std::istream &stream, const std::string &name) {
    size_t bound = max_message_size();
    std::string data;
    char chunk[65536];
    while (stream && (bound == 0 || data.size() <= bound)) {
        stream.read(chunk, sizeof chunk);
        data.append(chunk, static_cast<size_t>(stream.gcount()));
    }
    if (stream.bad())
        throw Error("cannot read " + name);
    check_message_size(data.size(), name);
    return data;
}

// The named temporary output files in progress, which a handler of SIGINT, SIGTERM and SIGHUP
// removes before the process ends. The handler may only make async-signal-safe calls, so the
// paths sit in fixed slots guarded by lock-free atomics instead of a container and a mutex.
enum PendingState : int {
    pending_free,     // no path
    pending_writing,  // the owner is copying a path in
    pending_ready,    // a path the handler removes
    pending_removing, // taken by the handler, and never reused, because the process ends
};

struct PendingOutput {
    std::atomic<int> state{pending_free};
    char path[PATH_MAX];
};

static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs lock-free atomics");

constexpr size_t pending_output_slots = 64;
PendingOutput pending_outputs[pending_output_slots];

constexpr int removal_signals[] = {SIGINT, SIGTERM, SIGHUP};

// Set by the signal handler before it scans the slots. A worker thread that records a file
// after the scan finds it set and removes the file itself.
std::atomic<bool> removal_started{false};

// The terminal settings that EchoOff changed, for the handler to put back.
termios saved_terminal{};
std::atomic<int> echo_off_fd{-1};

// Restores the terminal, removes every pending output, then ends the process by the same
// signal, so that its exit status stays 128 + signal_number. SA_RESETHAND has restored the
// default action, and the raised signal is delivered once the handler returns.
void remove_pending_outputs(int signal_number) {
    if (int fd = echo_off_fd.load(); fd >= 0)
        tcsetattr(fd, TCSANOW, &saved_terminal);
    removal_started.store(true);
    for (PendingOutput &slot : pending_outputs) {
        int expected = pending_ready;
        if (slot.state.compare_exchange_strong(expected, pending_removing))
            unlink(slot.path);
    }
    raise(signal_number);
}

// Installs the handler for each removal signal whose action is still the default. An ignored
// signal, as under nohup, or another handler stays as it is.
void install_removal_handlers() {
    struct sigaction action {};
    action.sa_handler = remove_pending_outputs;
    action.sa_flags = SA_RESETHAND;
    sigemptyset(&action.sa_mask);
    for (int number : removal_signals)
        sigaddset(&action.sa_mask, number);

    for (int number : removal_signals) {
        struct sigaction current {};
        if (sigaction(number, nullptr, &current) != 0)
            continue;
        if ((current.sa_flags & SA_SIGINFO) == 0 && current.sa_handler == SIG_DFL)
            sigaction(number, &action, nullptr);
    }
}

void install_removal_handlers_once() {
    static std::once_flag handlers_installed;
    std::call_once(handlers_installed, install_removal_handlers);
}

// Records the temporary file path for removal on a signal. Returns its slot, or -1 when the
// path is too long or all slots are taken.
// NOTE: an interrupt leaves behind a file without a slot, or one whose signal came between
// its creation and the end of this call, as a SIGKILL leaves any temporary file.
int register_pending_output(const char *path) {
    install_removal_handlers_once();

    size_t length = std::strlen(path);
    if (length >= PATH_MAX)
        return -1;
    for (size_t i = 0; i < pending_output_slots; ++i) {
        int expected = pending_free;
        if (!pending_outputs[i].state.compare_exchange_strong(expected, pending_writing))
            continue;
        std::memcpy(pending_outputs[i].path, path, length + 1);
        pending_outputs[i].state.store(pending_ready);

        // The handler may have scanned this slot before it was ready.
        if (removal_started.load())
            unlink(path);
        return static_cast<int>(i);
    }
    return -1;
}

// Frees the slot once its file is renamed or removed. A slot that a signal handler has
// taken stays taken, because the handler may still read its path.
void release_pending_output(int slot) {
    if (slot < 0)
        return;
    int expected = pending_ready;
    pending_outputs[slot].state.compare_exchange_strong(expected, pending_free);
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

// Writes a temporary file in the target's folder and renames it over the target, so a failure
// leaves no partial file and readers see either the old or the new content. Like openssl and
// gpg, it does not call fsync, because that cost more than the token's signature for a small
// message.
void write_atomically(const std::string &path, const std::string &data, mode_t mode) {
    std::string temporary = path + ".p11smime-XXXXXX";
    std::vector<char> name(temporary.begin(), temporary.end());
    name.push_back('\0');
    int fd = mkstemp(name.data());
    if (fd < 0)
        throw Error("cannot create a file next to '" + path + "': " + std::strerror(errno),
                    "check that the output folder exists and is writable");
    int slot = register_pending_output(name.data());
    try {
        write_all(fd, data, path);
        if (fchmod(fd, mode) != 0 || close(fd) != 0)
            throw Error("cannot write '" + path + "': " + std::strerror(errno));
        fd = -1;
        if (rename(name.data(), path.c_str()) != 0)
            throw Error("cannot rename the output into '" + path + "': " +
                        std::strerror(errno));
    } catch (...) {
        if (fd >= 0)
            close(fd);
        unlink(name.data());
        release_pending_output(slot);
        throw;
    }
    release_pending_output(slot);
}

// Opens an existing file that is not a regular file, such as a FIFO or a device, where a
// rename would replace the node instead of writing through it.
int open_special(const std::string &path) {
    int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        throw Error("cannot open '" + path + "' for writing: " + std::strerror(errno));
    return fd;
}

void write_special(const std::string &path, const std::string &data) {
    int fd = open_special(path);
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

// The file an output goes to, after a symbolic link is followed, and its current status.
struct OutputTarget {
    std::string path;
    bool exists = false;
    struct stat status {};
};

// Follows a symbolic link and rejects a directory. Throws Error naming the path.
OutputTarget resolve_output(const std::string &given) {
    OutputTarget target;
    target.path = given;
    target.exists = lstat(given.c_str(), &target.status) == 0;
    if (target.exists && S_ISLNK(target.status.st_mode)) {
        target.path = resolve_symlink(given);
        target.exists = stat(target.path.c_str(), &target.status) == 0;
    }
    if (target.exists && S_ISDIR(target.status.st_mode))
        throw Error("output '" + target.path + "' is a directory", "give --out a file name");
    return target;
}

// Reads fd to its end into memory, or into a new spool file once it grows past limit bytes.
void read_stream(int fd, const std::string &name, std::string &memory,
                 std::unique_ptr<TempFile> &spool, size_t limit) {
    std::vector<char> buffer(256 * 1024);
    uint64_t total = 0;
    for (;;) {
        ssize_t count = read(fd, buffer.data(), buffer.size());
        if (count < 0 && errno == EINTR)
            continue;
        if (count < 0)
            throw Error("cannot read " + name + ": " + std::strerror(errno));
        if (count == 0)
            break;
        total += static_cast<uint64_t>(count);
        check_message_size(total, name);
        if (!spool && memory.size() + static_cast<size_t>(count) > limit) {
            spool = std::make_unique<TempFile>(temporary_folder());
            write_all(spool->fd(), memory, "a temporary file");
            memory.clear();
            memory.shrink_to_fit();
        }
        if (spool)
            write_all(spool->fd(), buffer.data(), static_cast<size_t>(count), "a temporary file");
        else
            memory.append(buffer.data(), static_cast<size_t>(count));
    }
}

} // namespace

void write_output(const std::optional<std::string> &path, const std::string &data) {
    if (!path || *path == "-") {
        write_all(STDOUT_FILENO, data, "standard output");
        return;
    }

    OutputTarget target = resolve_output(*path);
    if (target.exists && !S_ISREG(target.status.st_mode)) {
        write_special(target.path, data);
        return;
    }
    write_atomically(target.path, data, output_mode(target.exists ? &target.status : nullptr));
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

InputMessage::InputMessage(const std::optional<std::string> &path) {
    if (!path || *path == "-") {
        read_stream(STDIN_FILENO, "standard input");
        return;
    }
    struct stat status {};
    if (stat(path->c_str(), &status) == 0 && S_ISDIR(status.st_mode))
        throw Error("input '" + *path + "' is a directory", "give --in a message file");
    if (stat(path->c_str(), &status) == 0 && !S_ISREG(status.st_mode)) {
        // A FIFO or device is read once, like standard input.
        int fd = open(path->c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            throw Error("cannot open input file '" + *path + "': " + std::strerror(errno));
        try {
            read_stream(fd, "input file '" + *path + "'");
        } catch (...) {
            close(fd);
            throw;
        }
        close(fd);
        return;
    }
    source_.emplace(MessageSource::open_file(*path));
    check_message_size(source_->size(), "input file '" + *path + "'");
    if (source_->size() > max_file_in_memory)
        return;
    // A small file is read once into memory, instead of once for every pass over it.
    memory_ = source_->read_range(0, static_cast<size_t>(source_->size()));
    source_.emplace(MessageSource::from_memory(memory_));
}

void InputMessage::read_stream(int fd, const std::string &name) {
    p11smime::cli::read_stream(fd, name, memory_, spool_, max_stdin_in_memory);
    if (spool_)
        source_.emplace(MessageSource::from_fd(spool_->fd(), name));
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

// Returns true for the errors of open(O_TMPFILE) that mean the file system or kernel cannot
// make unnamed files, so a named temporary file must do.
bool unnamed_files_unsupported(int error) {
    return error == EOPNOTSUPP || error == EISDIR || error == EINVAL;
}

// Returns twelve random hexadecimal digits for a temporary file name.
std::string random_suffix() {
    unsigned char bytes[6];
    if (RAND_bytes(bytes, sizeof bytes) != 1)
        throw OpensslError("cannot make a temporary file name");
    static const char digits[] = "0123456789abcdef";
    std::string suffix;
    for (unsigned char byte : bytes) {
        suffix += digits[byte >> 4];
        suffix += digits[byte & 0xf];
    }
    return suffix;
}

void copy_to(int fd, int target, const std::string &name) {
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
        write_all(target, buffer.data(), static_cast<size_t>(count), name);
    }
}

} // namespace

OutputFile::OutputFile(const std::optional<std::string> &path) {
    std::optional<OutputTarget> target;
    if (path && *path != "-")
        target = resolve_output(*path);
    if (!target || (target->exists && !S_ISREG(target->status.st_mode))) {
        // Standard output, a FIFO or a device gets the output only once it is complete.
        if (target)
            special_ = target->path;
        folder_ = temporary_folder();
        spool_ = std::make_unique<TempFile>(folder_);
        fd_ = spool_->fd();
        bio_ = buffered_fd_bio(fd_);
        return;
    }
    path_ = target->path;
    folder_ = folder_of(target->path);
    mode_ = output_mode(target->exists ? &target->status : nullptr);

    // An unnamed file cannot be left behind by any signal. It gets a name only at commit().
    fd_ = open(folder_.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd_ < 0 && !unnamed_files_unsupported(errno))
        throw Error("cannot create a file next to '" + *path + "': " + std::strerror(errno),
                    "check that the output folder exists and is writable");
    if (fd_ < 0)
        create_named_temporary();
    try {
        bio_ = buffered_fd_bio(fd_);
    } catch (...) {
        // The destructor does not run for a constructor that throws.
        discard();
        throw;
    }
}

void OutputFile::create_named_temporary() {
    std::vector<char> name(path_->begin(), path_->end());
    for (char c : std::string(".p11smime-XXXXXX"))
        name.push_back(c);
    name.push_back('\0');
    int fd = mkostemp(name.data(), O_CLOEXEC);
    if (fd < 0)
        throw Error("cannot create a file next to '" + *path_ + "': " + std::strerror(errno),
                    "check that the output folder exists and is writable");
    temporary_ = name.data();
    pending_slot_ = register_pending_output(temporary_.c_str());
    fd_ = fd;
}

// Gives the unnamed file a temporary name next to the output, through /proc/self/fd. Without
// /proc, the content is copied into a named temporary file instead.
void OutputFile::name_temporary() {
    std::string link = "/proc/self/fd/" + std::to_string(fd_);
    for (int attempt = 0; attempt < 16; ++attempt) {
        std::string name = *path_ + ".p11smime-" + random_suffix();
        if (linkat(AT_FDCWD, link.c_str(), AT_FDCWD, name.c_str(), AT_SYMLINK_FOLLOW) == 0) {
            temporary_ = name;
            pending_slot_ = register_pending_output(temporary_.c_str());
            return;
        }
        if (errno != EEXIST)
            break;
    }

    int unnamed = fd_;
    create_named_temporary();
    try {
        copy_to(unnamed, fd_, *path_);
    } catch (...) {
        close(unnamed);
        throw;
    }
    close(unnamed);
}

void OutputFile::discard() {
    if (fd_ >= 0)
        close(fd_);
    fd_ = -1;
    if (temporary_.empty())
        return;
    unlink(temporary_.c_str());
    release_pending_output(pending_slot_);
}

OutputFile::~OutputFile() {
    bio_.reset();
    if (!path_ || committed_)
        return;
    discard();
}

void OutputFile::commit() {
    std::string name = path_ ? *path_ : special_.value_or("standard output");
    if (BIO_flush(bio_.get()) != 1)
        throw Error("cannot write '" + name + "'", "check the free space of the output folder");
    if (special_) {
        int target = open_special(*special_);
        try {
            copy_to(fd_, target, name);
        } catch (...) {
            close(target);
            throw;
        }
        if (close(target) != 0)
            throw Error("cannot write '" + name + "': " + std::strerror(errno));
        committed_ = true;
        return;
    }
    if (!path_) {
        copy_to(fd_, STDOUT_FILENO, name);
        committed_ = true;
        return;
    }
    if (fchmod(fd_, mode_) != 0)
        throw Error("cannot write '" + name + "': " + std::strerror(errno));
    if (temporary_.empty())
        name_temporary();
    int fd = fd_;
    fd_ = -1;
    if (close(fd) != 0)
        throw Error("cannot write '" + name + "': " + std::strerror(errno));
    if (rename(temporary_.c_str(), path_->c_str()) != 0)
        throw Error("cannot rename the output into '" + name + "': " + std::strerror(errno));
    release_pending_output(pending_slot_);
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

        // A signal while echo is off must not leave the terminal silent.
        install_removal_handlers_once();
        saved_terminal = saved_;
        echo_off_fd.store(fd_);

        termios quiet = saved_;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        tcsetattr(fd_, TCSAFLUSH, &quiet);
    }
    ~EchoOff() {
        if (!active_)
            return;
        echo_off_fd.store(-1);
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
