#include "cli/process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"

extern char **environ;

namespace p11smime::cli {
namespace {

// A file descriptor closed when it goes out of scope.
class FileDescriptor {
  public:
    explicit FileDescriptor(int fd = -1) : fd_(fd) {}
    ~FileDescriptor() { reset(); }
    FileDescriptor(const FileDescriptor &) = delete;
    FileDescriptor &operator=(const FileDescriptor &) = delete;

    int get() const { return fd_; }
    void reset(int fd = -1) noexcept {
        if (fd_ >= 0)
            close(fd_);
        fd_ = fd;
    }

  private:
    int fd_;
};

// The two ends of a pipe, both close-on-exec so that a child keeps only the end it is given.
struct Pipe {
    Pipe() {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) != 0)
            throw Error(std::string("cannot create a pipe: ") + std::strerror(errno));
        read_end.reset(fds[0]);
        write_end.reset(fds[1]);
    }

    FileDescriptor read_end;
    FileDescriptor write_end;
};

// posix_spawn file actions, destroyed when they go out of scope.
class SpawnActions {
  public:
    SpawnActions() { posix_spawn_file_actions_init(&actions_); }
    ~SpawnActions() { posix_spawn_file_actions_destroy(&actions_); }
    SpawnActions(const SpawnActions &) = delete;
    SpawnActions &operator=(const SpawnActions &) = delete;

    void use_as(int fd, int target) { posix_spawn_file_actions_adddup2(&actions_, fd, target); }
    void use_null_as(int target) {
        posix_spawn_file_actions_addopen(&actions_, target, "/dev/null", O_RDWR, 0);
    }
    const posix_spawn_file_actions_t *get() const { return &actions_; }

  private:
    posix_spawn_file_actions_t actions_;
};

pid_t spawn(const std::vector<std::string> &argv, const SpawnActions &actions) {
    if (argv.empty() || argv[0].empty())
        throw Error("no program to run");
    std::vector<char *> arguments;
    for (const auto &argument : argv)
        arguments.push_back(const_cast<char *>(argument.c_str()));
    arguments.push_back(nullptr);

    pid_t pid = 0;
    int error = posix_spawnp(&pid, arguments[0], actions.get(), nullptr, arguments.data(),
                             environ);
    if (error != 0)
        throw Error("cannot run '" + argv[0] + "': " + std::strerror(error),
                    "check that the program exists and is executable");
    return pid;
}

int wait_for(pid_t pid, const std::string &program) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            throw Error("cannot wait for '" + program + "': " + std::strerror(errno));
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 1;
}

// Ignores SIGPIPE while it lives, so that a child that stops reading makes write() fail with
// EPIPE instead of ending this process.
class IgnoreSigpipe {
  public:
    IgnoreSigpipe() {
        struct sigaction ignore {};
        ignore.sa_handler = SIG_IGN;
        sigemptyset(&ignore.sa_mask);
        sigaction(SIGPIPE, &ignore, &saved_);
    }
    ~IgnoreSigpipe() { sigaction(SIGPIPE, &saved_, nullptr); }
    IgnoreSigpipe(const IgnoreSigpipe &) = delete;
    IgnoreSigpipe &operator=(const IgnoreSigpipe &) = delete;

  private:
    struct sigaction saved_ {};
};

// Writes data to fd; returns false when the reader closed the pipe before taking all of it.
bool write_all(int fd, const std::string &data) {
    size_t written = 0;
    while (written < data.size()) {
        ssize_t count = write(fd, data.data() + written, data.size() - written);
        if (count < 0 && errno == EINTR)
            continue;
        if (count < 0)
            return false;
        written += static_cast<size_t>(count);
    }
    return true;
}

} // namespace

int run_with_input(const std::vector<std::string> &argv, const std::string &input) {
    Pipe pipe;
    SpawnActions actions;
    actions.use_as(pipe.read_end.get(), STDIN_FILENO);
    pid_t pid = spawn(argv, actions);
    pipe.read_end.reset();

    bool complete = false;
    {
        IgnoreSigpipe ignore;
        complete = write_all(pipe.write_end.get(), input);
        pipe.write_end.reset();
    }
    int status = wait_for(pid, argv[0]);
    if (status == 0 && !complete)
        throw Error("'" + argv[0] + "' exited without reading the whole message",
                    "check the program's log; the message may not have been sent in full");
    return status;
}

std::optional<std::string> command_output(const std::vector<std::string> &argv) {
    Pipe pipe;
    SpawnActions actions;
    actions.use_null_as(STDIN_FILENO);
    actions.use_as(pipe.write_end.get(), STDOUT_FILENO);
    actions.use_null_as(STDERR_FILENO);
    pid_t pid = 0;
    try {
        pid = spawn(argv, actions);
    } catch (const Error &) {
        return std::nullopt;
    }
    pipe.write_end.reset();

    std::string output;
    char buffer[4096];
    ssize_t count = 0;
    while ((count = read(pipe.read_end.get(), buffer, sizeof buffer)) != 0) {
        if (count < 0 && errno == EINTR)
            continue;
        if (count < 0)
            break;
        output.append(buffer, static_cast<size_t>(count));
    }
    if (wait_for(pid, argv[0]) != 0)
        return std::nullopt;
    return output;
}

} // namespace p11smime::cli
