// The input of a streaming operation: a message in a file or in memory.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace p11smime {

// Called with the bytes of a message processed so far and its size, from the pass that does
// the work (not from quick scans), so a caller can show progress.
using ProgressFunction = std::function<void(uint64_t done, uint64_t total)>;

// A message that streaming operations read in pieces, so that a file of any size costs
// bounded memory. Move-only; a file source owns its file descriptor.
class MessageSource {
  public:
    // Opens the file at path. Throws Error naming it when it cannot be opened or is not a
    // regular file.
    static MessageSource open_file(const std::string &path);

    // Reads the open file fd, which is duplicated; name is used in error messages.
    static MessageSource from_fd(int fd, const std::string &name);

    // Reads bytes that the caller keeps alive and unchanged while this source lives.
    static MessageSource from_memory(std::string_view bytes);

    MessageSource(MessageSource &&other) noexcept;
    MessageSource &operator=(MessageSource &&other) noexcept;
    MessageSource(const MessageSource &) = delete;
    MessageSource &operator=(const MessageSource &) = delete;
    ~MessageSource();

    uint64_t size() const { return size_; }
    const std::string &name() const { return name_; }
    bool in_memory() const { return fd_ < 0; }
    int fd() const { return fd_; } // -1 for a memory source
    std::string_view memory() const { return memory_; }

    // Reads up to size bytes at offset into buffer. Returns the number read, which is 0 only
    // at the end. Throws Error naming the source when the read fails.
    size_t read_at(uint64_t offset, char *buffer, size_t size) const;

    // Returns the bytes in [offset, offset + length), or fewer at the end of the source.
    std::string read_range(uint64_t offset, size_t length) const;

    // Installs the progress function that the main pass of an operation calls.
    void set_progress(ProgressFunction progress) { progress_ = std::move(progress); }
    void report_progress(uint64_t done) const {
        if (progress_)
            progress_(done, size_);
    }

  private:
    MessageSource() = default;

    int fd_ = -1;
    std::string_view memory_;
    uint64_t size_ = 0;
    std::string name_;
    ProgressFunction progress_;
};

} // namespace p11smime
