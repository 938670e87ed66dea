#include "cms/source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace p11smime {
namespace {

uint64_t regular_file_size(int fd, const std::string &name) {
    struct stat status {};
    if (fstat(fd, &status) != 0)
        throw Error("cannot read '" + name + "': " + std::strerror(errno));
    if (!S_ISREG(status.st_mode))
        throw Error("'" + name + "' is not a regular file",
                    "give a file; standard input is copied to a temporary file first");
    return static_cast<uint64_t>(status.st_size);
}

} // namespace

MessageSource MessageSource::open_file(const std::string &path) {
    MessageSource source;
    source.name_ = path;
    source.fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (source.fd_ < 0)
        throw Error("cannot open input file '" + path + "': " + std::strerror(errno));
    source.size_ = regular_file_size(source.fd_, path);
    posix_fadvise(source.fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
    return source;
}

MessageSource MessageSource::from_fd(int fd, const std::string &name) {
    MessageSource source;
    source.name_ = name;
    source.fd_ = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (source.fd_ < 0)
        throw Error("cannot read '" + name + "': " + std::strerror(errno));
    source.size_ = regular_file_size(source.fd_, name);
    return source;
}

MessageSource MessageSource::from_memory(std::string_view bytes) {
    MessageSource source;
    source.name_ = "the message";
    source.memory_ = bytes;
    source.size_ = bytes.size();
    return source;
}

MessageSource::MessageSource(MessageSource &&other) noexcept
    : fd_(other.fd_), memory_(other.memory_), size_(other.size_), name_(std::move(other.name_)),
      progress_(std::move(other.progress_)) {
    other.fd_ = -1;
}

MessageSource &MessageSource::operator=(MessageSource &&other) noexcept {
    if (this != &other) {
        if (fd_ >= 0)
            close(fd_);
        fd_ = other.fd_;
        memory_ = other.memory_;
        size_ = other.size_;
        name_ = std::move(other.name_);
        progress_ = std::move(other.progress_);
        other.fd_ = -1;
    }
    return *this;
}

MessageSource::~MessageSource() {
    if (fd_ >= 0)
        close(fd_);
}

size_t MessageSource::read_at(uint64_t offset, char *buffer, size_t size) const {
    if (offset >= size_)
        return 0;
    size = static_cast<size_t>(std::min<uint64_t>(size, size_ - offset));
    if (in_memory()) {
        std::memcpy(buffer, memory_.data() + offset, size);
        return size;
    }
    for (;;) {
        ssize_t count = pread(fd_, buffer, size, static_cast<off_t>(offset));
        if (count >= 0)
            return static_cast<size_t>(count);
        if (errno != EINTR)
            throw Error("cannot read '" + name_ + "': " + std::strerror(errno));
    }
}

std::string MessageSource::read_range(uint64_t offset, size_t length) const {
    std::string bytes(length, '\0');
    size_t filled = 0;
    while (filled < length) {
        size_t count = read_at(offset + filled, &bytes[filled], length - filled);
        if (count == 0)
            break;
        filled += count;
    }
    bytes.resize(filled);
    return bytes;
}

} // namespace p11smime
