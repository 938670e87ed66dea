// Unnamed temporary files for data too large to hold in memory.
#pragma once

#include <cstdint>
#include <string>

namespace p11smime {

// An unnamed temporary file in a folder, open for reading and writing, and gone when this
// object is destroyed. It is created with O_TMPFILE, or on file systems without it as a named
// file that is removed at once, so it never outlives the process.
class TempFile {
  public:
    // Creates the file in folder. Throws Error naming the folder when it cannot.
    explicit TempFile(const std::string &folder);
    ~TempFile();
    TempFile(const TempFile &) = delete;
    TempFile &operator=(const TempFile &) = delete;

    int fd() const { return fd_; }

    // Returns the current size of the file in bytes.
    uint64_t size() const;

  private:
    int fd_ = -1;
};

// Returns the folder for temporary files: $TMPDIR, or /tmp.
std::string temporary_folder();

// Returns the folder part of path ("." for a bare file name).
std::string folder_of(const std::string &path);

} // namespace p11smime
