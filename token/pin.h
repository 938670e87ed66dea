// PINs held in memory that is wiped when released, and the sources a PIN can come from.
#pragma once

#include <string>
#include <vector>

namespace p11smime {

// A PIN in a buffer that is overwritten with zeros (OPENSSL_cleanse) when destroyed or moved
// from. It is never copied, so no stray copy outlives it.
class SecurePin {
  public:
    SecurePin() = default;
    explicit SecurePin(std::vector<char> &&characters);
    SecurePin(SecurePin &&other) noexcept;
    SecurePin &operator=(SecurePin &&other) noexcept;
    SecurePin(const SecurePin &) = delete;
    SecurePin &operator=(const SecurePin &) = delete;
    ~SecurePin();

    // Returns the PIN as a NUL-terminated string, valid while this object lives.
    const char *c_str() const { return buffer_.empty() ? "" : buffer_.data(); }
    size_t size() const { return buffer_.empty() ? 0 : buffer_.size() - 1; }
    bool empty() const { return size() == 0; }

    // Overwrites the PIN with zeros and empties it. The buffer keeps its storage.
    void clear() noexcept { wipe(); }

  private:
    void wipe() noexcept;

    std::vector<char> buffer_; // characters followed by a NUL, or empty
};

// Reads a PIN from the first line of a file; the line ending is not part of the PIN. Throws
// Error naming the file when it cannot be read or is empty. Sets group_or_other_readable when
// the file's mode lets users other than its owner read it.
SecurePin read_pin_file(const std::string &path, bool &group_or_other_readable);

// Resolves an RFC 7512 pin-source value: "file:PATH" or a bare path. Throws Error for any
// other scheme.
std::string pin_source_path(const std::string &pin_source);

} // namespace p11smime
